"""Schedule: re-materialize the stale partitions (off by default, cron configurable).

Staleness comes from `l5assets.lineage.status` (manifests on disk vs the current params,
cell files and code versions). Param-set-level assets (compiled mechanisms, segments) are
re-run first; a param set's seed partitions are re-run at the next tick once those are fresh,
so a seed run never reads an outdated segments table. Partitions with a run in progress are
skipped. Runs target the implicit asset job, one run per partition, with only the stale
assets and their downstream assets selected.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from l5assets.lineage.status import asset_graph_of, status

from ..partitions import PARAM_SET_DIM, SEED_DIM
from ..resources import StorageResource

SCHEDULE_NAME = "rerun_stale_partitions"
CRON_ENV = "L5ASSETS_RERUN_CRON"
DEFAULT_CRON = "0 3 * * *"
# Dagster's implicit job over every asset: one schedule can then launch both the
# param-set-level runs and the param_set x seed runs (each run selects assets of one kind).
IMPLICIT_ASSET_JOB = "__ASSET_JOB"
_IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


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


def plan_reruns(
    rows: list[Mapping[str, Any]],
    graph: Any,
    *,
    registered_param_sets: set[str],
    registered_seeds: set[str],
    busy_partitions: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[dg.RunRequest], list[str]]:
    """Run requests for the stale rows of `status(...)`, plus notes on what was deferred."""
    from l5assets.lineage.status import _definitions_info

    shared, seeded, _ = _definitions_info(graph)
    requests: list[dg.RunRequest] = []
    notes: list[str] = []
    shared_stale: dict[str, set[str]] = {}
    for r in rows:
        if r["state"] != "stale":
            continue
        bad = {x["asset"] for x in r["reasons"] if x["asset"] in shared}
        bad |= {a for a in shared if r["assets"].get(a) == "missing"}
        if bad:
            shared_stale.setdefault(r["param_set"], set()).update(bad)

    def run_key(pk: str, reasons: Iterable[Mapping[str, Any]]) -> str:
        text = "\n".join(sorted(f"{x['asset']}:{x['detail']}" for x in reasons))
        return f"{pk}:{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    for ps, bad in sorted(shared_stale.items()):
        if ps not in registered_param_sets:
            notes.append(f"{ps}: not a registered param_set partition")
        elif ps in busy_partitions:
            notes.append(f"{ps}: a run is in progress")
        else:
            reasons = [x for r in rows if r["param_set"] == ps for x in r["reasons"]
                       if x["asset"] in shared]
            requests.append(dg.RunRequest(
                run_key=run_key(ps, reasons),
                partition_key=ps,
                asset_selection=[dg.AssetKey.from_user_string(a)
                                 for a in _with_downstream(graph, bad, set(shared))],
                tags={"l5assets/rerun": "stale"},
            ))
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
        requests.append(dg.RunRequest(
            run_key=run_key(pk, r["reasons"]),
            partition_key=dg.MultiPartitionKey({PARAM_SET_DIM: ps, SEED_DIM: seed}),
            asset_selection=[dg.AssetKey.from_user_string(a)
                             for a in _with_downstream(graph, stale, set(seeded))],
            tags={"l5assets/rerun": "stale"},
        ))
    return requests, notes


def _busy_partitions(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(dg.RunsFilter(statuses=list(_IN_PROGRESS)))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


@dg.schedule(
    name=SCHEDULE_NAME,
    cron_schedule=os.environ.get(CRON_ENV, DEFAULT_CRON),
    execution_timezone="UTC",
    job_name=IMPLICIT_ASSET_JOB,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Re-materializes the stale param_set x seed partitions (params, cell files or "
        f"code_version changed). Off by default; cron from ${CRON_ENV} (default "
        f"'{DEFAULT_CRON}', UTC)."
    ),
)
def rerun_stale_partitions(
    context: dg.ScheduleEvaluationContext, storage: StorageResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """RunRequests for the stale partitions (see module doc)."""
    if context.repository_def is None:
        return dg.SkipReason("no repository definition in the schedule context")
    graph = asset_graph_of(context.repository_def)
    instance = context.instance
    rows = status(instance, graph, root=storage.root_path(), params_dir=storage.params_path(),
                  with_dagster_status=False)
    requests, notes = plan_reruns(
        rows,
        graph,
        registered_param_sets=set(instance.get_dynamic_partitions(PARAM_SET_DIM)),
        registered_seeds=set(instance.get_dynamic_partitions(SEED_DIM)),
        busy_partitions=_busy_partitions(instance),
    )
    for note in notes:
        context.log.info(note)
    if not requests:
        return dg.SkipReason("no stale partitions" + (f" ({'; '.join(notes)})" if notes else ""))
    return requests
