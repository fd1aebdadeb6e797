"""Tier 3: the whole graph materialized with dg.materialize() on a test instance.

A small param set (a fifth of the dendritic length, 0.15 s) in a temporary params dir and
storage root; real NEURON (segments table, and the simulation in its subprocess), real BMTK,
real SONATA / Parquet files, checked with h5py. Then: the same partition again gives identical
content hashes, a bad params file fails before writing anything, and after edits of the params,
a biophysics file, a synaptic model or a .mod file (in a temporary copy of biophys_components)
the Dagster UI's stale status and `l5assets status` agree asset by asset.
"""

import json
import shutil
import warnings
from pathlib import Path

import dagster as dg
import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import small_params

from l5assets import paths
from l5assets.definitions import defs
from l5assets.defs.lineage.status import status
from l5assets.defs.partitions import register_partitions, run_partition_key
from l5assets.defs.resources import CellModelResource, NeuronRuntime, StorageResource
from l5assets.defs.slurm import SlurmResource
from l5assets.graph import SEED_ASSETS
from l5assets.graph import SHARED_ASSETS as CELL_ASSETS
from l5assets.graph import SOURCE_ASSETS as OBSERVED_SOURCES
from l5assets.params import load_param_set
from l5assets.storage import file_sha256

warnings.filterwarnings("ignore", category=dg.BetaWarning)

PS, SEED = "T_mat", 11


def materialize(env, assets, partition_key, raise_on_error=True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(defs.assets),
        selection=list(assets),
        partition_key=partition_key,
        instance=env["instance"],
        resources=env["resources"],
        raise_on_error=raise_on_error,
    )


def latest(instance, asset: str, partition: str) -> dict:
    ev = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert ev is not None, asset
    mat = ev.asset_materialization
    assert mat.partition == partition, asset
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def observe_sources(env) -> None:
    """Record the current data versions of the source files (what the lineage sensor does)."""
    res = dg.materialize(
        list(defs.assets),
        selection=list(OBSERVED_SOURCES),
        instance=env["instance"],
        resources=env["resources"],
    )
    assert res.success


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("materialize")
    params_dir = root / "params"
    params_dir.mkdir()
    (params_dir / f"{PS}.json").write_text(json.dumps(small_params(), indent=1))
    # a copy of the model components, so that a test can edit them
    components = root / "components"
    shutil.copytree(paths.components_dir(), components)
    resources = {
        "storage": StorageResource(root=str(root / "out"), params_dir=str(params_dir)),
        "cell_model": CellModelResource(),  # mod_dir: the copy (L5ASSETS_COMPONENTS_DIR)
        "neuron": NeuronRuntime(timeout_s=600),
        "slurm": SlurmResource(executor="local"),
    }
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as mp:
        mp.setenv("L5ASSETS_COMPONENTS_DIR", str(components))
        mp.setenv("L5ASSETS_CACHE_DIR", str(paths.cache_dir()))  # reuse compiled mechanisms
        register_partitions(instance, [PS], [SEED])
        env = {
            "instance": instance,
            "resources": resources,
            "params_dir": params_dir,
            "storage": resources["storage"],
            "key": str(run_partition_key(PS, SEED)),
            "components": components,
        }
        observe_sources(env)  # as `l5assets run` does first
        materialize(env, CELL_ASSETS, PS)
        materialize(env, SEED_ASSETS, env["key"])
        env["first"] = {a: latest(instance, a, env["key"]) for a in SEED_ASSETS}
        env["first"].update({a: latest(instance, a, PS) for a in CELL_ASSETS})
        yield env


def test_every_asset_materialized_with_metadata_and_data_version(env):
    params = load_param_set(PS, env["params_dir"])
    for asset, meta in env["first"].items():
        assert meta["params_hash"] == params.params_hash, asset
        assert len(meta["content_hash"]) == 64, asset
        for k, v in meta.items():
            if k.startswith("path_"):
                assert Path(v).exists(), (asset, k, v)
        ev = env["instance"].get_latest_materialization_event(dg.AssetKey(asset))
        assert ev.asset_materialization.tags["dagster/data_version"] == meta["content_hash"]


def test_segments_table_from_neuron(env):
    seg = pd.read_parquet(env["first"]["segments_table"]["path_segments"])
    assert {"bmtk_id", "x", "type", "sec_index", "distance", "coord_x", "diam", "length"} <= set(
        seg.columns
    )
    assert set(seg["type"]) >= {"soma", "dend", "apic"}
    assert env["first"]["segments_table"]["n_segments"] == len(seg) > 1000


def test_network_and_simulation_files(env):
    params = load_param_set(PS, env["params_dir"])
    c = params.counts
    net_dir = Path(env["first"]["network"]["dir"])
    with h5py.File(net_dir / "exc_stim_nodes.h5", "r") as f:
        assert len(f["nodes"]["exc_stim"]["node_id"]) == c.exc_total
    with h5py.File(net_dir / "prox_inh_stim_nodes.h5", "r") as f:
        assert len(f["nodes"]["prox_inh_stim"]["node_id"]) == c.pv_total
    total = env["first"]["network"]["n_total_synapses"]
    sim = env["first"]["simulation_outputs"]
    assert sim["n_synapses"] == total  # the runner instantiated every synapse of the network
    syn = pd.read_parquet(sim["path_synapses"])
    assert len(syn) == total
    with h5py.File(sim["path_spikes"], "r") as f:
        # BMTK writes an empty /spikes group when the cell stays silent
        pops = set(f["spikes"])
        assert pops <= {"biophysical"}
        n_cell = len(f["spikes"]["biophysical"]["timestamps"]) if pops else 0
    assert n_cell == sim["n_cell_spikes"]
    with h5py.File(sim["path_v_report"], "r") as f:
        v = f["report"]["biophysical"]["data"][()]
    assert v.shape[0] == pytest.approx(params.stop * 1000 / params.dt, abs=2)
    summary = json.loads(Path(env["first"]["simulation_summary"]["path_summary"]).read_text())
    assert summary["spike_count"] == n_cell
    assert -90 < summary["soma_v_mean_mv"] < 0
    assert (
        summary["input_spikes"]["exc_stim"]["spike_count"]
        == (env["first"]["exc_raster"]["n_exc_spikes"])
    )


def test_summary_shows_its_figure_inline_and_the_science_first(env):
    """The summary's materialization: the numbers first, then the run's figure as an inline
    PNG (<= 150 KB), then the provenance; the full-size figure sits next to summary.json."""
    import base64

    meta = env["first"]["simulation_summary"]
    keys = list(meta)
    assert keys[0] == "firing_rate_hz" and keys.index("plot") < keys.index("param_set")
    md = meta["plot"]
    prefix = "![plot](data:image/png;base64,"
    assert md.startswith(prefix) and md.endswith(")")
    png = base64.b64decode(md[len(prefix) : -1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) <= 150_000
    full = Path(meta["path_plot"])
    assert full.name == "summary.png" and full.read_bytes()[:8] == png[:8]
    assert full.stat().st_size > len(png)  # the full-size one is larger
    # the inputs show theirs the same way: groups on the morphology, rasters with rates
    for asset, name, first in (
        ("functional_groups", "groups.png", "n_exc_synapses"),
        ("exc_raster", "raster.png", "population"),
        ("inh_rasters", "raster.png", "pv_mean_rate_hz"),
    ):
        meta = env["first"][asset]
        keys = list(meta)
        assert keys[0] == first and keys.index("plot") < keys.index("param_set"), asset
        assert meta["plot"].startswith(prefix) and Path(meta["path_plot"]).name == name
        assert len(base64.b64decode(meta["plot"][len(prefix) : -1])) <= 150_000


def test_params_file_observation_records_the_file_hash(env):
    # selecting an observable source asset runs its observation
    res = dg.materialize(
        list(defs.assets),
        selection=["params_file"],
        instance=env["instance"],
        resources=env["resources"],
    )
    assert res.success
    obs = [e for e in res.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    recs = [e.event_specific_data.asset_observation for e in obs]
    versions = {r.partition: r.tags["dagster/data_version"] for r in recs}
    assert versions[PS] == file_sha256(env["params_dir"] / f"{PS}.json")


def test_same_partition_twice_gives_identical_content_hashes(env):
    materialize(env, SEED_ASSETS, env["key"])
    for asset in SEED_ASSETS:
        again = latest(env["instance"], asset, env["key"])
        assert again["content_hash"] == env["first"][asset]["content_hash"], asset


def test_bad_params_fail_before_writing_anything(env):
    pfile = env["params_dir"] / f"{PS}.json"
    good = pfile.read_text()
    root = env["storage"].root_path()
    before = {p: file_sha256(p) for p in root.rglob("*") if p.is_file()}
    bad = small_params()
    bad["groups"]["cluster_radius"] = 500  # > group_radius
    pfile.write_text(json.dumps(bad))
    try:
        cell = materialize(env, CELL_ASSETS, PS, raise_on_error=False)
        seed = materialize(env, SEED_ASSETS, env["key"], raise_on_error=False)
    finally:
        pfile.write_text(good)
    for res in (cell, seed):
        assert not res.success
        failures = [e for e in res.all_events if e.is_step_failure]
        assert failures and "cluster_radius" in str(failures[0].event_specific_data.error)
        assert not res.get_asset_materialization_events()
    after = {p: file_sha256(p) for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing lost


def test_summary_links_to_the_runner_outputs_but_not_its_wall_times(env):
    """result.json (wall times) is read for its file list but not recorded: its hash differs
    between identical runs. The spike file links the summary to simulation_outputs."""
    m = json.loads(
        (env["storage"].partition_dir("simulation_summary", PS, SEED) / "manifest.json").read_text()
    )
    sim = env["storage"].partition_dir("simulation_outputs", PS, SEED)
    assert "result" not in m["inputs"]
    spikes = m["inputs"]["output_spikes"]
    assert spikes["sha256"] == file_sha256(sim / "spikes.h5")
    assert spikes["manifest"]["asset"] == "simulation_outputs"


def test_nwb_export_of_the_real_run(env):
    """The NWB file holds the run's spikes and soma voltage bit for bit (seconds / volts by
    NWB's rules), the three input populations, and the lineage; nwbinspector finds nothing at
    CRITICAL or BEST_PRACTICE_VIOLATION; a re-materialization gives the same bytes."""
    from pynwb import NWBHDF5IO
    from test_nwb_export import inspector_problems

    from l5assets.lineage.manifest import read_manifest

    meta = env["first"]["nwb_export"]
    path = Path(meta["path_nwb"])
    sim = env["first"]["simulation_outputs"]
    with h5py.File(sim["path_spikes"], "r") as f:
        pops = set(f["spikes"])  # empty when the cell stays silent
        spikes_ms = f["spikes/biophysical/timestamps"][()] if pops else np.zeros(0)
    with h5py.File(sim["path_v_report"], "r") as f:
        v_mv = f["report/biophysical/data"][:, 0]
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert np.array_equal(np.asarray(nwb.units["spike_times"][0]), spikes_ms / 1000.0)
        soma = nwb.acquisition["soma_v"]
        assert np.array_equal(soma.data[:], v_mv) and soma.conversion == 1e-3
        assert soma.unit == "volts" and soma.rate == pytest.approx(1000.0 / 0.1)
        for pop in ("exc_stim", "prox_inh_stim", "dist_inh_stim"):
            table = nwb.processing["misc"][pop]
            assert len(table["spike_times"].target) == meta[f"n_{pop}_spikes"], pop
        notes = json.loads(nwb.notes)
    params = load_param_set(PS, env["params_dir"])
    assert (notes["param_set"], notes["seed"]) == (PS, SEED)
    assert notes["params_hash"] == params.params_hash == meta["params_hash"]
    # data hashes of what was read, never the code revision (a commit changes no bytes)
    assert "git_commit" not in json.dumps(notes)
    for asset, digest in notes["upstream_content_hashes"].items():
        up = env["storage"].partition_dir(asset, PS, SEED) / "manifest.json"
        assert digest == read_manifest(up)["extra"]["content_hash"], asset
    assert len(spikes_ms) == meta["n_cell_spikes"]
    assert not inspector_problems(path, silent_cell=spikes_ms.size == 0)
    before = path.read_bytes()
    materialize(env, ["nwb_export"], env["key"])
    assert path.read_bytes() == before


def ui_and_status(env) -> tuple[dict, dict]:
    """(Dagster's stale status, `status`'s asset state) per (asset, partition key)."""
    rows = status(
        env["instance"], defs, root=env["storage"].root_path(), params_dir=env["params_dir"]
    )
    ui, mine = {}, {}
    for r in rows:
        for asset, state in r["assets"].items():
            pk = r["param_set"] if asset in CELL_ASSETS else f"{r['param_set']}|{r['seed']}"
            mine[(asset, pk)] = state
            ui[(asset, pk)] = r["dagster"][asset]
    return ui, mine


def test_dagster_ui_and_status_agree_after_each_edit(env):
    """Edit one thing at a time, observe the sources (as the sensor would), and compare the
    stale status Dagster shows with `l5assets status`, per asset and partition; a second
    param set (other biophysics; its seed-independent assets only) stays fresh."""
    other = "T_other"
    comps = env["components"]
    own_cell = small_params()["cell"]["biophysics"]  # the default cell
    cell = json.loads((comps / "cells" / f"{own_cell}.json").read_text())
    cell["name"] = "L5PC_copy"  # same cell, another biophysics file
    (comps / "cells" / "L5PC_copy.json").write_text(json.dumps(cell, indent=1))
    raw = small_params()
    raw["cell"]["biophysics"] = "L5PC_copy"
    (env["params_dir"] / f"{other}.json").write_text(json.dumps(raw, indent=1))
    register_partitions(env["instance"], [other])
    observe_sources(env)
    materialize(env, CELL_ASSETS, other)
    cases = [  # file edited, and the assets of T_mat that must be stale (directly)
        (
            env["params_dir"] / f"{PS}.json",
            set(CELL_ASSETS) - {"compiled_mechanisms"} | set(SEED_ASSETS),
        ),
        (comps / "cells" / f"{own_cell}.json", {"segments_table", "simulation_outputs"}),
        (comps / "synaptic_models" / "PN2PN.json", {"network", "simulation_outputs"}),
        (next((comps / "mechanisms").glob("*.mod")), {"compiled_mechanisms"}),
    ]
    ui, mine = ui_and_status(env)
    assert ui == mine
    assert set(mine.values()) == {"fresh", "missing"}  # T_other's seed assets: missing
    for path, expected in cases:
        original = path.read_bytes()
        if path.suffix == ".json" and path.parent == env["params_dir"]:
            edited = json.loads(original)
            edited["inh_shift"] = edited.get("inh_shift", 0) + 1
            path.write_text(json.dumps(edited, indent=1))
        else:
            path.write_bytes(original + b"\n")  # any byte change is a change
        try:
            observe_sources(env)
            ui, mine = ui_and_status(env)
            assert ui == mine, path.name
            stale = {a for (a, pk), st in mine.items() if st == "stale" and pk.startswith(PS)}
            assert stale == expected, path.name
            # the other param set: fresh, except what every param set shares
            shared = {"compiled_mechanisms"} if path.suffix == ".mod" else set()
            assert {
                a for (a, pk), st in mine.items() if st == "stale" and pk.startswith(other)
            } == shared, path.name
        finally:
            path.write_bytes(original)
    observe_sources(env)
    ui, mine = ui_and_status(env)
    assert ui == mine and "stale" not in set(mine.values())
