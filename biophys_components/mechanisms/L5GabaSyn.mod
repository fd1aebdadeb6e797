TITLE L5GabaSyn: GABA_A synapse, transmitter-pulse kinetics, depression, probabilistic release

COMMENT
Inhibitory synapse of the l5assets pipeline (SPEC section 7), written for this project.

Kinetics (Destexhe, Mainen & Sejnowski 1994): a released spike turns the transmitter on for
Cdur; each connection's open fraction follows r' = Alpha * on * (1 - r) - Beta * r.
Conductance g = gbar * sum_k a_k r_k with a_k = weight_k * W_k * fac_k; i = g * (v - e).
gbar is in uS (the reference declares nS but its arithmetic acts in uS).

Exact aggregation (Destexhe's on/off scheme): the point process integrates only two sums,
Ron (connections in their pulse) and Roff (connections after it). Each connection keeps r0 and
t0 in its weight vector, so its r is known analytically at any event time: in the pulse
r = rinf + (r0 - rinf) exp(-(t - t0)/rtau), after it r = r0 exp(-Beta (t - t0)). At the onset of
a pulse its contribution moves from Roff to Ron, at the end back. Many connections can then
share one point process with results identical to one point process per connection. A spike
arriving during a pulse extends it by Cdur from that spike (as the reference does).

Release and depression (Varela et al. 1997), per connection: a spike releases when a uniform
draw is < P; only a released spike starts/extends the pulse and updates plasticity: the pools
recover to 1 since the previous release, fac = max(D1 * D2, fac_min), then D1 *= d1, D2 *= d2.
fac multiplies the connection's whole running r (as in the reference): when fac changes, the
connection's current contribution is rescaled.

Per-connection state lives in the NetCon weight vector (layout, fixed):
  0 weight  NetCon weight, multiplies the conductance (BMTK syn_weight)
  1 W       connection scale (0.06 soma, 0.1 dendrites in the reference)
  2 sid     stable connection index (0, 1, 2, ... within its stream class)
  3 nev     spikes received (also the stream position of the next draw)      [state]
  4 nrel    successful release draws                                         [state]
  5 D1      fast depression pool                                             [state]
  6 D2      slow depression pool                                             [state]
  7 tlast   time of the previous release (ms)                                [state]
  8 fac     current depression factor                                        [state]
  9 r0      r of this connection at time t0                                  [state]
 10 t0      time of the connection's last on/off switch (ms)                 [state]
 11 npend   pulse-end events pending (> 0 while the transmitter is on)       [state]
State entries are reset by the NET_RECEIVE INITIAL block.

Release randomness: as in L5ExcSyn, stream ids (seed, class, 0) set from Python, connection
sid draws its k-th number at position sid * stride + k. A connection must receive < stride
spikes.
ENDCOMMENT

NEURON {
    THREADSAFE
    POINT_PROCESS L5GabaSyn
    RANGE Cdur, Alpha, Beta, e, gbar, P, d1, tauD1, d2, tauD2, fac_min, stride
    RANGE g, rinf, rtau, synon
    NONSPECIFIC_CURRENT i
    RANDOM rng
}

UNITS {
    (nA) = (nanoamp)
    (mV) = (millivolt)
    (uS) = (microsiemens)
}

PARAMETER {
    Cdur = 0.7254 (ms)
    Alpha = 1.52 (/ms)
    Beta = 0.14 (/ms)
    e = -75 (mV)
    gbar = 1 (uS)
    P = 0.25 (1)
    d1 = 0.7 (1)
    tauD1 = 40 (ms)
    d2 = 0.7 (1)
    tauD2 = 500 (ms)
    fac_min = 0.15 (1)
    stride = 65536 (1)
}

ASSIGNED {
    v (mV)
    i (nA)
    g (uS)
    rinf (1)
    rtau (ms)
    synon (1)
}

STATE {
    Ron
    Roff
}

INITIAL {
    rinf = Alpha / (Alpha + Beta)
    rtau = 1 / (Alpha + Beta)
    synon = 0
    Ron = 0
    Roff = 0
}

BREAKPOINT {
    SOLVE release METHOD cnexp
    g = gbar * (Ron + Roff)
    i = g * (v - e)
}

DERIVATIVE release {
    Ron' = (synon * rinf - Ron) / rtau
    Roff' = -Beta * Roff
}

NET_RECEIVE (weight, W, sid, nev, nrel, D1, D2, tlast (ms), fac, r0, t0 (ms), npend) {
    LOCAL u, a_old, a_new, r
    INITIAL {
        nev = 0
        nrel = 0
        D1 = 1
        D2 = 1
        tlast = t
        fac = 1
        r0 = 0
        t0 = t
        npend = 0
    }
    if (flag == 0) {
        random_setseq(rng, sid * stride + nev)
        u = random_uniform(rng)
        nev = nev + 1
        if (u < P) {
            nrel = nrel + 1
            D1 = 1 - (1 - D1) * exp(-(t - tlast) / tauD1)
            D2 = 1 - (1 - D2) * exp(-(t - tlast) / tauD2)
            tlast = t
            a_old = weight * W * fac
            fac = D1 * D2
            if (fac < fac_min) {
                fac = fac_min
            }
            D1 = D1 * d1
            D2 = D2 * d2
            a_new = weight * W * fac
            if (npend > 0) {
                : already in its pulse: rescale for the new fac, restart the pulse clock
                r = rinf + (r0 - rinf) * exp(-(t - t0) / rtau)
                Ron = Ron + (a_new - a_old) * r
                synon = synon + a_new - a_old
            } else {
                : pulse onset: move the decaying contribution from Roff to Ron
                r = r0 * exp(-Beta * (t - t0))
                Roff = Roff - a_old * r
                Ron = Ron + a_new * r
                synon = synon + a_new
            }
            r0 = r
            t0 = t
            npend = npend + 1
            net_send(Cdur, 1)
        }
    } else {
        : end of a pulse; only the last pending one (latest onset) ends the transmitter phase
        npend = npend - 1
        if (npend == 0) {
            r = rinf + (r0 - rinf) * exp(-(t - t0) / rtau)
            a_old = weight * W * fac
            synon = synon - a_old
            Ron = Ron - a_old * r
            Roff = Roff + a_old * r
            r0 = r
            t0 = t
        }
    }
}
