TITLE NaTa_t: fast-inactivating (transient) Na+ current

COMMENT
l5assets implementation of the transient sodium current of the Hay et al. (2011) layer 5b
pyramidal cell (axon and, in the reference pipeline, soma and dendrites); kinetics after
Colbert & Pan (2002). Written from the published equations (BluePyOpt NeuroML2 file
NaTa_t.channel.nml is the data source and the test oracle).

  ina = gNaTa_tbar * m^3 * h * (v - ena)
  m: alpha = 0.182 * (v+38) / (1 - exp(-(v+38)/6)), beta = 0.124 * -(v+38) / (1 - exp((v+38)/6))
  h: alpha = 0.015 * -(v+66) / (1 - exp((v+66)/6)), beta = 0.015 * (v+66) / (1 - exp(-(v+66)/6))
  tau = 1 / ((alpha + beta) * qt), inf = alpha / (alpha + beta)

The published model is defined at 34 degC: qt = 2.3^((34-21)/10) is a fixed factor, independent
of celsius (NeuroML q10Fixed). The removable singularity at the half-point is evaluated exactly.
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX NaTa_t
    USEION na READ ena WRITE ina
    RANGE gNaTa_tbar, gNaTa_t
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNaTa_tbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNaTa_t (S/cm2)
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
    gNaTa_t = gNaTa_tbar * m * m * m * h
    ina = gNaTa_t * (v - ena)
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
    : off unless the param set asks for it (usetable_NaTa_t = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    a = 1.092 * xlin((v + 38) / 6)
    b = 0.744 * xlin(-(v + 38) / 6)
    mInf = a / (a + b)
    mTau = 1 / ((a + b) * qt)

    a = 0.09 * xlin(-(v + 66) / 6)
    b = 0.09 * xlin((v + 66) / 6)
    hInf = a / (a + b)
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
