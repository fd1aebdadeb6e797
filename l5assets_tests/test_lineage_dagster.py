"""Lineage in Dagster: the params sensor, the stale-partition schedule and the UI's staleness.

Uses the project's real partitions, `params_file` and `cell_model_files` observable sources,
resources, sensor and schedule on a real (temporary) Dagster instance, with two small real
assets shaped like the project's (a param-set-level `segments_table` and a param_set x seed
`functional_groups`) that write files and manifests the way every project asset does.
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

from l5assets import paths, storage
from l5assets.defs.lineage import cell_model_files, manifest_metadata, step_started_at
from l5assets.defs.lineage.schedule import rerun_stale_partitions
from l5assets.defs.lineage.sensor import params_files_sensor
from l5assets.defs.params import params_file
from l5assets.defs.partitions import (
    by_param_set,
    param_set_partitions,
    run_partition_key,
    run_partitions,
)
from l5assets.defs.resources import CellModelResource, StorageResource
from l5assets.lineage.manifest import write_manifest
from l5assets.lineage.status import status
from l5assets.params import load_param_set
from l5assets.rng import stage_rng

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def make_defs(resources: dict, segments_cv: str = "1") -> dg.Definitions:
    """Two real assets in the project's layout, plus the lineage schedule and sensor."""

    @dg.asset(key="segments_table", partitions_def=param_set_partitions, code_version=segments_cv,
              deps=["params_file", "cell_model_files"])
    def segments_table(context: dg.AssetExecutionContext,
                       storage_res: StorageResource) -> dg.MaterializeResult:
        name = context.partition_key
        params = storage_res.load_params(name)
        out = storage_res.partition_dir("segments_table", name)
        seg = out / "segments.npy"
        storage.atomic_write_bytes(seg, np.arange(0, 1000, params.dL).tobytes())
        write_manifest(out, asset="segments_table", params=params, seed=None,
                       code_version=segments_cv, outputs=[seg],
                       inputs={"params_file": storage_res.params_file(name)},
                       extra={"run_id": context.run.run_id, "started_at": step_started_at(context),
                              "build_seconds": 0.5})
        return dg.MaterializeResult(data_version=dg.DataVersion(storage.file_sha256(seg)))

    @dg.asset(key="functional_groups", partitions_def=run_partitions, code_version="1",
              deps=[dg.AssetDep("params_file", partition_mapping=by_param_set),
                    dg.AssetDep("segments_table", partition_mapping=by_param_set)])
    def functional_groups(context: dg.AssetExecutionContext,
                          storage_res: StorageResource) -> dg.MaterializeResult:
        keys = context.partition_key.keys_by_dimension
        name, seed = keys["param_set"], int(keys["seed"])
        params = storage_res.load_params(name)
        seg = storage_res.partition_dir("segments_table", name) / "segments.npy"
        out = storage_res.partition_dir("functional_groups", name, seed)
        groups = stage_rng(seed, "functional_groups").choice(np.frombuffer(seg.read_bytes()), 20)
        fg = out / "groups.npy"
        storage.atomic_write_bytes(fg, groups.tobytes())
        manifest = write_manifest(out, asset="functional_groups", params=params, seed=seed,
                                  code_version="1", outputs=[fg], inputs={"segments": seg},
                                  extra={"run_id": context.run.run_id})
        return dg.MaterializeResult(data_version=dg.DataVersion(storage.file_sha256(fg)),
                                    metadata=manifest_metadata(manifest))

    return dg.Definitions(
        assets=[params_file, cell_model_files, segments_table, functional_groups],
        schedules=[rerun_stale_partitions],
        sensors=[params_files_sensor],
        resources=resources,
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    comp = tmp_path / "components"
    (comp / "cells").mkdir(parents=True)
    (comp / "mechanisms").mkdir()
    (comp / "cells" / "L5PC_bbp.json").write_text('{"v": 1}\n')
    (comp / "cells" / "L5PC_reference.json").write_text('{"v": 2}\n')
    (comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih }\n")
    morph = tmp_path / "cell.asc"
    morph.write_text('("CellBody" (0 0 0 10))\n')
    pdir = tmp_path / "params"
    pdir.mkdir()
    raw = json.loads((paths.PROJECT_ROOT / "data" / "params" / "L5_quick.json").read_text())
    raw["cell"]["morphology"] = str(morph)
    (pdir / "A.json").write_text(json.dumps(raw, indent=2))
    raw["cell"]["biophysics"] = "L5PC_reference"
    (pdir / "B.json").write_text(json.dumps(raw, indent=2))
    root = tmp_path / "outputs"
    monkeypatch.setenv("L5ASSETS_COMPONENTS_DIR", str(comp))
    monkeypatch.setenv("L5ASSETS_PARAMS_DIR", str(pdir))
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(root))
    res_storage = StorageResource(root=str(root), params_dir=str(pdir))
    with dg.instance_for_test() as instance:
        yield SimpleNamespace(
            comp=comp, pdir=pdir, root=root, instance=instance, storage=res_storage,
            resources={"storage": res_storage, "storage_res": res_storage,
                       "cell_model": CellModelResource(mod_dir=str(comp / "mechanisms"))},
        )


def tick(env: SimpleNamespace, cursor: str | None) -> dg.SensorResult:
    """Evaluate the sensor and apply its result as the sensor daemon would."""
    ctx = dg.build_sensor_context(instance=env.instance, cursor=cursor,
                                  resources=env.resources)
    result = params_files_sensor(ctx)
    for req in result.dynamic_partitions_requests:
        env.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    for event in result.asset_events:
        env.instance.report_runless_asset_event(event)
    return result


def observed(result: dg.SensorResult) -> set[tuple[str, str]]:
    return {(e.asset_key.to_user_string(), e.partition) for e in result.asset_events}


def materialize(env: SimpleNamespace, defs: dg.Definitions, asset: str, key) -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    res = job.execute_in_process(instance=env.instance, partition_key=key,
                                 asset_selection=[dg.AssetKey(asset)],
                                 resources=env.resources)
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
    return {(r["param_set"], r["seed"]): r["state"]
            for r in status(env.instance, defs, root=env.root, params_dir=env.pdir)}


def test_sensor_registers_new_params_files_and_reports_changes(env: SimpleNamespace) -> None:
    (env.pdir / "broken.json").write_text('{"cell": {}}')  # invalid: never registered
    (env.pdir / "not a key.json").write_text("{}")  # not a partition key: ignored
    first = tick(env, None)
    assert [r.partition_keys for r in first.dynamic_partitions_requests] == [["A", "B"]]
    assert first.asset_events == []  # observed from the next tick on, once registered
    assert sorted(env.instance.get_dynamic_partitions("param_set")) == ["A", "B"]

    second = tick(env, first.cursor)
    assert observed(second) == {("params_file", "A"), ("params_file", "B"),
                                ("cell_model_files", "A"), ("cell_model_files", "B")}
    assert tick(env, second.cursor).asset_events == []  # nothing changed

    (env.pdir / "C.json").write_text((env.pdir / "A.json").read_text())
    third = tick(env, second.cursor)
    assert [r.partition_keys for r in third.dynamic_partitions_requests] == [["C"]]
    assert "C" in env.instance.get_dynamic_partitions("param_set")

    raw = json.loads((env.pdir / "A.json").read_text())
    raw["inh_shift"] = 3
    (env.pdir / "A.json").write_text(json.dumps(raw))
    assert observed(tick(env, third.cursor)) == {("params_file", "A"), ("params_file", "C"),
                                                 ("cell_model_files", "C")}


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

    sched_ctx = dg.build_schedule_context(instance=env.instance,
                                          repository_def=defs.get_repository_def(),
                                          resources=env.resources)
    assert isinstance(rerun_stale_partitions.evaluate_tick(sched_ctx).skip_message, str)

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

    # the schedule re-runs A's param-set-level asset first, then A's seeds, never B
    data = rerun_stale_partitions.evaluate_tick(sched_ctx)
    assert [(r.partition_key, r.asset_selection) for r in data.run_requests] == [
        ("A", [dg.AssetKey("segments_table")])]
    materialize(env, defs, "segments_table", "A")
    data = rerun_stale_partitions.evaluate_tick(sched_ctx)
    assert [(r.partition_key, r.asset_selection) for r in data.run_requests] == [
        ("A|1", [dg.AssetKey("functional_groups")])]
    for r in data.run_requests:
        materialize(env, defs, "functional_groups", r.partition_key)
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
    rows = {(r["param_set"], r["seed"]): r for r in status(env.instance, defs, root=env.root,
                                                           params_dir=env.pdir)}
    assert rows[("A", 1)]["state"] == "fresh"
    assert rows[("B", 1)]["state"] == "stale"
    assert {(x["asset"], x["kind"]) for x in rows[("B", 1)]["reasons"]} == {
        ("segments_table", "biophysics")}
    assert rows[("B", 1)]["assets"]["functional_groups"] == "fresh"
    data = rerun_stale_partitions.evaluate_tick(sched_ctx)
    assert [r.partition_key for r in data.run_requests] == ["B"]
    materialize(env, defs, "segments_table", "B")  # same segments: nothing else to re-run
    assert set(mine(env, defs).values()) == {"fresh"}
    assert set(dagster_state(env, defs).values()) == {"fresh"}

    # a mechanism edit touches every param set
    (env.comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih } : v2\n")
    tick(env, cursor)
    ui = dagster_state(env, defs)
    assert ui[("segments_table", "A")] == ui[("segments_table", "B")] == "stale"
    assert set(mine(env, defs).values()) == {"stale"}


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
    seg_manifest = json.loads((env.root / "A" / "shared" / "segments_table" /
                               "manifest.json").read_text())
    assert 0 < seg_manifest["run"]["wall_time_s"] < 600
    assert seg_manifest["run"]["timings"] == {"build_seconds": 0.5}
    assert "build_seconds" not in seg_manifest["extra"]
    bumped = make_defs(env.resources, segments_cv="2")
    assert dagster_state(env, bumped)[("segments_table", "A")] == "stale"
    row = next(r for r in status(env.instance, bumped, root=env.root, params_dir=env.pdir)
               if r["param_set"] == "A")
    assert row["state"] == "stale"
    assert {x["detail"] for x in row["reasons"]} == {"code_version of segments_table: 1 -> 2"}
    # B was never materialized: missing, with both assets listed
    row_b = next(r for r in status(env.instance, bumped, root=env.root, params_dir=env.pdir)
                 if r["param_set"] == "B")
    assert row_b["state"] == "missing"
    assert row_b["missing"] == ["functional_groups", "segments_table"]


def test_schedule_is_off_by_default_and_cron_comes_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import l5assets.defs.lineage.schedule as sched

    assert sched.rerun_stale_partitions.default_status == dg.DefaultScheduleStatus.STOPPED
    assert sched.rerun_stale_partitions.cron_schedule == sched.DEFAULT_CRON
    monkeypatch.setenv(sched.CRON_ENV, "*/15 * * * *")
    try:
        assert importlib.reload(sched).rerun_stale_partitions.cron_schedule == "*/15 * * * *"
    finally:
        monkeypatch.delenv(sched.CRON_ENV)
        importlib.reload(sched)


def test_project_definitions_include_the_lineage_pieces() -> None:
    from l5assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert repo.has_schedule_def("rerun_stale_partitions")
    assert repo.has_sensor_def("params_files_sensor")
    assert dg.AssetKey("cell_model_files") in defs.resolve_asset_graph().get_all_asset_keys()


def test_cli_trace_diff_status_offline(env: SimpleNamespace) -> None:
    """`l5assets trace / diff / status --no-dagster` read only files: no instance is opened."""
    params = load_param_set("A")
    seg_dir = storage.partition_dir(env.root, "segments_table", "A")
    seg = seg_dir / "segments.npy"
    storage.atomic_write_bytes(seg, np.arange(10.0).tobytes())
    write_manifest(seg_dir, asset="segments_table", params=params, seed=None, code_version="1",
                   outputs=[seg], inputs={"params_file": env.pdir / "A.json"}, extra={})
    outs = {}
    for seed in (1, 2):
        d = storage.partition_dir(env.root, "functional_groups", "A", seed)
        outs[seed] = d / "groups.npy"
        groups = stage_rng(seed, "functional_groups").choice(np.frombuffer(seg.read_bytes()), 5)
        storage.atomic_write_bytes(outs[seed], groups.tobytes())
        write_manifest(d, asset="functional_groups", params=params, seed=seed, code_version="1",
                       outputs=[outs[seed]], inputs={"segments": seg}, extra={})

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "l5assets.cli", *args],
                              capture_output=True, text=True, timeout=120)

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
