TITLE SK_E2: small-conductance Ca2+-activated K+ current

COMMENT
l5assets implementation of the SK current of the Hay et al. (2011) layer 5b pyramidal cell,
after Kohler et al. (1996). Written from the published equations (BluePyOpt NeuroML2 file
SK_E2.channel.nml is the data source and the test oracle).

  ik = gSK_E2bar * z * (v - ek)
  z: inf = 1 / (1 + (0.00043 mM / cai)^4.8)   (Hill function, voltage independent)
     tau = zTau = 1 ms

zInf is evaluated as cai^4.8 / (cai^4.8 + 0.00043^4.8), the same function written so that it
is finite (0) at cai = 0.
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX SK_E2
    USEION k READ ek WRITE ik
    USEION ca READ cai
    RANGE gSK_E2bar, gSK_E2
    RANGE zInf, zTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
    (mM) = (milli/liter)
}

PARAMETER {
    gSK_E2bar = 0.000001 (S/cm2)
    zTau = 1 (ms)
}

ASSIGNED {
    v (mV)
    ek (mV)
    cai (mM)
    ik (mA/cm2)
    gSK_E2 (S/cm2)
    zInf
}

STATE {
    z
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    gSK_E2 = gSK_E2bar * z
    ik = gSK_E2 * (v - ek)
}

INITIAL {
    rates()
    z = zInf
}

DERIVATIVE states {
    rates()
    z' = (zInf - z) / zTau
}

UNITSOFF
PROCEDURE rates() {
    LOCAL c
    if (cai > 0) {
        c = cai^4.8
        zInf = c / (c + 0.00043^4.8)
    } else {
        zInf = 0
    }
}
UNITSON
