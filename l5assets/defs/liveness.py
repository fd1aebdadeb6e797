"""Runs left STARTED by a process that no longer exists are marked failed.

`l5assets run` tags each of its Dagster runs with its pid, the pid's start time and the host
(`PID_TAG`, `PID_START_TAG`, `HOST_TAG`). A run killed outright (`kill -9`, power loss) stays
STARTED in the instance forever, and the stale-rerun schedules skip a partition with a run
"in progress". `fail_dead_runs` (called by `l5assets run` at start-up and by the schedules
before they plan) reports such runs as failed when their process is gone from this host.
Runs without these tags (launched by the webserver or daemon) are left to Dagster's own run
monitoring.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from l5assets.storage import process_alive, process_start_ticks

PID_TAG = "l5assets/pid"
PID_START_TAG = "l5assets/pid_start"
HOST_TAG = "l5assets/host"
_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def run_tags() -> dict[str, str]:
    """Tags of a run executed by this process (who to ask whether it still runs)."""
    start = process_start_ticks(os.getpid())
    return {
        PID_TAG: str(os.getpid()),
        PID_START_TAG: str(start if start is not None else ""),
        HOST_TAG: socket.gethostname(),
    }


def run_is_orphaned(run: dg.DagsterRun) -> bool:
    """An unfinished run of `l5assets run` on this host whose process is gone."""
    tags = run.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False
    start = tags.get(PID_START_TAG, "")
    return not process_alive(int(tags[PID_TAG]), int(start) if start.isdigit() else None)


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run whose `l5assets run` process is gone; their ids."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=_UNFINISHED)):
        if run_is_orphaned(run):
            instance.report_run_failed(
                run,
                f"the process that ran it (pid {run.tags[PID_TAG]} on {run.tags[HOST_TAG]}) "
                "is gone: killed before the run finished",
            )
            # its pool slots too: nothing else frees them once the process is gone
            if instance.event_log_storage.supports_global_concurrency_limits:
                instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            failed.append(run.run_id)
    return failed
