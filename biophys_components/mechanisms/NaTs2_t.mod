TITLE NaTs2_t: fast-inactivating Na+ current, somatic variant

COMMENT
l5assets implementation of the somatic transient sodium current of the Hay et al. (2011)
layer 5b pyramidal cell: the NaTa_t kinetics (Colbert & Pan 2002) with activation and
inactivation both shifted by +6 mV. Written from the published equations (BluePyOpt
NeuroML2 file NaTs2_t.channel.nml is the data source and the test oracle).

  ina = gNaTs2_tbar * m^3 * h * (v - ena)
  m: alpha = 0.182 * (v+32) / (1 - exp(-(v+32)/6)), beta = 0.124 * -(v+32) / (1 - exp((v+32)/6))
  h: alpha = 0.015 * -(v+60) / (1 - exp((v+60)/6)), beta = 0.015 * (v+60) / (1 - exp(-(v+60)/6))
  tau = 1 / ((alpha + beta) * qt), inf = alpha / (alpha + beta)

The published model is defined at 34 degC: qt = 2.3^((34-21)/10) is a fixed factor, independent
of celsius (NeuroML q10Fixed). The removable singularity at the half-point is evaluated exactly.
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX NaTs2_t
    USEION na READ ena WRITE ina
    RANGE gNaTs2_tbar, gNaTs2_t
    RANGE mInf, mTau, hInf, hTau
}

UNITS {
    (S) = (siemens)
    (mV) = (millivolt)
    (mA) = (milliamp)
}

PARAMETER {
    gNaTs2_tbar = 0.00001 (S/cm2)
}

ASSIGNED {
    v (mV)
    ena (mV)
    ina (mA/cm2)
    gNaTs2_t (S/cm2)
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
    gNaTs2_t = gNaTs2_tbar * m * m * m * h
    ina = gNaTs2_t * (v - ena)
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
    : off unless the param set asks for it (usetable_NaTs2_t = 1): see l5assets.cell.mechanisms
    TABLE mInf, mTau, hInf, hTau FROM -100 TO 100 WITH 2000
    qt = 2.3^((34 - 21) / 10)

    a = 1.092 * xlin((v + 32) / 6)
    b = 0.744 * xlin(-(v + 32) / 6)
    mInf = a / (a + b)
    mTau = 1 / ((a + b) * qt)

    a = 0.09 * xlin(-(v + 60) / 6)
    b = 0.09 * xlin((v + 60) / 6)
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
