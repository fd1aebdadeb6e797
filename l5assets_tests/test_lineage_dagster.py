"""Lineage in Dagster: the params sensor, the stale-partition schedule and the UI's staleness.

Uses the project's real partitions, `params_file` and model-component observable sources,
resources, sensor, schedules and follow-up sensor on a real (temporary) Dagster instance, with
two small real assets shaped like the project's (a param-set-level `segments_table` and a
param_set x seed `functional_groups`) that write files and manifests the way every project
asset does.
Param sets A and B use different biophysics files, so each edit must hit exactly one of them.
"""

import importlib
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pytest
from conftest import lineage_workspace

from l5assets import graph as G
from l5assets import storage
from l5assets.defs.common import manifest_metadata, step_started_at
from l5assets.defs.lineage.schedule import (
    FOLLOW_UP_SENSOR_NAME,
    SCHEDULE_NAME,
    SEED_SCHEDULE_NAME,
    rerun_automation,
)
from l5assets.defs.lineage.sensor import params_files_sensor
from l5assets.defs.lineage.status import status
from l5assets.defs.params import SOURCES, params_file
from l5assets.defs.partitions import (
    by_param_set,
    param_set_partitions,
    run_partition_key,
    run_partitions,
)
from l5assets.defs.resources import CellModelResource, StorageResource
from l5assets.lineage.manifest import write_manifest
from l5assets.params import load_param_set
from l5assets.rng import stage_rng

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def make_defs(resources: dict, segments_cv: str = "1", fg_cv: str = "1") -> dg.Definitions:
    """Two real assets in the project's layout, plus the lineage schedule and sensor."""

    @dg.asset(
        key="segments_table",
        partitions_def=param_set_partitions,
        code_version=segments_cv,
        deps=["params_file", "mechanism_files", "cell_model_files"],
    )
    def segments_table(
        context: dg.AssetExecutionContext, storage_res: StorageResource
    ) -> dg.MaterializeResult:
        name = context.partition_key
        params = storage_res.load_params(name)
        out = storage_res.partition_dir("segments_table", name)
        seg = out / "segments.npy"
        storage.atomic_write_bytes(seg, np.arange(0, 1000, params.dL).tobytes())
        write_manifest(
            out,
            asset="segments_table",
            params=params,
            seed=None,
            code_version=segments_cv,
            outputs=[seg],
            inputs={"params_file": storage_res.params_file(name)},
            extra={
                "run_id": context.run.run_id,
                "started_at": step_started_at(context),
                "build_seconds": 0.5,
                # as its deps: the .mod files (directly here) and the cell files
                "reads_components": ["mechanisms", "biophysics", "morphology"],
            },
        )
        return dg.MaterializeResult(data_version=dg.DataVersion(storage.file_sha256(seg)))

    @dg.asset(
        key="functional_groups",
        partitions_def=run_partitions,
        code_version=fg_cv,
        deps=[
            dg.AssetDep("params_file", partition_mapping=by_param_set),
            dg.AssetDep("segments_table", partition_mapping=by_param_set),
        ],
    )
    def functional_groups(
        context: dg.AssetExecutionContext, storage_res: StorageResource
    ) -> dg.MaterializeResult:
        keys = context.partition_key.keys_by_dimension
        name, seed = keys["param_set"], int(keys["seed"])
        params = storage_res.load_params(name)
        seg = storage_res.partition_dir("segments_table", name) / "segments.npy"
        out = storage_res.partition_dir("functional_groups", name, seed)
        groups = stage_rng(seed, "functional_groups").choice(np.frombuffer(seg.read_bytes()), 20)
        fg = out / "groups.npy"
        storage.atomic_write_bytes(fg, groups.tobytes())
        manifest = write_manifest(
            out,
            asset="functional_groups",
            params=params,
            seed=seed,
            code_version=fg_cv,
            outputs=[fg],
            inputs={"segments": seg},
            extra={"run_id": context.run.run_id},
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(storage.file_sha256(fg)),
            metadata=manifest_metadata(manifest),
        )

    cell_job = dg.define_asset_job("cell_job", selection=["segments_table"])
    seed_job = dg.define_asset_job("seed_job", selection=["functional_groups"])
    shared_sched, seed_sched, follow_up = rerun_automation(cell_job, seed_job)
    return dg.Definitions(
        assets=[params_file, *SOURCES, segments_table, functional_groups],
        jobs=[cell_job, seed_job],
        schedules=[shared_sched, seed_sched],
        sensors=[params_files_sensor, follow_up],
        resources=resources,
    )


def evaluate(env: SimpleNamespace, defs: dg.Definitions, name: str) -> list[dg.RunRequest]:
    """Evaluate one of the rerun schedules; its run requests (none if it skipped)."""
    repo = defs.get_repository_def()
    with dg.build_schedule_context(
        instance=env.instance, repository_def=repo, resources=env.resources
    ) as ctx:
        return list(repo.get_schedule_def(name).evaluate_tick(ctx).run_requests or [])


def launch(env: SimpleNamespace, defs: dg.Definitions, job: str, req: dg.RunRequest):
    """Execute a run request of a rerun schedule/sensor as the daemon would (its job, partition,
    asset selection and tags)."""
    res = defs.resolve_job_def(job).execute_in_process(
        instance=env.instance,
        partition_key=str(req.partition_key),
        asset_selection=req.asset_selection,
        tags=req.tags,
    )
    assert res.success
    return res


def follow_up(env: SimpleNamespace, defs: dg.Definitions, res) -> list[dg.RunRequest]:
    """Evaluate the follow-up sensor on a successful cell_job run."""
    repo = defs.get_repository_def()
    success = next(e for e in res.all_events if e.event_type_value == "PIPELINE_SUCCESS")
    # (a context manager: it enters the instance, which must be left before the test ends)
    with dg.build_run_status_sensor_context(
        sensor_name=FOLLOW_UP_SENSOR_NAME,
        dagster_event=success,
        dagster_instance=env.instance,
        dagster_run=res.dagster_run,
        repository_def=repo,
        resources=env.resources,
    ) as ctx:
        out = repo.get_sensor_def(FOLLOW_UP_SENSOR_NAME)(ctx)
    return list(out) if isinstance(out, list) else []


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    comp, pdir, root, _ = lineage_workspace(
        tmp_path,
        monkeypatch,
        cells={"L5PC_bbp": '{"v": 1}\n', "L5PC_reference": '{"v": 2}\n'},
        mods={"Ih": "NEURON { SUFFIX Ih }\n"},
        param_sets={"A": "L5PC_bbp", "B": "L5PC_reference"},
    )
    res_storage = StorageResource(root=str(root), params_dir=str(pdir))
    with dg.instance_for_test() as instance:
        yield SimpleNamespace(
            comp=comp,
            pdir=pdir,
            root=root,
            instance=instance,
            storage=res_storage,
            resources={
                "storage": res_storage,
                "storage_res": res_storage,
                "cell_model": CellModelResource(mod_dir=str(comp / "mechanisms")),
            },
        )


def tick(env: SimpleNamespace, cursor: str | None) -> dg.SensorResult:
    """Evaluate the sensor and apply its result as the sensor daemon would."""
    with dg.build_sensor_context(
        instance=env.instance, cursor=cursor, resources=env.resources
    ) as ctx:
        result = params_files_sensor(ctx)
    for event in result.asset_events:  # in the daemon's order: events, then partitions
        env.instance.report_runless_asset_event(event)
    for req in result.dynamic_partitions_requests:
        env.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def observed(result: dg.SensorResult) -> set[tuple[str, str]]:
    return {(e.asset_key.to_user_string(), e.partition) for e in result.asset_events}


def materialize(env: SimpleNamespace, defs: dg.Definitions, asset: str, key) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(
        instance=env.instance,
        partition_key=key,
        asset_selection=[dg.AssetKey(asset)],
        resources=env.resources,
    )
    assert res.success


def dagster_state(env: SimpleNamespace, defs: dg.Definitions) -> dict[tuple[str, str], str]:
    """Dagster's own stale status (what the UI shows), per (asset, partition key)."""
    rows = status(env.instance, defs, root=env.root, params_dir=env.pdir)
    out = {}
    for r in rows:
        for asset, st in (r.get("dagster") or {}).items():
            pk = r["param_set"] if asset == "segments_table" else f"{r['param_set']}|{r['seed']}"
            out[(asset, pk)] = st
    return out


def mine(env: SimpleNamespace, defs: dg.Definitions) -> dict[tuple[str, int], str]:
    """`l5assets status` states per (param_set, seed)."""
    return {
        (r["param_set"], r["seed"]): r["state"]
        for r in status(env.instance, defs, root=env.root, params_dir=env.pdir)
    }


def test_sensor_registers_new_params_files_and_reports_changes(env: SimpleNamespace) -> None:
    (env.pdir / "broken.json").write_text('{"cell": {}}')  # invalid: never registered
    (env.pdir / "not a key.json").write_text("{}")  # not a partition key: ignored
    (env.comp / "synaptic_models").mkdir()
    (env.comp / "synaptic_models" / "PN2PN.json").write_text('{"tau1": 1}\n')
    sources = ("params_file", "mechanism_files", "cell_model_files", "synaptic_model_files")
    first = tick(env, None)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["A", "B"]]
    # a new param set is observed in the same tick as it is registered
    assert observed(first) == {(a, p) for a in sources for p in ("A", "B")}
    assert sorted(env.instance.get_dynamic_partitions("param_set")) == ["A", "B"]
    assert tick(env, first.cursor).asset_events == []  # nothing changed

    (env.pdir / "C.json").write_text((env.pdir / "A.json").read_text())
    third = tick(env, first.cursor)
    assert [r.partition_keys for r in third.dynamic_partitions_requests] == [["C"]]
    assert observed(third) == {(a, "C") for a in sources}
    assert "C" in env.instance.get_dynamic_partitions("param_set")

    raw = json.loads((env.pdir / "A.json").read_text())
    raw["inh_shift"] = 3
    (env.pdir / "A.json").write_text(json.dumps(raw))
    fourth = tick(env, third.cursor)
    assert observed(fourth) == {("params_file", "A")}
    # a synaptic model edit is reported for every param set
    (env.comp / "synaptic_models" / "PN2PN.json").write_text('{"tau1": 2}\n')
    assert observed(tick(env, fourth.cursor)) == {
        ("synaptic_model_files", p) for p in ("A", "B", "C")
    }


def test_edits_make_exactly_the_affected_partitions_stale_and_schedule_reruns_them(
    env: SimpleNamespace,
) -> None:
    defs = make_defs(env.resources)
    cursor = tick(env, None).cursor
    cursor = tick(env, cursor).cursor  # first observations
    env.instance.add_dynamic_partitions("seed", ["1"])  # (several seeds: offline status tests)
    for name in ("A", "B"):
        materialize(env, defs, "segments_table", name)
        materialize(env, defs, "functional_groups", run_partition_key(name, 1))
    assert set(dagster_state(env, defs).values()) == {"fresh"}
    assert set(mine(env, defs).values()) == {"fresh"}

    assert evaluate(env, defs, SCHEDULE_NAME) == evaluate(env, defs, SEED_SCHEDULE_NAME) == []

    # edit A's params: A's partitions are stale in Dagster and in `status`; B's are not
    raw = json.loads((env.pdir / "A.json").read_text())
    raw["groups"]["cluster_radius"] = 12
    (env.pdir / "A.json").write_text(json.dumps(raw))
    cursor = tick(env, cursor).cursor
    ui = dagster_state(env, defs)
    assert ui[("segments_table", "A")] == "stale"
    assert ui[("functional_groups", "A|1")] == "stale"
    assert ui[("segments_table", "B")] == ui[("functional_groups", "B|1")] == "fresh"
    assert mine(env, defs) == {("A", 1): "stale", ("B", 1): "fresh"}

    # the schedule re-runs A's param-set-level asset (cell_job), never B; A's seeds wait for
    # it and follow as soon as that run succeeds (the follow-up sensor, seed_job)
    reqs = evaluate(env, defs, SCHEDULE_NAME)
    assert [(r.partition_key, r.asset_selection) for r in reqs] == [
        ("A", [dg.AssetKey("segments_table")])
    ]
    assert evaluate(env, defs, SEED_SCHEDULE_NAME) == []  # deferred
    done = launch(env, defs, "cell_job", reqs[0])
    reqs = follow_up(env, defs, done)
    assert [(str(r.partition_key), r.asset_selection) for r in reqs] == [
        ("A|1", [dg.AssetKey("functional_groups")])
    ]
    for r in reqs:
        launch(env, defs, "seed_job", r)
    assert set(mine(env, defs).values()) == {"fresh"}
    assert set(dagster_state(env, defs).values()) == {"fresh"}

    # B's biophysics file changes: only B's cell-reading asset is stale (A uses another cell);
    # functional_groups does not read the cell files, so it is stale only if the re-made
    # segments table differs (Dagster compares data versions, `status` content hashes)
    (env.comp / "cells" / "L5PC_reference.json").write_text('{"v": 3}\n')
    cursor = tick(env, cursor).cursor
    ui = dagster_state(env, defs)
    assert ui[("segments_table", "B")] == "stale"
    assert ui[("segments_table", "A")] == ui[("functional_groups", "B|1")] == "fresh"
    rows = {
        (r["param_set"], r["seed"]): r
        for r in status(env.instance, defs, root=env.root, params_dir=env.pdir)
    }
    assert rows[("A", 1)]["state"] == "fresh"
    assert rows[("B", 1)]["state"] == "stale"
    assert {(x["asset"], x["kind"]) for x in rows[("B", 1)]["reasons"]} == {
        ("segments_table", "biophysics")
    }
    assert rows[("B", 1)]["assets"]["functional_groups"] == "fresh"
    reqs = evaluate(env, defs, SCHEDULE_NAME)
    assert [r.partition_key for r in reqs] == ["B"]
    done = launch(env, defs, "cell_job", reqs[0])  # same segments: nothing else to re-run
    assert follow_up(env, defs, done) == []
    assert set(mine(env, defs).values()) == {"fresh"}
    assert set(dagster_state(env, defs).values()) == {"fresh"}

    # a mechanism edit touches every param set
    (env.comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih } : v2\n")
    tick(env, cursor)
    ui = dagster_state(env, defs)
    assert ui[("segments_table", "A")] == ui[("segments_table", "B")] == "stale"
    assert set(mine(env, defs).values()) == {"stale"}
    # only seed partitions stale (a code_version bump of the seed asset): the seed schedule
    # re-runs them in the same tick, with nothing for cell_job
    for name in ("A", "B"):
        materialize(env, defs, "segments_table", name)
    bumped = make_defs(env.resources, fg_cv="2")
    assert evaluate(env, bumped, SCHEDULE_NAME) == []
    assert sorted(str(r.partition_key) for r in evaluate(env, bumped, SEED_SCHEDULE_NAME)) == [
        "A|1",
        "B|1",
    ]


def test_code_version_bump_is_stale_in_dagster_and_status(env: SimpleNamespace) -> None:
    defs = make_defs(env.resources)
    cursor = tick(env, tick(env, None).cursor).cursor
    env.instance.add_dynamic_partitions("seed", ["1"])
    materialize(env, defs, "segments_table", "A")
    materialize(env, defs, "functional_groups", run_partition_key("A", 1))
    assert cursor and mine(env, defs)[("A", 1)] == "fresh"
    # the manifest is in the materialization's metadata; wall time from the step start
    event = env.instance.get_latest_materialization_event(dg.AssetKey("functional_groups"))
    meta = event.asset_materialization.metadata
    assert meta["lineage_params_hash"].value == load_param_set("A").params_hash
    assert meta["lineage_seed"].value == 1
    assert meta["manifest_json"].value["stage_seeds"]["functional_groups"] > 0
    seg_manifest = json.loads(
        (env.root / "A" / "shared" / "segments_table" / "manifest.json").read_text()
    )
    assert 0 < seg_manifest["run"]["wall_time_s"] < 600
    assert seg_manifest["run"]["timings"] == {"build_seconds": 0.5}
    assert "build_seconds" not in seg_manifest["extra"]
    bumped = make_defs(env.resources, segments_cv="2")
    assert dagster_state(env, bumped)[("segments_table", "A")] == "stale"
    row = next(
        r
        for r in status(env.instance, bumped, root=env.root, params_dir=env.pdir)
        if r["param_set"] == "A"
    )
    assert row["state"] == "stale"
    assert {x["detail"] for x in row["reasons"]} == {"code_version of segments_table: 1 -> 2"}
    # B was never materialized: missing, with both assets listed
    row_b = next(
        r
        for r in status(env.instance, bumped, root=env.root, params_dir=env.pdir)
        if r["param_set"] == "B"
    )
    assert row_b["state"] == "missing"
    assert row_b["missing"] == ["functional_groups", "segments_table"]


def test_schedules_are_off_by_default_and_cron_comes_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import l5assets.defs.lineage.schedule as sched

    for s in (sched.rerun_stale_partitions, sched.rerun_stale_seeds):
        assert s.default_status == dg.DefaultScheduleStatus.STOPPED
        assert s.cron_schedule == sched.DEFAULT_CRON
    # public jobs, not Dagster's private implicit asset job
    assert sched.rerun_stale_partitions.job_name == "cell_job"
    assert sched.rerun_stale_seeds.job_name == "seed_job"
    try:
        monkeypatch.setenv(sched.CRON_ENV, "*/15 * * * *")
        assert importlib.reload(sched).rerun_stale_seeds.cron_schedule == "*/15 * * * *"
        # a typo must not break loading the code location: default cron, with a warning
        monkeypatch.setenv(sched.CRON_ENV, "every night")
        with pytest.warns(UserWarning, match="not a valid cron"):
            reloaded = importlib.reload(sched)
        assert reloaded.rerun_stale_partitions.cron_schedule == sched.DEFAULT_CRON
    finally:
        monkeypatch.delenv(sched.CRON_ENV)
        importlib.reload(sched)


def test_project_definitions_include_the_lineage_pieces() -> None:
    from l5assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert repo.has_schedule_def("rerun_stale_partitions")
    assert repo.has_schedule_def("rerun_stale_seeds")
    assert repo.has_sensor_def("params_files_sensor")
    assert repo.has_sensor_def("rerun_seeds_after_param_set")
    graph = defs.resolve_asset_graph()
    for source in ("mechanism_files", "cell_model_files", "synaptic_model_files"):
        assert dg.AssetKey(source) in graph.get_all_asset_keys()
    # exactly the readers depend on each source (the same edges as `status` uses)
    from l5assets.graph import COMPONENT_READERS, PARAMS_READERS

    def readers(source: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(source)).child_keys}

    assert readers("params_file") == {a for a, r in PARAMS_READERS.items() if r}
    for source, comp in (
        ("mechanism_files", "mechanisms"),
        ("cell_model_files", "biophysics"),
        ("cell_model_files", "morphology"),
        ("synaptic_model_files", "synaptic_models"),
    ):
        assert readers(source) == {a for a, r in COMPONENT_READERS.items() if comp in r}, source


def test_cli_trace_diff_status_offline(env: SimpleNamespace) -> None:
    """`l5assets trace / diff / status --no-dagster` read only files: no instance is opened."""
    params = load_param_set("A")
    seg_dir = storage.partition_dir(env.root, "segments_table", "A")
    seg = seg_dir / "segments.npy"
    storage.atomic_write_bytes(seg, np.arange(10.0).tobytes())
    write_manifest(
        seg_dir,
        asset="segments_table",
        params=params,
        seed=None,
        code_version=G.CODE_VERSIONS["segments_table"],
        outputs=[seg],
        inputs={"params_file": env.pdir / "A.json"},
        extra={},
    )
    outs = {}
    for seed in (1, 2):
        d = storage.partition_dir(env.root, "functional_groups", "A", seed)
        outs[seed] = d / "groups.npy"
        groups = stage_rng(seed, "functional_groups").choice(np.frombuffer(seg.read_bytes()), 5)
        storage.atomic_write_bytes(outs[seed], groups.tobytes())
        write_manifest(
            d,
            asset="functional_groups",
            params=params,
            seed=seed,
            code_version=G.CODE_VERSIONS["functional_groups"],
            outputs=[outs[seed]],
            inputs={"segments": seg},
            extra={},
        )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "l5assets.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    tr = cli("trace", str(outs[1]), "--json")
    assert tr.returncode == 0, tr.stderr
    d = json.loads(tr.stdout)
    assert d["seed"] == 1 and d["params"]["name"] == "A"
    assert d["params"]["hash"] == params.params_hash
    assert [n["asset"] for n in d["chain"]] == ["functional_groups", "segments_table"]
    df = cli("diff", str(outs[1]), str(outs[2]), "--json")
    assert df.returncode == 0, df.stderr
    assert "seed" in json.loads(df.stdout)["summary"]
    st = cli("status", "--no-dagster", "--json")
    assert st.returncode == 0, st.stderr
    states = {(r["param_set"], r["seed"]): r["state"] for r in json.loads(st.stdout)}
    assert states[("A", 1)] == "missing"  # the default asset list has the whole graph
    assert states[("B", None)] == "missing"
