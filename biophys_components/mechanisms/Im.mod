TITLE Im: muscarinic (M-type) K+ current

COMMENT
l5assets implementation of the M current of the Hay et al. (2011) layer 5b pyramidal cell,
after Adams et al. (1982). Written from the published equations (BluePyOpt NeuroML2 file
Im.channel.nml is the data source and the test oracle).

  ik = gImbar * m * (v - ek)
  m: alpha = 0.0033 exp((v+35)/10),  beta = 0.0033 exp(-(v+35)/10)
     inf = alpha / (alpha + beta), tau = 1 / ((alpha + beta) * qt)

qt = 2.3^((34-21)/10) is a fixed factor (model defined at 34 degC; NeuroML q10Fixed).
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX Im
    USEION k READ ek WRITE ik
    RANGE gImbar, gIm
    RANGE mInf, mTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gImbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    gIm (S/cm2)
    mInf
    mTau (ms)
}

STATE {
    m
}

BREAKPOINT {
    SOLVE states METHOD cnexp
    gIm = gImbar * m
    ik = gIm * (v - ek)
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
    LOCAL qt, a, b
    : off unless the param set asks for it (usetable_Im = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)
    a = 0.0033 * exp((v + 35) / 10)
    b = 0.0033 * exp(-(v + 35) / 10)
    mInf = a / (a + b)
    mTau = 1 / ((a + b) * qt)
}
UNITSON
