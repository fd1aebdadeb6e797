TITLE L5ExcSyn: AMPA + NMDA synapse with two-pool depression and a release draw

COMMENT
Excitatory synapse of the l5assets pipeline (SPEC section 7), written for this project.

Conductances: AMPA and NMDA dual exponentials (rise tau_r, decay tau_d), each normalised so a
single event of amplitude 1 peaks at exactly 1. A connection's event adds
    amp = weight * W * fac * 1e-3 (uS)        (W in nS, weight = NetCon syn_weight, usually 1)
to both AMPA and NMDA. NMDA is multiplied by the Mg block 1 / (1 + exp(-0.08 v) * mg / 3.57).
Both currents reverse at e.

Short-term plasticity (Varela et al. 1997), per connection: at each event the pools recover
to 1 since the connection's previous event, D = 1 - (1 - D) exp(-dt/tauD) (F likewise to 1);
the event uses fac = max(F * D1 * D2, fac_min); then, only if the release draw succeeds
(uniform < P), D1 *= d1, D2 *= d2, F *= f.

Transmission: release_gates = 0 (reference behaviour): every presynaptic spike adds
conductance and the draw only gates the plasticity update. release_gates = 1: only released
spikes add conductance.

Difference from the reference model: the reference multiplies the synapse's whole running
conductance by the current fac (earlier events' tails are rescaled when fac changes). Here
each event's increment is scaled by its own fac at event time and never rescaled later. This
makes every connection independent, so many connections can share one point process with
results identical to one point process per connection.

Per-connection state lives in the NetCon weight vector (layout, fixed):
  0 weight  NetCon weight, multiplies the event (BMTK syn_weight)
  1 W       peak conductance of one event at fac 1 (nS)
  2 sid     stable connection index (0, 1, 2, ... within its stream class)
  3 nev     events received (also the stream position of the next draw)      [state]
  4 nrel    successful release draws                                         [state]
  5 D1      fast depression pool                                             [state]
  6 D2      slow depression pool                                             [state]
  7 F       facilitation                                                     [state]
  8 tlast   time of the previous event (ms)                                  [state]
  9 fac     fac used by the last event                                       [state]
State entries are reset by the NET_RECEIVE INITIAL block.

Release randomness: the point process's Random123 stream has ids (seed, class, 0), set from
Python and the same for every point process of a class; connection sid owns positions
[sid * stride, (sid + 1) * stride) of it and its k-th event draws at sid * stride + k. So each
connection's draws depend only on (seed, class, sid, k): not on creation order, on which point
process it targets, or on NEURON vs CoreNEURON. (CoreNEURON cannot re-key a stream inside
NET_RECEIVE, hence positions rather than ids.) A connection must receive < stride events.
ENDCOMMENT

NEURON {
    THREADSAFE
    POINT_PROCESS L5ExcSyn
    RANGE tau_r_AMPA, tau_d_AMPA, tau_r_NMDA, tau_d_NMDA, e, mg
    RANGE P, d1, tauD1, d2, tauD2, f, tauF, fac_min, release_gates, stride
    RANGE g_AMPA, g_NMDA, i_AMPA, i_NMDA, mggate, factor_AMPA, factor_NMDA
    NONSPECIFIC_CURRENT i_AMPA, i_NMDA
    RANDOM rng
}

UNITS {
    (nA) = (nanoamp)
    (mV) = (millivolt)
    (uS) = (microsiemens)
    (mM) = (milli/liter)
}

PARAMETER {
    tau_r_AMPA = 0.2 (ms)
    tau_d_AMPA = 1.7 (ms)
    tau_r_NMDA = 0.29 (ms)
    tau_d_NMDA = 43 (ms)
    e = 0 (mV)
    mg = 1 (mM)
    P = 0.6 (1)
    d1 = 0.95 (1)
    tauD1 = 35 (ms)
    d2 = 0.8 (1)
    tauD2 = 250 (ms)
    f = 1 (1)
    tauF = 1 (ms)
    fac_min = 0.2 (1)
    release_gates = 0 (1)
    stride = 65536 (1)
}

ASSIGNED {
    v (mV)
    i_AMPA (nA)
    i_NMDA (nA)
    g_AMPA (uS)
    g_NMDA (uS)
    mggate (1)
    factor_AMPA (1)
    factor_NMDA (1)
}

STATE {
    A_AMPA (uS)
    B_AMPA (uS)
    A_NMDA (uS)
    B_NMDA (uS)
}

INITIAL {
    A_AMPA = 0
    B_AMPA = 0
    A_NMDA = 0
    B_NMDA = 0
    factor_AMPA = peak_factor(tau_r_AMPA, tau_d_AMPA)
    factor_NMDA = peak_factor(tau_r_NMDA, tau_d_NMDA)
}

BREAKPOINT {
    SOLVE state METHOD cnexp
    mggate = 1 / (1 + exp(-0.08 (/mV) * v) * (mg / 3.57 (mM)))
    g_AMPA = B_AMPA - A_AMPA
    g_NMDA = (B_NMDA - A_NMDA) * mggate
    i_AMPA = g_AMPA * (v - e)
    i_NMDA = g_NMDA * (v - e)
}

DERIVATIVE state {
    A_AMPA' = -A_AMPA / tau_r_AMPA
    B_AMPA' = -B_AMPA / tau_d_AMPA
    A_NMDA' = -A_NMDA / tau_r_NMDA
    B_NMDA' = -B_NMDA / tau_d_NMDA
}

FUNCTION peak_factor(tr (ms), td (ms)) (1) {
    : 1 / (exp(-tp/td) - exp(-tp/tr)) at the time of peak tp of exp(-t/td) - exp(-t/tr)
    LOCAL tp
    tp = (tr * td) / (td - tr) * log(td / tr)
    peak_factor = 1 / (exp(-tp / td) - exp(-tp / tr))
}

NET_RECEIVE (weight, W, sid, nev, nrel, D1, D2, F, tlast (ms), fac) {
    LOCAL u, amp
    INITIAL {
        nev = 0
        nrel = 0
        D1 = 1
        D2 = 1
        F = 1
        tlast = t
        fac = 1
    }
    D1 = 1 - (1 - D1) * exp(-(t - tlast) / tauD1)
    D2 = 1 - (1 - D2) * exp(-(t - tlast) / tauD2)
    F = 1 + (F - 1) * exp(-(t - tlast) / tauF)
    tlast = t
    fac = F * D1 * D2
    if (fac < fac_min) {
        fac = fac_min
    }
    random_setseq(rng, sid * stride + nev)
    u = random_uniform(rng)
    nev = nev + 1
    if (u < P) {
        nrel = nrel + 1
        D1 = D1 * d1
        D2 = D2 * d2
        F = F * f
    }
    if (u < P || release_gates == 0) {
        amp = weight * W * fac * (0.001 (uS))
        A_AMPA = A_AMPA + amp * factor_AMPA
        B_AMPA = B_AMPA + amp * factor_AMPA
        A_NMDA = A_NMDA + amp * factor_NMDA
        B_NMDA = B_NMDA + amp * factor_NMDA
    }
}
