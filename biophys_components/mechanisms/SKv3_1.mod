TITLE SKv3_1: fast non-inactivating Kv3.1 K+ current

COMMENT
l5assets implementation of the Kv3.1 (Shaw-related) potassium current of the Hay et al. (2011)
layer 5b pyramidal cell, after Rettig et al. (1992). Written from the published equations
(BluePyOpt NeuroML2 file SKv3_1.channel.nml is the data source and the test oracle).

  ik = gSKv3_1bar * m * (v - ek)
  m: inf = 1 / (1 + exp(-(v-18.7)/9.7)),  tau = 4 / (1 + exp(-(v+46.56)/44.14))
     (no temperature factor)
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX SKv3_1
    USEION k READ ek WRITE ik
    RANGE gSKv3_1bar, gSKv3_1
    RANGE mInf, mTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gSKv3_1bar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    gSKv3_1 (S/cm2)
    mInf
    mTau (ms)
}

STATE {
    m
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    gSKv3_1 = gSKv3_1bar * m
    ik = gSKv3_1 * (v - ek)
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
    : off unless the param set asks for it (usetable_SKv3_1 = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau FROM -100 TO 100 WITH 2000
    mInf = 1 / (1 + exp(-(v - 18.7) / 9.7))
    mTau = 4 / (1 + exp(-(v + 46.56) / 44.14))
}
UNITSON
