TITLE K_Pst: slowly inactivating (persistent) K+ current

COMMENT
l5assets implementation of the persistent potassium current of the Hay et al. (2011) layer 5b
pyramidal cell, after Korngreen & Sakmann (2000), shifted -10 mV for the junction potential.
Written from the published equations (BluePyOpt NeuroML2 file K_Pst.channel.nml is the data
source and the test oracle).

  ik = gK_Pstbar * m^2 * h * (v - ek)
  m: inf = 1 / (1 + exp(-(v+11)/12))
     tau = (1.25 + 175.03 exp(0.026 (v+10))) / qt    for v < -60 mV
           (1.25 + 13 exp(-0.026 (v+10))) / qt       otherwise
  h: inf = 1 / (1 + exp((v+64)/11))
     tau = (360 + (1010 + 24 (v+65)) exp(-((v+85)/48)^2)) / qt

qt = 2.3^((34-21)/10) is a fixed factor (model defined at 34 degC; NeuroML q10Fixed).
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX K_Pst
    USEION k READ ek WRITE ik
    RANGE gK_Pstbar, gK_Pst
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gK_Pstbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ek (mV)
    ik (mA/cm2)
    gK_Pst (S/cm2)
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
    gK_Pst = gK_Pstbar * m * m * h
    ik = gK_Pst * (v - ek)
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
    : off unless the param set asks for it (usetable_K_Pst = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    mInf = 1 / (1 + exp(-(v + 11) / 12))
    if (v < -60) {
        mTau = (1.25 + 175.03 * exp(0.026 * (v + 10))) / qt
    } else {
        mTau = (1.25 + 13 * exp(-0.026 * (v + 10))) / qt
    }

    hInf = 1 / (1 + exp((v + 64) / 11))
    hTau = (360 + (1010 + 24 * (v + 65)) * exp(-((v + 85) / 48)^2)) / qt
}
UNITSON
