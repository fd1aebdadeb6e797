"""Lineage in the Dagster layer: the stale-partition schedule, the params-files sensor and the
`cell_model_files` observable source (staleness of the cell components)."""

import dagster as dg

from .schedule import plan_reruns, rerun_stale_partitions
from .sensor import params_files_sensor
from .staleness import cell_model_files, cell_model_version, manifest_metadata, step_started_at

defs = dg.Definitions(
    assets=[cell_model_files],
    schedules=[rerun_stale_partitions],
    sensors=[params_files_sensor],
)

__all__ = [
    "cell_model_files",
    "cell_model_version",
    "defs",
    "manifest_metadata",
    "params_files_sensor",
    "plan_reruns",
    "rerun_stale_partitions",
    "step_started_at",
]
