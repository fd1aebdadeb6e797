"""The `neuron` concurrency pool with the daemon (issue 11 item 4; issue 9's lab setting).

A backfill launched as the UI launches one (GraphQL `launchPartitionBackfill` with the seed
assets and its partitions) against `dagster dev` (webserver + daemon) on the project's
instance (QueuedRunCoordinator, op-granularity pools):
- `sqlite`: three seeds, the pool at one slot: the daemon runs the three seed runs at once, and
  their simulations one after another;
- `lab`: six seeds on a shared instance on PostgreSQL (a real server, `postgres_server`;
  `dagster dev` gets the credentials from the environment) with the simulations submitted to
  a real SLURM cluster (`slurm`, executor `slurm`) and the pool at two slots: never more than
  two simulations at once, each one a SLURM job recorded in its materialization.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster_server import Server, dagster_dev, prepared_instance
from postgres_server import postgres_server_fixture as postgres_server_fixture  # noqa: F401
from slurm_cluster import slurm  # noqa: F401 - the session fixture

from l5assets import graph as G
from l5assets.defs.instance import NEURON_POOL
from l5assets.defs.partitions import run_partition_key

PS = "T_pool"
SETTINGS = {  # backend -> (seeds, pool slots, simulations on SLURM)
    "sqlite": ((1, 2, 3), 1, False),
    "lab": ((1, 2, 3, 4, 5, 6), 2, True),
}
BACKFILL_TIMEOUT_S = 1200

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""


@pytest.fixture(scope="module", params=list(SETTINGS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, tuple]]:
    root = tmp_path_factory.mktemp(f"pool-{request.param}")
    seeds, slots, on_slurm = SETTINGS[request.param]
    pg_env = None
    if request.param == "lab":  # the servers start only for this variant
        pg_env = request.getfixturevalue("postgres_server").new_database("l5_pool")
    instance, env = prepared_instance(root, PS, seeds, slots=slots, postgres_env=pg_env, stop=0.1)
    if pg_env is not None:
        from dagster_postgres import PostgresEventLogStorage

        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    if on_slurm:
        env = {**env, **request.getfixturevalue("slurm").env}
        env["L5ASSETS_SIMULATION_EXECUTOR"] = "slurm"
    with dagster_dev(instance, env, root / "dagster-dev.log") as srv:
        yield srv, SETTINGS[request.param]


def _max_overlap(intervals: list[list[float]]) -> int:
    """The largest number of intervals in progress at one moment."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = peak = 0
    for _, d in edges:  # an end sorts before a start at the same time
        now += d
        peak = max(peak, now)
    return peak


def _step_intervals(instance: dg.DagsterInstance, run_id: str, step: str) -> list[float]:
    """[start, end] wall times of one step of a run, from its event log."""
    times = {
        kind: [e.timestamp for e in instance.all_logs(run_id, of_type=kind) if e.step_key == step]
        for kind in (dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS)
    }
    (start,), (end,) = times.values()  # exactly once each
    return [start, end]


def test_backfill_runs_seeds_at_once_and_simulations_within_the_pool(server) -> None:
    server, (seeds, slots, on_slurm) = server
    inst = server.instance
    partitions = [str(run_partition_key(PS, s)) for s in seeds]
    out = server.graphql(
        LAUNCH,
        {
            "params": {
                "assetSelection": [{"path": [k]} for k in G.SEED_ASSETS],
                "partitionNames": partitions,
                "fromFailure": False,
            }
        },
    )["launchPartitionBackfill"]
    assert out["__typename"] == "LaunchBackfillSuccess", out
    backfill = out["backfillId"]

    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    filters = dg.RunsFilter(tags={"dagster/backfill": backfill})
    while time.monotonic() < deadline:
        runs = inst.get_runs(filters)
        done = [r for r in runs if r.is_finished]
        if len(runs) >= len(seeds) and len(done) == len(runs):
            break
        time.sleep(3)
    else:
        raise TimeoutError(
            f"backfill {backfill} not done in {BACKFILL_TIMEOUT_S} s\n" + server.log_tail()
        )
    for run in runs:
        assert run.status == dg.DagsterRunStatus.SUCCESS, server.run_failure(run)
    # every seed asset of every partition is materialized
    for key in G.SEED_ASSETS:
        have = inst.get_materialized_partitions(dg.AssetKey(key))
        assert set(partitions) <= {str(p) for p in have}, key

    sims = sorted(
        _step_intervals(inst, r.run_id, G.SIMULATION_OUTPUTS)
        for r in runs
        if G.SIMULATION_OUTPUTS in _steps(inst, r.run_id)
    )
    assert len(sims) == len(seeds)
    # the pool's limit: never more simulations at once than its slots
    assert _max_overlap(sims) <= slots, f"more than {slots} simulations at once: {sims}"
    # ...while the runs themselves were in progress together (the queue let them launch)
    spans = [_run_span(inst, r.run_id) for r in runs]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1 :]), (
        f"no two runs were in progress together: {spans}"
    )
    # and a step did wait for the slot (Dagster's engine event)
    waited = [
        e.step_key
        for r in runs
        for e in inst.all_logs(r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if f"blocked by limit for pool {NEURON_POOL}" in (e.dagster_event.message or "")
    ]
    if slots == 1:  # three runs, one slot: some simulation must have waited
        assert G.SIMULATION_OUTPUTS in waited, "no simulation waited for a neuron pool slot"
    info = inst.event_log_storage.get_concurrency_info(NEURON_POOL)
    assert info.slot_count == slots and not info.claimed_slots  # all slots returned
    if on_slurm:  # each simulation was a SLURM job, recorded in its materialization
        jobs = set()
        for p in partitions:
            ev = inst.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=dg.AssetKey(G.SIMULATION_OUTPUTS), asset_partitions=[p]
                ),
                limit=1,
            ).records[0]
            meta = ev.asset_materialization.metadata
            assert meta["executor"].value == "slurm", p
            jobs.add(meta["slurm_job_id"].value)
        assert len(jobs) == len(partitions)


def _steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {
        e.step_key
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        if e.step_key
    }


def _run_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    rec = instance.get_run_record_by_id(run_id)
    assert rec is not None and rec.start_time and rec.end_time
    return rec.start_time, rec.end_time
