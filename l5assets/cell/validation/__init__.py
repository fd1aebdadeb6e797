"""Cell validation: the published L5b PC protocols, their features and pass/fail against targets.

Modules: `protocols` (protocol definitions, shared constants), `targets` (the published target
table), `traces` (ProtocolTraces), `features` (eFEL features, the Ca2+ spike criterion),
`report` (judge, evaluate, format_validation), `plots`, `runner` (NEURON subprocesses,
validate_cell) and `worker` (the in-process NEURON run; `python -m l5assets.cell.validation`).
"""

from l5assets.cell.validation.features import (
    CA_SPIKE_MIN_PEAK,
    CA_SPIKE_MIN_WIDTH,
    DEND_THRESHOLD,
    SOMA_THRESHOLD,
    ca_spike,
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
    FI_AMPS,
    FI_DURATION,
    FI_START,
    PROTOCOL_NAMES,
    PROTOCOLS,
    STEP_AMPS,
    TRAIN_FREQS,
    TRAIN_PULSE,
    TRAIN_START,
    V_INIT,
    EpspCurrent,
    Protocol,
    Pulse,
    Sweep,
    ValidationError,
)
from l5assets.cell.validation.report import evaluate, format_validation, judge
from l5assets.cell.validation.runner import resolve_morphology, run_protocols, validate_cell
from l5assets.cell.validation.targets import (
    GATING_TARGETS,
    N_SD,
    TARGETS,
    TARGETS_BY_FEATURE,
    Target,
    targets_for,
)
from l5assets.cell.validation.traces import ProtocolTraces
from l5assets.cell.validation.worker import apical_trunk, epsp_waveform, trunk_point

__all__ = [
    "PROTOCOLS", "PROTOCOL_NAMES", "TARGETS", "GATING_TARGETS", "Target", "Protocol",
    "ProtocolTraces", "ValidationError", "evaluate", "format_validation", "judge",
    "plot_protocol", "run_protocols", "targets_for", "validate_cell",
    # also public in the single-module version (used by the CLI, the Dagster assets and tests)
    "BAC_SITE_UM", "CA_SPIKE_MIN_PEAK", "CA_SPIKE_MIN_WIDTH", "CELSIUS", "CODE_VERSION",
    "CVODE_ATOL", "DEFAULT_CELL", "DEND_THRESHOLD", "DT", "E_FAR", "FI_AMPS", "FI_DURATION",
    "FI_START", "N_SD", "SOMA_THRESHOLD", "STEP_AMPS", "TARGETS_BY_FEATURE", "TRAIN_FREQS",
    "TRAIN_PULSE", "TRAIN_START", "V_INIT", "EpspCurrent", "Pulse", "Sweep", "apical_trunk",
    "ca_spike", "epsp_waveform", "resolve_morphology", "spike_count", "trunk_point",
]
