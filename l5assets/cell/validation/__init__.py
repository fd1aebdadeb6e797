"""Cell validation: the published L5b PC protocols, their features and pass/fail against targets.

Modules: `protocols` (protocol definitions, shared constants), `targets` (the published target
table), `traces` (ProtocolTraces), `features` (eFEL features, the Ca2+ spike criterion),
`report` (judge, evaluate, format_validation), `plots`, `runner` (NEURON subprocesses spread
over every core, validate_cell) and `worker` (the in-process NEURON run, trunk sites, the main
bifurcation, the train-pulse calibration; `python -m l5assets.cell.validation`).
"""

from l5assets.cell.validation.features import (
    CA_SPIKE_MIN_PEAK,
    CA_SPIKE_MIN_WIDTH,
    DEND_THRESHOLD,
    SOMA_THRESHOLD,
    ca_spike,
    ca_spike_events,
    spike_count,
)
from l5assets.cell.validation.plots import plot_protocol
from l5assets.cell.validation.protocols import (
    BAC_SITE_UM,
    CELSIUS,
    CODE_VERSION,
    CVODE_ATOL,
    DEFAULT_CELL,
    DT,
    E_FAR,
    FAMILIES,
    FAMILY_PROTOCOLS,
    FI_AMPS,
    FI_DURATION,
    FI_START,
    HAY_STEP_AMPS,
    PROTOCOL_NAMES,
    PROTOCOLS,
    STEP_AMPS,
    TRAIN_FREQS,
    TRAIN_PULSE,
    TRAIN_START,
    V_INIT,
    VALIDATION_DL,
    EpspCurrent,
    Protocol,
    Pulse,
    Sweep,
    ValidationError,
)
from l5assets.cell.validation.report import evaluate, format_validation, judge
from l5assets.cell.validation.runner import (
    plan_units,
    resolve_morphology,
    run_protocols,
    validate_cell,
)
from l5assets.cell.validation.targets import (
    GATING_TARGETS,
    N_SD,
    TARGETS,
    TARGETS_BY_FEATURE,
    Target,
    targets_for,
)
from l5assets.cell.validation.traces import ProtocolTraces
from l5assets.cell.validation.worker import (
    apical_trunk,
    calibrate_train_pulse,
    epsp_waveform,
    main_bifurcation,
    site_shift,
    trunk_point,
)

__all__ = [
    "CA_SPIKE_MIN_PEAK", "CA_SPIKE_MIN_WIDTH", "CELSIUS", "CODE_VERSION", "CVODE_ATOL",
    "DEFAULT_CELL", "DEND_THRESHOLD", "DT", "E_FAR", "EpspCurrent", "FAMILIES", "FAMILY_PROTOCOLS",
    "FI_AMPS", "FI_DURATION", "FI_START", "GATING_TARGETS", "HAY_STEP_AMPS", "N_SD", "PROTOCOLS",
    "PROTOCOL_NAMES", "Protocol", "ProtocolTraces", "Pulse", "SOMA_THRESHOLD", "STEP_AMPS",
    "Sweep", "TARGETS", "TARGETS_BY_FEATURE", "TRAIN_FREQS", "TRAIN_PULSE", "TRAIN_START",
    "Target", "V_INIT", "VALIDATION_DL", "ValidationError", "apical_trunk", "ca_spike",
    "epsp_waveform", "evaluate",
    "format_validation", "judge", "main_bifurcation", "plot_protocol", "resolve_morphology",
    "run_protocols", "site_shift", "spike_count", "targets_for", "BAC_SITE_UM", "trunk_point",
    "validate_cell", "ca_spike_events", "calibrate_train_pulse", "plan_units",
]
