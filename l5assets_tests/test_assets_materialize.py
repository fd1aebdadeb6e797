"""Tier 3: the whole graph materialized with dg.materialize() on a test instance.

A small param set (a fifth of the dendritic length, 0.15 s) in a temporary params dir and
storage root; real NEURON (segments table, and the simulation in its subprocess), real BMTK,
real SONATA / Parquet files, checked with h5py. Then: the same partition again gives identical
content hashes, and a bad params file fails before writing anything.
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import h5py
import pandas as pd
import pytest

from l5assets import paths
from l5assets.definitions import defs
from l5assets.defs.jobs import CELL_ASSETS, SEED_ASSETS
from l5assets.defs.partitions import register_partitions, run_partition_key
from l5assets.defs.resources import CellModelResource, NeuronRuntime, StorageResource
from l5assets.params import load_param_set
from l5assets.storage import file_sha256

warnings.filterwarnings("ignore", category=dg.BetaWarning)

PS, SEED = "T_mat", 11


def small_params() -> dict:
    raw = json.loads((paths.PROJECT_ROOT / "data" / "params" / "L5_quick.json").read_text())
    raw["description"] = "test: whole graph, small and short"
    raw["time"]["stop"] = 0.15
    raw["lengths"] = {"basal_dist": 930, "basal_prox": 483, "apic": 1488}
    return raw


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


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("materialize")
    params_dir = root / "params"
    params_dir.mkdir()
    (params_dir / f"{PS}.json").write_text(json.dumps(small_params(), indent=1))
    resources = {
        "storage": StorageResource(root=str(root / "out"), params_dir=str(params_dir)),
        "cell_model": CellModelResource(),
        "neuron": NeuronRuntime(timeout_s=600),
    }
    with dg.instance_for_test() as instance:
        register_partitions(instance, [PS], [SEED])
        env = {"instance": instance, "resources": resources, "params_dir": params_dir,
               "storage": resources["storage"], "key": str(run_partition_key(PS, SEED))}
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
    assert {"bmtk_id", "x", "type", "sec_index", "distance", "coord_x", "diam",
            "length"} <= set(seg.columns)
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
    assert summary["input_spikes"]["exc_stim"]["spike_count"] == (
        env["first"]["exc_raster"]["n_exc_spikes"]
    )


def test_params_file_observation_records_the_file_hash(env):
    # selecting an observable source asset runs its observation
    res = dg.materialize(
        list(defs.assets), selection=["params_file"], instance=env["instance"],
        resources=env["resources"],
    )
    assert res.success
    obs = [e for e in res.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    versions = {
        e.event_specific_data.asset_observation.partition:
        e.event_specific_data.asset_observation.tags["dagster/data_version"]
        for e in obs
    }
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
