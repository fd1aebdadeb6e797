TITLE Ih: hyperpolarisation-activated cation (HCN) current

COMMENT
l5assets implementation of the non-specific cation current Ih of the Hay et al. (2011) layer 5b
pyramidal cell, after Kole, Hallermann & Stuart (2006). Written from the published equations
(BluePyOpt NeuroML2 file Ih.channel.nml is the data source and the test oracle).

  ihcn = gIhbar * m * (v - ehcn),  ehcn = -45 mV
  m: alpha = 0.00643 (v+154.9) / (exp((v+154.9)/11.9) - 1),  beta = 0.193 exp(v/33.1)
     inf = alpha / (alpha + beta), tau = 1 / (alpha + beta)   (no temperature factor)
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX Ih
    NONSPECIFIC_CURRENT ihcn
    RANGE gIhbar, gIh, ihcn
    RANGE mInf, mTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gIhbar = 0.00001 (S/cm2)
    ehcn = -45 (mV)  : reversal potential of the mixed Na+/K+ current (GLOBAL, never assigned)
}

ASSIGNED {
    v (mV)
    ihcn (mA/cm2)
    gIh (S/cm2)
    mInf
    mTau (ms)
}

STATE {
    m
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    gIh = gIhbar * m
    ihcn = gIh * (v - ehcn)
}

INITIAL {
    rates(v)
    m = mInf
}

DERIVATIVE states {
    rates(v)
    m' = (mInf - m) / mTau
}

UNITSOFF
PROCEDURE rates(v (mV)) {
    LOCAL a, b
    : off unless the param set asks for it (usetable_Ih = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau FROM -100 TO 100 WITH 2000
    a = 0.076517 * xlin(-(v + 154.9) / 11.9)
    b = 0.193 * exp(v / 33.1)
    mInf = a / (a + b)
    mTau = 1 / (a + b)
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
