"""Tier 2: the assets invoked directly (dg.build_asset_context), without NEURON.

The segments table is the toy morphology of conftest.py, written where `segments_table` would
put it; everything downstream (functional groups, rasters, BMTK network, simulation config) is
the real code writing real Parquet / SONATA files.
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import h5py
import pandas as pd
import pytest
from conftest import small_params

from l5assets.defs.common import MissingUpstreamError
from l5assets.defs.inputs import exc_raster, functional_groups, inh_rasters
from l5assets.defs.network import network
from l5assets.defs.partitions import register_partitions
from l5assets.defs.resources import StorageResource
from l5assets.defs.simulation import simulation_config
from l5assets.layout import SEGMENTS_FILE
from l5assets.lineage.manifest import resolve_recorded_path
from l5assets.params import ParamsError, load_param_set
from l5assets.science.spikes import read_sonata_spikes
from l5assets.storage import file_sha256

warnings.filterwarnings("ignore", category=dg.BetaWarning)

PS, SEED = "T_direct", 5
KEY = f"{PS}|{SEED}"


@pytest.fixture(scope="module")
def env(tmp_path_factory, toy_segments):
    """Params dir + storage root with the toy segments table in place, and an instance."""
    root = tmp_path_factory.mktemp("direct")
    params_dir = root / "params"
    params_dir.mkdir()
    (params_dir / f"{PS}.json").write_text(json.dumps(small_params(0.3), indent=1))
    storage = StorageResource(root=str(root / "out"), params_dir=str(params_dir))
    seg_dir = storage.partition_dir("segments_table", PS)
    seg_dir.mkdir(parents=True)
    toy_segments.to_parquet(seg_dir / SEGMENTS_FILE, index=False)
    with dg.instance_for_test() as instance:
        register_partitions(instance, [PS], [SEED])
        yield {"storage": storage, "instance": instance, "params_dir": params_dir}


def invoke(asset, env, key=KEY) -> dg.MaterializeResult:
    ctx = dg.build_asset_context(
        partition_key=key, instance=env["instance"], resources={"storage": env["storage"]}
    )
    return asset(ctx)


def md(result: dg.MaterializeResult, key: str):
    v = result.metadata[key]
    return getattr(v, "value", v)


@pytest.fixture(scope="module")
def results(env):
    """functional_groups -> exc_raster -> inh_rasters -> network -> simulation_config."""
    out = {}
    for asset in (functional_groups, exc_raster, inh_rasters, network, simulation_config):
        out[asset.key.to_user_string()] = invoke(asset, env)
    return out


def test_results_carry_paths_hashes_and_a_content_data_version(env, results):
    params = load_param_set(PS, env["params_dir"])
    for name, r in results.items():
        assert r.data_version is not None and r.data_version.value == md(r, "content_hash"), name
        assert md(r, "params_hash") == params.params_hash
        assert md(r, "seed") == SEED and md(r, "param_set") == PS
        out_dir = env["storage"].partition_dir(name, PS, SEED)
        assert Path(md(r, "dir")) == out_dir
        files = [Path(md(r, k)) for k in r.metadata if k.startswith("path_")]
        assert files and all(f.is_file() and out_dir in f.parents for f in files), name
        assert (out_dir / "manifest.json").is_file()
        # atomic writes leave no temp files or folders behind
        assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")], name


def test_functional_groups_tables_match_metadata(env, results):
    r = results["functional_groups"]
    syn = pd.read_parquet(md(r, "path_synapses"))
    groups = pd.read_parquet(md(r, "path_groups"))
    params = load_param_set(PS, env["params_dir"])
    c = params.counts
    assert md(r, "n_exc_cells") == c.exc_total == int(groups["n_cells"].sum())
    assert md(r, "n_exc_synapses") == len(syn)
    assert set(syn["node_id"]) == set(range(c.exc_total))
    per_cell = syn.groupby("node_id").size()
    assert per_cell.between(params.exc_div_min, params.exc_div_max).all()


def test_rasters_are_sonata_files_with_the_counts_of_the_params(env, results):
    params = load_param_set(PS, env["params_dir"])
    c = params.counts
    exc_path = md(results["exc_raster"], "path_spikes")
    with h5py.File(exc_path, "r") as f:
        g = f["spikes"]["exc_stim"]
        assert g["timestamps"].attrs["units"] == "ms"
        ts = g["timestamps"][()]
        assert ts.size == md(results["exc_raster"], "n_exc_spikes") > 0
        assert ts.min() >= 0 and ts.max() < params.stop * 1000
        assert g["node_ids"][()].max() < c.exc_total
    inh = results["inh_rasters"]
    pv = read_sonata_spikes(md(inh, "path_pv_spikes"))["prox_inh_stim"]
    som = read_sonata_spikes(md(inh, "path_som_spikes"))["dist_inh_stim"]
    assert len(pv) == md(inh, "n_pv_spikes") and len(som) == md(inh, "n_som_spikes")
    assert pv.node_ids.max() < c.pv_total and som.node_ids.max() < c.som_total


def test_network_and_config_point_at_the_partition_files(env, results):
    params = load_param_set(PS, env["params_dir"])
    c = params.counts
    net_dir = env["storage"].partition_dir("network", PS, SEED)
    with h5py.File(net_dir / "exc_stim_nodes.h5", "r") as f:
        assert len(f["nodes"]["exc_stim"]["node_id"]) == c.exc_total
    with h5py.File(net_dir / "exc_stim_biophysical_edges.h5", "r") as f:
        n_edges = len(f["edges"]["exc_stim_to_biophysical"]["source_node_id"])
    assert n_edges == md(results["functional_groups"], "n_exc_synapses")
    sim_path = Path(md(results["simulation_config"], "path_simulation_config"))
    sim = json.loads(sim_path.read_text())
    # paths may be relative to the config's folder (BMTK's ${configdir})
    inputs = {
        Path(v["input_file"].replace("${configdir}", str(sim_path.parent))).resolve()
        for v in sim["inputs"].values()
    }
    assert inputs == {
        Path(md(results["exc_raster"], "path_spikes")).resolve(),
        Path(md(results["inh_rasters"], "path_pv_spikes")).resolve(),
        Path(md(results["inh_rasters"], "path_som_spikes")).resolve(),
    }


def test_same_partition_twice_gives_identical_hashes(env, results):
    for asset in (functional_groups, exc_raster, inh_rasters, network, simulation_config):
        name = asset.key.to_user_string()
        again = invoke(asset, env)
        assert md(again, "content_hash") == md(results[name], "content_hash"), name


def test_another_seed_gives_other_inputs(env, results):
    register_partitions(env["instance"], [], [SEED + 1])
    other = invoke(functional_groups, env, key=f"{PS}|{SEED + 1}")
    assert md(other, "content_hash") != md(results["functional_groups"], "content_hash")


def test_bad_params_fail_before_writing_and_keep_outputs(env, results):
    pfile = env["params_dir"] / f"{PS}.json"
    good = pfile.read_text()
    out_dir = env["storage"].partition_dir("exc_raster", PS, SEED)
    before = {p.name: file_sha256(p) for p in out_dir.iterdir()}
    bad = small_params(0.3)
    bad["dL"] = -5
    pfile.write_text(json.dumps(bad))
    try:
        with pytest.raises(ParamsError, match="dL"):
            invoke(exc_raster, env)
    finally:
        pfile.write_text(good)
    assert {p.name: file_sha256(p) for p in out_dir.iterdir()} == before
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".")]


def test_missing_upstream_is_named(env):
    register_partitions(env["instance"], [], [999])
    with pytest.raises(MissingUpstreamError, match="functional_groups"):
        invoke(exc_raster, env, key=f"{PS}|999")
    assert not env["storage"].partition_dir("exc_raster", PS, 999).exists()


def test_network_records_every_functional_groups_file_it_read(env, results):
    net_dir = env["storage"].partition_dir("network", PS, SEED)
    m = json.loads((net_dir / "manifest.json").read_text())
    fg_dir = env["storage"].partition_dir("functional_groups", PS, SEED)
    assert {resolve_recorded_path(r, net_dir) for r in m["inputs"].values()} == {
        (fg_dir / n).resolve() for n in ("synapses.parquet", "groups.parquet", "clusters.parquet")
    }


def test_manifest_appears_with_the_outputs_and_a_corrupt_upstream_manifest_fails(env, results):
    # the manifest, written in the temp folder before the swap, records the final paths
    out_dir = env["storage"].partition_dir("exc_raster", PS, SEED)
    m = json.loads((out_dir / "manifest.json").read_text())
    spikes = out_dir / "exc_stim_spikes.h5"
    plot = out_dir / "raster.png"
    assert [resolve_recorded_path(o, out_dir) for o in m["outputs"]] == [
        spikes.resolve(),
        plot.resolve(),
    ]
    assert all("path" not in o for o in m["outputs"])  # inside the tree: relative only
    assert m["outputs"][0]["sha256"] == file_sha256(spikes)
    # an unreadable upstream manifest fails the asset (the lineage link would be lost) and,
    # since the manifest is part of the swap, no outputs appear without a manifest
    seed = 77
    register_partitions(env["instance"], [], [seed])
    key = f"{PS}|{seed}"
    invoke(functional_groups, env, key=key)
    fg_manifest = env["storage"].partition_dir("functional_groups", PS, seed) / "manifest.json"
    fg_manifest.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable l5assets manifest"):
        invoke(exc_raster, env, key=key)
    out = env["storage"].partition_dir("exc_raster", PS, seed)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
