"""The segments table is cached per cell model: a second param set with the same cell (same
.mod files, biophysics, morphology, dL) gets the table without a NEURON run, byte for byte;
another dL is a miss. Real NEURON (the segments worker) on a small param set."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dagster as dg
import pytest
from conftest import copy_compiled_mechanisms, small_params

from l5assets import graph as G
from l5assets.definitions import defs
from l5assets.defs.partitions import register_partitions
from l5assets.defs.resources import StorageResource
from l5assets.layout import SEGMENTS_FILE
from l5assets.storage import file_sha256

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def test_segments_table_cached_per_cell_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    params_dir, cache = tmp_path / "params", tmp_path / "cache"
    params_dir.mkdir()
    copy_compiled_mechanisms(cache)
    for name, dl in (("T_a", None), ("T_b", None), ("T_c", 10.0)):
        raw = small_params()
        if dl is not None:
            raw["dL"] = dl
        (params_dir / f"{name}.json").write_text(json.dumps(raw))
    monkeypatch.setenv("L5ASSETS_CACHE_DIR", str(cache))
    storage = StorageResource(root=str(tmp_path / "out"), params_dir=str(params_dir))
    resources = {**defs.resources, "storage": storage}
    out = {}
    with dg.instance_for_test() as instance:
        register_partitions(instance, ["T_a", "T_b", "T_c"])
        for name in ("T_a", "T_b", "T_c"):
            res = dg.materialize(
                list(defs.assets),
                selection=list(G.SHARED_ASSETS),
                partition_key=name,
                instance=instance,
                resources=resources,
            )
            mat = [
                m
                for m in res.asset_materializations_for_node(G.SEGMENTS_TABLE)
                if m.asset_key.to_user_string() == G.SEGMENTS_TABLE
            ][0]
            table = storage.partition_dir(G.SEGMENTS_TABLE, name) / SEGMENTS_FILE
            out[name] = (mat.metadata["segments_cache"].value, file_sha256(table))
    assert out["T_a"][0] == "miss" and out["T_b"][0] == "hit" and out["T_c"][0] == "miss"
    assert out["T_a"][1] == out["T_b"][1] != out["T_c"][1]
    assert len(list((cache / "segments").glob("*.parquet"))) == 2
