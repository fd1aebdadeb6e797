"""Lineage in the Dagster layer: the stale-partition schedules and their follow-up sensor, the
params-files sensor and the model-component observable sources (`mechanism_files`,
`cell_model_files`, `synaptic_model_files`)."""

import dagster as dg

from .schedule import (
    plan_reruns,
    rerun_seeds_after_param_set,
    rerun_stale_partitions,
    rerun_stale_seeds,
)
from .sensor import params_files_sensor
from .staleness import (
    SOURCES,
    cell_model_files,
    manifest_metadata,
    mechanism_files,
    step_started_at,
    synaptic_model_files,
)

defs = dg.Definitions(
    assets=list(SOURCES),
    schedules=[rerun_stale_partitions, rerun_stale_seeds],
    sensors=[params_files_sensor, rerun_seeds_after_param_set],
)

__all__ = [
    "SOURCES",
    "cell_model_files",
    "defs",
    "manifest_metadata",
    "mechanism_files",
    "params_files_sensor",
    "plan_reruns",
    "rerun_seeds_after_param_set",
    "rerun_stale_partitions",
    "rerun_stale_seeds",
    "step_started_at",
    "synaptic_model_files",
]
