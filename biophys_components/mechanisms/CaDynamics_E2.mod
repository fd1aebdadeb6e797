TITLE CaDynamics_E2: submembrane Ca2+ shell with first-order removal

COMMENT
l5assets implementation of the intracellular calcium dynamics of the Hay et al. (2011) layer 5b
pyramidal cell. Written from the published equation (BluePyOpt NeuroML2 file
baseCaDynamics_E2_NML2.nml, concentrationModelHayEtAl, is the data source and the test oracle):

  dcai/dt = -gamma * ica / (2 F depth) - (cai - minCai) / decay

gamma is the fraction of entering Ca2+ that stays free (unbuffered), depth the shell depth,
decay the removal time constant, minCai the resting floor. With ica in mA/cm2, depth in um and
cai in mM, 1e4 converts the influx term to mM/ms.

cai starts at the ca ion's initial value (NEURON's cai0_ca_ion) and relaxes to minCai with time
constant decay; the INITIAL block leaves it alone.
ENDCOMMENT

NEURON {
    THREADSAFE
    SUFFIX CaDynamics_E2
    USEION ca READ ica WRITE cai
    RANGE gamma, decay, depth, minCai
}

UNITS {
    (mV) = (millivolt)
    (mA) = (milliamp)
    (mM) = (milli/liter)
    (um) = (micron)
    FARADAY = (faraday) (coulomb)
}

PARAMETER {
    gamma = 0.05     : free (unbuffered) fraction of the Ca2+ influx
    decay = 80 (ms)  : removal time constant
    depth = 0.1 (um) : depth of the submembrane shell
    minCai = 1e-4 (mM)
}

ASSIGNED {
    ica (mA/cm2)
}

STATE {
    cai (mM)
}

BREAKPOINT {
    SOLVE states METHOD cnexp
}

DERIVATIVE states {
    cai' = -(10000) * gamma * ica / (2 * FARADAY * depth) - (cai - minCai) / decay
}
