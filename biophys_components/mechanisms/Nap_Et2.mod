TITLE Nap_Et2: persistent Na+ current

COMMENT
l5assets implementation of the persistent sodium current of the Hay et al. (2011) layer 5b
pyramidal cell, after Magistretti & Alonso (1999). Written from the published equations
(BluePyOpt NeuroML2 file Nap_Et2.channel.nml is the data source and the test oracle).

  ina = gNap_Et2bar * m^3 * h * (v - ena)
  m: inf = 1 / (1 + exp(-(v+52.6)/4.6))
     tau = 6 / ((alpha + beta) * qt), with the NaTa_t activation rates
     (alpha = 0.182 (v+38) / (1 - exp(-(v+38)/6)), beta = 0.124 -(v+38) / (1 - exp((v+38)/6)):
     six times slower than NaTa_t)
  h: inf = 1 / (1 + exp((v+48.8)/10))
     tau = 1 / ((alpha + beta) * qt),
     alpha = 2.88e-6 -(v+17) / (1 - exp((v+17)/4.63)),
     beta  = 6.94e-6 (v+64.4) / (1 - exp(-(v+64.4)/2.63))

qt = 2.3^((34-21)/10) is a fixed factor (model defined at 34 degC; NeuroML q10Fixed).
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX Nap_Et2
    USEION na READ ena WRITE ina
    RANGE gNap_Et2bar, gNap_Et2
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNap_Et2bar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNap_Et2 (S/cm2)
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
    gNap_Et2 = gNap_Et2bar * m * m * m * h
    ina = gNap_Et2 * (v - ena)
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
    LOCAL qt, a, b
    : off unless the param set asks for it (usetable_Nap_Et2 = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    mInf = 1 / (1 + exp(-(v + 52.6) / 4.6))
    a = 1.092 * xlin((v + 38) / 6)
    b = 0.744 * xlin(-(v + 38) / 6)
    mTau = 6 / ((a + b) * qt)

    hInf = 1 / (1 + exp((v + 48.8) / 10))
    a = 1.33344e-05 * xlin(-(v + 17) / 4.63)
    b = 1.82522e-05 * xlin((v + 64.4) / 2.63)
    hTau = 1 / ((a + b) * qt)
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
