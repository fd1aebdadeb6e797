TITLE K_Tst: fast-inactivating (transient) K+ current

COMMENT
l5assets implementation of the transient potassium current of the Hay et al. (2011) layer 5b
pyramidal cell, after Korngreen & Sakmann (2000), shifted -10 mV for the junction potential.
Written from the published equations (BluePyOpt NeuroML2 file K_Tst.channel.nml is the data
source and the test oracle).

  ik = gK_Tstbar * m^4 * h * (v - ek)
  m: inf = 1 / (1 + exp(-(v+10)/19)),  tau = (0.34 + 0.92 exp(-((v+81)/59)^2)) / qt
  h: inf = 1 / (1 + exp((v+76)/10)),   tau = (8 + 49 exp(-((v+83)/23)^2)) / qt

qt = 2.3^((34-21)/10) is a fixed factor (model defined at 34 degC; NeuroML q10Fixed).
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX K_Tst
    USEION k READ ek WRITE ik
    RANGE gK_Tstbar, gK_Tst
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gK_Tstbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    gK_Tst (S/cm2)
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
    gK_Tst = gK_Tstbar * m * m * m * m * h
    ik = gK_Tst * (v - ek)
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
    LOCAL qt
    : off unless the param set asks for it (usetable_K_Tst = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    mInf = 1 / (1 + exp(-(v + 10) / 19))
    mTau = (0.34 + 0.92 * exp(-((v + 81) / 59)^2)) / qt

    hInf = 1 / (1 + exp((v + 76) / 10))
    hTau = (8 + 49 * exp(-((v + 83) / 23)^2)) / qt
}
UNITSON
