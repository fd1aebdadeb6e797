TITLE Ca_HVA: high-voltage-activated Ca2+ current

COMMENT
l5assets implementation of the high-voltage-activated calcium current of the Hay et al. (2011)
layer 5b pyramidal cell, after Reuveni et al. (1993). Written from the published equations
(BluePyOpt NeuroML2 file Ca_HVA.channel.nml is the data source and the test oracle).

  ica = gCa_HVAbar * m^2 * h * (v - eca)
  m: alpha = 0.055 (v+27) / (1 - exp(-(v+27)/3.8)),  beta = 0.94 exp(-(v+75)/17)
  h: alpha = 0.000457 exp(-(v+13)/50),             beta = 0.0065 / (1 + exp(-(v+15)/28))
  inf = alpha / (alpha + beta), tau = 1 / (alpha + beta)   (no temperature factor)

eca is NEURON's: Nernst from cai/cao when a mechanism (CaDynamics_E2) writes cai.
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX Ca_HVA
    USEION ca READ eca WRITE ica
    RANGE gCa_HVAbar, gCa_HVA
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gCa_HVAbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    eca (mV)
    ica (mA/cm2)
    gCa_HVA (S/cm2)
    mInf
    mTau (ms)
    hInf
    hTau (ms)
}

STATE {
    m
    h
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    gCa_HVA = gCa_HVAbar * m * m * h
    ica = gCa_HVA * (v - eca)
}

INITIAL {
    rates(v)
    m = mInf
    h = hInf
}

DERIVATIVE states {
    rates(v)
    m' = (mInf - m) / mTau
    h' = (hInf - h) / hTau
}

UNITSOFF
PROCEDURE rates(v (mV)) {
    LOCAL a, b
    : off unless the param set asks for it (usetable_Ca_HVA = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    a = 0.209 * xlin((v + 27) / 3.8)
    b = 0.94 * exp(-(v + 75) / 17)
    mInf = a / (a + b)
    mTau = 1 / (a + b)

    a = 0.000457 * exp(-(v + 13) / 50)
    b = 0.0065 / (1 + exp(-(v + 15) / 28))
    hInf = a / (a + b)
    hTau = 1 / (a + b)
}

FUNCTION xlin(x) {
    : x / (1 - exp(-x)), continuous through x = 0 (series there)
    if (fabs(x) < 1e-6) {
        xlin = 1 + x / 2
    } else {
        xlin = x / (1 - exp(-x))
    }
}
UNITSON
