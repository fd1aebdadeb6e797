"""Lineage in the Dagster layer: the stale-partition schedules, their follow-up sensor and the
params-files sensor (the observable sources they report on live in `defs/params/`)."""

import dagster as dg

from .schedule import (
    plan_reruns,
    rerun_seeds_after_param_set,
    rerun_stale_partitions,
    rerun_stale_seeds,
)
from .sensor import params_files_sensor

defs = dg.Definitions(
    schedules=[rerun_stale_partitions, rerun_stale_seeds],
    sensors=[params_files_sensor, rerun_seeds_after_param_set],
)

__all__ = [
    "defs",
    "params_files_sensor",
    "plan_reruns",
    "rerun_seeds_after_param_set",
    "rerun_stale_partitions",
    "rerun_stale_seeds",
]
