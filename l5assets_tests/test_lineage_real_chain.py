"""Lineage of the real pipeline: materialize L5_quick seed 1 end to end (NEURON run included),
trace the simulation output back to the params and seed, re-materialize and compare manifests.

Slow (about 1.5 min on 2 cores): run with `pytest -m slow`.
"""

import json
import warnings
from pathlib import Path

import dagster as dg
import pytest

from l5assets.defs.lineage.status import status
from l5assets.lineage.diff import diff
from l5assets.lineage.manifest import MANIFEST_NAME, strip_volatile
from l5assets.lineage.trace import trace
from l5assets.params import load_param_set
from l5assets.rng import all_stage_seeds

warnings.filterwarnings("ignore", category=dg.BetaWarning)

UPSTREAM_OF_SIMULATION = {
    "compiled_mechanisms",
    "segments_table",
    "functional_groups",
    "exc_raster",
    "inh_rasters",
    "network",
    "simulation_config",
    "simulation_outputs",
}
CHEAP = ("functional_groups", "exc_raster", "inh_rasters", "network", "simulation_config")


@pytest.mark.slow
def test_real_chain_trace_and_identical_rematerialization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(tmp_path / "outputs"))
    from l5assets.definitions import defs
    from l5assets.defs.partitions import register_partitions, run_partition_key

    root = tmp_path / "outputs"
    with dg.instance_for_test() as instance:
        register_partitions(instance, ["L5_quick"], [1])
        assert (
            defs.resolve_job_def("cell_job")
            .execute_in_process(partition_key="L5_quick", instance=instance)
            .success
        )
        key = run_partition_key("L5_quick", 1)
        assert (
            defs.resolve_job_def("seed_job")
            .execute_in_process(partition_key=key, instance=instance)
            .success
        )

        seed_dir = root / "L5_quick" / "seed-1"
        spikes = seed_dir / "simulation_outputs" / "spikes.h5"
        d = trace(spikes)
        assert d["consistent"], d["problems"]
        assert d["output"]["matches"]
        assert d["params"]["name"] == "L5_quick"
        assert d["params"]["hash"] == load_param_set("L5_quick").params_hash
        assert d["params"]["file_matches"]
        assert d["seed"] == 1 and d["stage_seeds"] == all_stage_seeds(1)
        assert {n["asset"] for n in d["chain"]} == UPSTREAM_OF_SIMULATION
        assert set(d["code_versions"]) == UPSTREAM_OF_SIMULATION
        assert d["versions"]["neuron"] and d["components"]["mechanisms"]["files"]

        rows = status(instance, defs, root=root, param_sets=["L5_quick"])
        row = next(r for r in rows if r["seed"] == 1)
        assert row["state"] == "fresh", row
        assert set(row["dagster"].values()) == {"fresh"}

        before = {a: json.loads((seed_dir / a / MANIFEST_NAME).read_text()) for a in CHEAP}
        saved = tmp_path / "saved"
        saved.mkdir()
        (saved / MANIFEST_NAME).write_text(json.dumps(before["network"]))
        assert (
            defs.resolve_job_def("seed_job")
            .execute_in_process(
                partition_key=key,
                instance=instance,
                asset_selection=[dg.AssetKey(a) for a in CHEAP],
            )
            .success
        )
        for a in CHEAP:
            after = json.loads((seed_dir / a / MANIFEST_NAME).read_text())
            assert strip_volatile(after) == strip_volatile(before[a]), a
            assert after["run"]["run_id"] != before[a]["run"]["run_id"]
        assert diff(saved / MANIFEST_NAME, seed_dir / "network")["identical"]
        # identical bytes re-written upstream: the simulation is still fresh
        row = next(
            r for r in status(instance, defs, root=root, param_sets=["L5_quick"]) if r["seed"] == 1
        )
        assert row["state"] == "fresh", row["reasons"]
