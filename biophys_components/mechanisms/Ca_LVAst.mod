TITLE Ca_LVAst: low-voltage-activated (T-type) Ca2+ current

COMMENT
l5assets implementation of the low-voltage-activated calcium current of the Hay et al. (2011)
layer 5b pyramidal cell: steady states after Avery & Johnston (1996), time constants after
Randall (1997), shifted -10 mV for the junction potential. Written from the published equations
(BluePyOpt NeuroML2 file Ca_LVAst.channel.nml is the data source and the test oracle).

  ica = gCa_LVAstbar * m^2 * h * (v - eca)
  m: inf = 1 / (1 + exp(-(v+40)/6)),    tau = (5 + 20 / (1 + exp((v+35)/5))) / qt
  h: inf = 1 / (1 + exp((v+90)/6.4)),   tau = (20 + 50 / (1 + exp((v+50)/7))) / qt

qt = 2.3^((34-21)/10) is a fixed factor (model defined at 34 degC; NeuroML q10Fixed).
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX Ca_LVAst
    USEION ca READ eca WRITE ica
    RANGE gCa_LVAstbar, gCa_LVAst
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gCa_LVAstbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    eca (mV)
    ica (mA/cm2)
    gCa_LVAst (S/cm2)
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
    gCa_LVAst = gCa_LVAstbar * m * m * h
    ica = gCa_LVAst * (v - eca)
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
    : off unless the param set asks for it (usetable_Ca_LVAst = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    mInf = 1 / (1 + exp(-(v + 40) / 6))
    mTau = (5 + 20 / (1 + exp((v + 35) / 5))) / qt

    hInf = 1 / (1 + exp((v + 90) / 6.4))
    hTau = (20 + 50 / (1 + exp((v + 50) / 7))) / qt
}
UNITSON
