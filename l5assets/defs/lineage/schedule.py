"""Re-materialize the stale partitions: two schedules (off by default, one cron) and a
follow-up run-status sensor.

Staleness comes from `l5assets.lineage.status` (manifests on disk vs the current params,
model-component files and code versions). A run has one partitions definition, so the work
is split over the two public jobs:
  rerun_stale_partitions  (cell_job)  the param sets whose param-set-level assets (compiled
                                      mechanisms, segments table) are stale or missing;
  rerun_stale_seeds       (seed_job)  the stale seed partitions of the other param sets;
  rerun_seeds_after_param_set         (sensor, on by default; acts only on runs of the
                                      schedule) as soon as a cell_job run launched by
                                      `rerun_stale_partitions` succeeds, the stale seed
                                      partitions of that param set -- in the same cycle, not
                                      one cron period later. A seed run never reads an
                                      outdated segments table.
Turn both schedules on to re-run everything (their cron: $L5ASSETS_RERUN_CRON, default
'0 3 * * *' UTC; an invalid value falls back to the default with a warning). Partitions with
a run in progress are skipped. Each run selects only the stale assets and their downstream
assets.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from ..dagster_private import is_valid_cron
from ..jobs import cell_job, seed_job
from ..liveness import fail_dead_runs
from ..partitions import PARAM_SET_DIM, SEED_DIM
from ..resources import CellModelResource, StorageResource
from .status import asset_graph_of, definitions_info, status

SCHEDULE_NAME = "rerun_stale_partitions"
SEED_SCHEDULE_NAME = "rerun_stale_seeds"
FOLLOW_UP_SENSOR_NAME = "rerun_seeds_after_param_set"
CRON_ENV = "L5ASSETS_RERUN_CRON"
DEFAULT_CRON = "0 3 * * *"
RERUN_TAG = "l5assets/rerun"
_IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


def rerun_cron() -> str:
    """The schedules' cron: $L5ASSETS_RERUN_CRON if valid, else the default (with a warning:
    a typo must not break loading the code location)."""
    cron = os.environ.get(CRON_ENV, "").strip() or DEFAULT_CRON
    if not is_valid_cron(cron):
        warnings.warn(
            f"{CRON_ENV}={cron!r} is not a valid cron string; using '{DEFAULT_CRON}'", stacklevel=2
        )
        return DEFAULT_CRON
    return cron


def _with_downstream(graph: Any, names: Iterable[str], allowed: set[str]) -> list[str]:
    """The given assets plus everything downstream of them, restricted to `allowed`."""
    out: set[str] = set()
    todo = [dg.AssetKey.from_user_string(n) for n in names]
    while todo:
        key = todo.pop()
        name = key.to_user_string()
        if name in out or name not in allowed:
            continue
        out.add(name)
        todo.extend(graph.get(key).child_keys)
    return sorted(out)


def _run_key(pk: str, reasons: Iterable[Mapping[str, Any]]) -> str:
    text = "\n".join(sorted(f"{x['asset']}:{x['detail']}" for x in reasons))
    return f"{pk}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def plan_reruns(
    rows: list[Mapping[str, Any]],
    graph: Any,
    *,
    registered_param_sets: set[str],
    registered_seeds: set[str],
    busy_partitions: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[dg.RunRequest], list[dg.RunRequest], list[str]]:
    """(cell_job requests, seed_job requests, notes) for the stale rows of `status(...)`.

    Seed partitions of a param set whose param-set-level assets are stale are deferred (the
    follow-up sensor requests them once those runs succeed).
    """
    shared, seeded, _ = definitions_info(graph)
    shared_reqs: list[dg.RunRequest] = []
    seed_reqs: list[dg.RunRequest] = []
    notes: list[str] = []
    shared_stale: dict[str, set[str]] = {}
    for r in rows:
        if r["state"] != "stale":
            continue
        bad = {x["asset"] for x in r["reasons"] if x["asset"] in shared}
        bad |= {a for a in shared if r["assets"].get(a) == "missing"}
        if bad:
            shared_stale.setdefault(r["param_set"], set()).update(bad)

    for ps, bad in sorted(shared_stale.items()):
        if ps not in registered_param_sets:
            notes.append(f"{ps}: not a registered param_set partition")
        elif ps in busy_partitions:
            notes.append(f"{ps}: a run is in progress")
        else:
            reasons = [
                x
                for r in rows
                if r["param_set"] == ps
                for x in r["reasons"]
                if x["asset"] in shared
            ]
            shared_reqs.append(
                dg.RunRequest(
                    run_key=_run_key(ps, reasons),
                    partition_key=ps,
                    asset_selection=[
                        dg.AssetKey.from_user_string(a)
                        for a in _with_downstream(graph, bad, set(shared))
                    ],
                    tags={RERUN_TAG: "stale"},
                )
            )
    for r in rows:
        if r["state"] != "stale" or r["seed"] is None:
            continue
        ps, seed = r["param_set"], str(r["seed"])
        pk = f"{ps}|{seed}"
        if ps in shared_stale:
            notes.append(f"{pk}: deferred until the param-set-level assets are fresh")
            continue
        if ps not in registered_param_sets or seed not in registered_seeds:
            notes.append(f"{pk}: not a registered partition")
            continue
        if pk in busy_partitions:
            notes.append(f"{pk}: a run is in progress")
            continue
        stale = {x["asset"] for x in r["reasons"] if x["asset"] in seeded}
        stale |= {a for a in seeded if r["assets"].get(a) == "missing"}
        seed_reqs.append(
            dg.RunRequest(
                run_key=_run_key(pk, r["reasons"]),
                partition_key=dg.MultiPartitionKey({PARAM_SET_DIM: ps, SEED_DIM: seed}),
                asset_selection=[
                    dg.AssetKey.from_user_string(a)
                    for a in _with_downstream(graph, stale, set(seeded))
                ],
                tags={RERUN_TAG: "stale"},
            )
        )
    return shared_reqs, seed_reqs, notes


def _busy_partitions(instance: dg.DagsterInstance) -> set[str]:
    fail_dead_runs(instance)  # a run left STARTED by a killed `l5assets run` is not busy
    runs = instance.get_runs(dg.RunsFilter(statuses=list(_IN_PROGRESS)))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


def _plan(
    context: Any,
    repository_def: Any,
    storage: StorageResource,
    cell_model: CellModelResource,
    param_sets: Iterable[str] | None = None,
) -> tuple[list[dg.RunRequest], list[dg.RunRequest], list[str]]:
    graph = asset_graph_of(repository_def)
    instance = context.instance
    rows = status(
        instance,
        graph,
        root=storage.root_path(),
        params_dir=storage.params_path(),
        mod_dir=cell_model.mod_path(),
        param_sets=param_sets,
        with_dagster_status=False,
    )
    shared_reqs, seed_reqs, notes = plan_reruns(
        rows,
        graph,
        registered_param_sets=set(instance.get_dynamic_partitions(PARAM_SET_DIM)),
        registered_seeds=set(instance.get_dynamic_partitions(SEED_DIM)),
        busy_partitions=_busy_partitions(instance),
    )
    for note in notes:
        context.log.info(note)
    return shared_reqs, seed_reqs, notes


def _result(requests: list[dg.RunRequest], notes: list[str], what: str):
    if requests:
        return requests
    return dg.SkipReason(f"no stale {what}" + (f" ({'; '.join(notes)})" if notes else ""))


def _rerun_schedule(
    name: str, job: dg.UnresolvedAssetJobDefinition, seeds: bool, cron: str, description: str
) -> dg.ScheduleDefinition:
    """A schedule launching `job` for the stale partitions `plan_reruns` gives it (the
    param-set-level requests, or with `seeds` the seed requests)."""

    @dg.schedule(
        name=name,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"{description} Off by default; cron from ${CRON_ENV} (default "
        f"'{DEFAULT_CRON}', UTC).",
    )
    def _rerun(
        context: dg.ScheduleEvaluationContext,
        storage: StorageResource,
        cell_model: CellModelResource,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        if context.repository_def is None:
            return dg.SkipReason("no repository definition in the schedule context")
        shared_reqs, seed_reqs, notes = _plan(context, context.repository_def, storage, cell_model)
        if seeds:
            return _result(seed_reqs, notes, "seed partitions")
        return _result(shared_reqs, notes, "param-set-level partitions")

    return _rerun


def rerun_automation(
    cell_job: dg.UnresolvedAssetJobDefinition, seed_job: dg.UnresolvedAssetJobDefinition
) -> tuple[dg.ScheduleDefinition, dg.ScheduleDefinition, dg.SensorDefinition]:
    """The two schedules and the follow-up sensor, launching the given jobs (the project's
    `cell_job` / `seed_job`; tests pass jobs over a smaller graph)."""
    cron = rerun_cron()
    rerun_stale_partitions = _rerun_schedule(
        SCHEDULE_NAME,
        cell_job,
        False,
        cron,
        "Re-materializes the stale param-set-level partitions (compiled mechanisms, segments "
        "table); their stale seed partitions follow as soon as each run succeeds "
        f"({FOLLOW_UP_SENSOR_NAME}). Turn on together with {SEED_SCHEDULE_NAME}.",
    )
    rerun_stale_seeds = _rerun_schedule(
        SEED_SCHEDULE_NAME,
        seed_job,
        True,
        cron,
        "Re-materializes the stale param_set x seed partitions whose param-set-level assets "
        f"are fresh (the others follow {SCHEDULE_NAME}'s runs).",
    )

    @dg.run_status_sensor(
        name=FOLLOW_UP_SENSOR_NAME,
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[cell_job],
        request_job=seed_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"When a cell_job run launched by {SCHEDULE_NAME} succeeds, requests the stale "
            "seed partitions of its param set right away (seed_job)."
        ),
    )
    def rerun_seeds_after_param_set(
        context: dg.RunStatusSensorContext,
        storage: StorageResource,
        cell_model: CellModelResource,
    ) -> list[dg.RunRequest] | dg.SkipReason:
        """seed_job RunRequests for the param set whose param-set-level rerun succeeded."""
        run = context.dagster_run
        if run.tags.get(RERUN_TAG) != "stale" or "dagster/partition" not in run.tags:
            return dg.SkipReason(f"run {run.run_id[:8]} was not a stale rerun")
        if context.repository_def is None:
            return dg.SkipReason("no repository definition in the sensor context")
        param_set = run.tags["dagster/partition"]
        _, seed_reqs, notes = _plan(
            context, context.repository_def, storage, cell_model, param_sets=[param_set]
        )
        return _result(seed_reqs, notes, f"seed partitions of {param_set}")

    return rerun_stale_partitions, rerun_stale_seeds, rerun_seeds_after_param_set


rerun_stale_partitions, rerun_stale_seeds, rerun_seeds_after_param_set = rerun_automation(
    cell_job, seed_job
)
