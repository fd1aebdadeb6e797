"""Lineage without Dagster: manifests, trace, diff and status on real files.

A small chain of real files (segments -> functional groups -> excitatory raster (SONATA HDF5)
-> simulation output) is written by this module's fixture the way the assets do: each step
reads its upstream files, draws from its own per-stage RNG stream and records a manifest.
Components (mechanisms, biophysics, morphology) and param sets live in a temporary folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from conftest import lineage_workspace

from l5assets import paths, storage
from l5assets.lineage.diff import diff, format_diff
from l5assets.lineage.manifest import (
    MANIFEST_NAME,
    canonical_dumps,
    read_manifest,
    resolve_recorded_path,
    strip_volatile,
    write_manifest,
)
from l5assets.lineage.status import format_status, status
from l5assets.lineage.trace import TraceError, format_trace, trace
from l5assets.params import load_param_set
from l5assets.rng import all_stage_seeds, stage_rng

SHARED = ("compiled_mechanisms", "segments_table")
SEEDED = ("functional_groups", "exc_raster", "simulation_outputs")
CODE_VERSIONS = {
    "segments_table": "1",
    "functional_groups": "1",
    "exc_raster": "1",
    "simulation_outputs": "1",
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Temporary components, two param sets (A, B: copies of L5_quick) and a storage root."""
    comp, pdir, root, raw = lineage_workspace(
        tmp_path,
        monkeypatch,
        cells={"L5PC_bbp": '{"soma": {"g_pas": 3.38e-05}}\n'},
        mods={"Ih": "NEURON { SUFFIX Ih }\n", "L5ExcSyn": "NEURON { POINT_PROCESS L5ExcSyn }\n"},
        param_sets={"A": "L5PC_bbp", "B": "L5PC_bbp"},
    )
    morph = tmp_path / "cell.asc"
    return SimpleNamespace(comp=comp, pdir=pdir, root=root, raw=raw, morph=morph)


def edit_params(env: SimpleNamespace, name: str, **changes) -> None:
    """Rewrite a params file with some top-level / dotted fields changed."""
    path = env.pdir / f"{name}.json"
    raw = json.loads(path.read_text())
    for dotted, value in changes.items():
        d = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            d = d[p]
        d[leaf] = value
    path.write_text(json.dumps(raw, indent=2))


def build_chain(root: Path, name: str, seed: int, groups_shift: int = 0) -> dict[str, Path]:
    """Materialize the fixture chain for one partition; returns each step's main file."""
    params = load_param_set(name)
    pfile = paths.params_dir() / f"{name}.json"
    out: dict[str, Path] = {}

    d = storage.partition_dir(root, "compiled_mechanisms", name)
    rec = d / "mechanisms.json"
    storage.atomic_write_text(rec, json.dumps({"mod_hash": "x"}))
    write_manifest(
        d,
        asset="compiled_mechanisms",
        params=params,
        seed=None,
        code_version="1",
        outputs=[rec],
        inputs={},
    )

    d = storage.partition_dir(root, "segments_table", name)
    seg = d / "segments.npy"
    storage.atomic_write_bytes(seg, np.arange(0, 1000, params.dL).tobytes())
    write_manifest(
        d,
        asset="segments_table",
        params=params,
        seed=None,
        code_version=CODE_VERSIONS["segments_table"],
        outputs=[seg],
        inputs={"params_file": pfile},
        extra={"wall_time_s": 0.01},
    )
    out["segments_table"] = seg

    d = storage.partition_dir(root, "functional_groups", name, seed)
    segments = np.frombuffer(seg.read_bytes())
    rng = stage_rng(seed, "functional_groups")
    groups = rng.choice(segments, size=50) + groups_shift
    fg = d / "groups.npy"
    storage.atomic_write_bytes(fg, groups.tobytes())
    write_manifest(
        d,
        asset="functional_groups",
        params=params,
        seed=seed,
        code_version=CODE_VERSIONS["functional_groups"],
        outputs=[fg],
        inputs={"segments": seg},
        extra={"counts": {"groups": 50}},
    )
    out["functional_groups"] = fg

    d = storage.partition_dir(root, "exc_raster", name, seed)
    rng = stage_rng(seed, "exc_raster")
    g = np.frombuffer(fg.read_bytes())
    times = np.sort(rng.uniform(0, params.stop * 1000, size=g.size * 3))
    ids = rng.integers(0, g.size, size=times.size)
    spikes = d / "exc_stim.h5"
    with storage.atomic_path(spikes) as tmp, h5py.File(tmp, "w") as f:
        grp = f.create_group("spikes/exc_stim")
        grp.attrs["sorting"] = "by_time"
        grp.create_dataset("timestamps", data=times).attrs["units"] = "ms"
        grp.create_dataset("node_ids", data=ids)
    write_manifest(
        d,
        asset="exc_raster",
        params=params,
        seed=seed,
        code_version=CODE_VERSIONS["exc_raster"],
        outputs=[spikes],
        inputs={"functional_groups": fg},
        extra={},
    )
    out["exc_raster"] = spikes

    d = storage.partition_dir(root, "simulation_outputs", name, seed)
    sim_dir = d / "output"
    with storage.atomic_dir(sim_dir) as tmp:
        with h5py.File(spikes) as f:
            t = f["spikes/exc_stim/timestamps"][:]
        with h5py.File(tmp / "spikes.h5", "w") as f:
            f.create_dataset("spikes/biophysical/timestamps", data=t[::10])
        (tmp / "log.txt").write_text("ok\n")
    write_manifest(
        d,
        asset="simulation_outputs",
        params=params,
        seed=seed,
        code_version=CODE_VERSIONS["simulation_outputs"],
        outputs=[sim_dir],
        inputs={"exc_raster": spikes, "segments": seg},
        extra={"engine": {"engine": "neuron", "threads": 1}},
    )
    out["simulation_outputs"] = sim_dir / "spikes.h5"
    return out


def test_manifest_records_params_seed_code_components_and_inputs(env: SimpleNamespace) -> None:
    files = build_chain(env.root, "A", 7)
    mpath = files["simulation_outputs"].parent.parent / MANIFEST_NAME
    text = mpath.read_text()
    m = json.loads(text)
    assert text == canonical_dumps(m)  # sorted keys, canonical layout
    params = load_param_set("A")
    assert m["asset"] == "simulation_outputs"
    assert m["params"]["name"] == "A"
    assert m["params"]["hash"] == params.params_hash
    assert m["params"]["values"] == json.loads(json.dumps(params.raw))
    assert m["params"]["counts"]["exc_basal"] == 2008
    assert m["params"]["file"]["sha256"] == storage.file_sha256(env.pdir / "A.json")
    assert m["params"]["file"]["matches_params"] is True
    assert m["seed"] == 7 and m["stage_seeds"] == all_stage_seeds(7)
    assert m["code_versions"] == CODE_VERSIONS  # this asset and every upstream one
    assert m["engine"] == {"dt": 0.1, "engine": "neuron", "threads": 1}
    for lib in ("neuron", "bmtk", "numpy", "scipy", "dagster"):
        assert m["versions"][lib]
    assert m["code"]["package_version"]
    mech = m["components"]["mechanisms"]
    assert set(mech["files"]) == {"Ih.mod", "L5ExcSyn.mod"}
    assert mech["files"]["Ih.mod"] == storage.file_sha256(env.comp / "mechanisms" / "Ih.mod")
    assert m["components"]["biophysics"]["sha256"] == storage.file_sha256(
        env.comp / "cells" / "L5PC_bbp.json"
    )
    assert m["components"]["morphology"]["sha256"] == storage.file_sha256(env.morph)
    inp = m["inputs"]["exc_raster"]
    assert inp["sha256"] == storage.file_sha256(files["exc_raster"])
    assert inp["manifest"]["asset"] == "exc_raster"
    assert (
        resolve_recorded_path(inp["manifest"], mpath.parent)
        == (files["exc_raster"].parent / MANIFEST_NAME).resolve()
    )
    assert m["outputs"][0]["kind"] == "dir" and m["outputs"][0]["n_files"] == 2
    assert m["run"]["host"] and "written_at" in m["run"]
    # atomic write: nothing but the outputs and the manifest in the folder
    assert sorted(p.name for p in mpath.parent.iterdir()) == [MANIFEST_NAME, "output"]


def test_same_partition_twice_gives_identical_manifests_except_time_and_host(
    env: SimpleNamespace,
) -> None:
    first = build_chain(env.root, "A", 3)
    before = {a: read_manifest(p) for a, p in first.items()}
    second = build_chain(env.root, "A", 3)
    after = {a: read_manifest(p) for a, p in second.items()}
    for asset in before:
        assert strip_volatile(before[asset]) == strip_volatile(after[asset]), asset
        assert set(before[asset]) - set(strip_volatile(before[asset])) == {"run"}
    # and the outputs themselves are byte-identical
    assert (
        after["exc_raster"]["outputs"][0]["sha256"] == before["exc_raster"]["outputs"][0]["sha256"]
    )


def test_trace_from_simulation_output_to_params_and_seed(env: SimpleNamespace) -> None:
    syn_dir = env.comp / "synaptic_models"
    syn_dir.mkdir(exist_ok=True)
    (syn_dir / "PN2PN.json").write_text('{"level_of_detail": "exp2syn"}\n')
    (syn_dir / "PV2PN.json").write_text('{"level_of_detail": "exp2syn", "tau1": 1}\n')
    files = build_chain(env.root, "A", 11)
    build_chain(env.root, "B", 11)
    d = trace(files["simulation_outputs"])
    json.dumps(d)  # machine-readable as is
    assert d["consistent"], d["problems"]
    assert d["asset"] == "simulation_outputs"
    assert d["output"]["matches"]
    assert [n["asset"] for n in d["chain"]] == [
        "simulation_outputs",
        "exc_raster",
        "segments_table",
        "functional_groups",
    ]
    assert d["params"]["name"] == "A"
    assert d["params"]["hash"] == load_param_set("A").params_hash
    assert Path(d["params"]["file"]) == env.pdir / "A.json"
    assert d["params"]["file_matches"]
    assert d["params"]["values"]["inh_shift"] == 2
    assert d["seed"] == 11 and d["stage_seeds"] == all_stage_seeds(11)
    assert d["code_versions"] == CODE_VERSIONS
    text = format_trace(d)
    assert str(env.pdir / "A.json") in text and "seed: 11" in text
    assert "<- functional_groups" in text and "consistent" in text
    # the README promises the synaptic model hashes among the component hashes
    syn = d["components"]["synaptic_models"]
    assert f"synaptic models: {syn['sha256'][:12]}" in text
    assert sorted(syn["files"]) == ["PN2PN.json", "PV2PN.json"]
    for name, digest in syn["files"].items():
        assert f"{name} {digest[:12]}" in text
    # any file of the chain works, so does the manifest or the folder
    assert trace(files["functional_groups"].parent)["chain"][0]["asset"] == "functional_groups"
    with pytest.raises(TraceError):
        trace(env.pdir / "A.json")


def test_trace_flags_edited_params_and_rewritten_inputs(env: SimpleNamespace) -> None:
    files = build_chain(env.root, "A", 5)
    edit_params(env, "A", inh_shift=4)
    files["functional_groups"].write_bytes(b"tampered")
    d = trace(files["simulation_outputs"])
    assert not d["consistent"]
    assert not d["params"]["file_matches"]
    joined = "\n".join(d["problems"])
    assert "edited since" in joined
    assert "input 'functional_groups' of exc_raster" in joined
    assert "EDITED SINCE" in format_trace(d)


def test_trace_still_works_after_moving_the_storage_tree(env: SimpleNamespace) -> None:
    files = build_chain(env.root, "A", 2)
    moved = env.root.parent / "archive"
    shutil.move(env.root, moved)
    sim = moved / files["simulation_outputs"].relative_to(env.root)
    d = trace(sim)
    assert d["consistent"], d["problems"]
    assert len(d["chain"]) == 4
    assert all(str(moved) in n["manifest"] for n in d["chain"])


def test_diff_names_the_changed_field(env: SimpleNamespace) -> None:
    shutil.copy(env.pdir / "A.json", env.pdir / "C.json")
    edit_params(env, "C", inh_frs__proximal__m=20.0)
    a = build_chain(env.root, "A", 1)["simulation_outputs"]
    c = build_chain(env.root, "C", 1)["simulation_outputs"]
    d = diff(a, c)
    assert not d["identical"]
    assert d["summary"]["params"] == [
        "params.hash",
        "params.name",
        "params.values.inh_frs.proximal.m",
    ]
    assert d["changed"]["params"]["params.values.inh_frs.proximal.m"] == {"a": 16.9, "b": 20.0}
    assert "seed" not in d["summary"] and "code" not in d["summary"]
    assert "params.values.inh_frs.proximal.m: 16.9 -> 20.0" in format_diff(d)

    a2 = build_chain(env.root, "A", 2)["simulation_outputs"]
    d = diff(a, a2)
    assert "params" not in d["summary"]
    assert "seed" in d["summary"] and "stage_seeds.exc_raster" in d["summary"]["seed"]
    assert "inputs" in d["summary"]  # different upstream files were read

    # same partition re-materialized: identical provenance
    keep = env.root.parent / "keep"
    keep.mkdir()
    shutil.copy(a.parent.parent / MANIFEST_NAME, keep / MANIFEST_NAME)
    build_chain(env.root, "A", 1)
    d = diff(keep / MANIFEST_NAME, a)
    assert d["identical"], d["summary"]
    assert "identical provenance" in format_diff(d)


def test_diff_prints_whole_values() -> None:
    """A hash cut short with "..." can be neither compared nor searched for."""
    long_a, long_b = "a" * 64, "b" * 64
    d = {
        "a": "A",
        "b": "B",
        "identical": False,
        "changed": {"components": {"components.mechanisms.sha256": {"a": long_a, "b": long_b}}},
        "summary": {"components": ["components.mechanisms.sha256"]},
    }
    text = format_diff(d)
    assert f"'{long_a}' -> '{long_b}'" in text and "..." not in text


def test_diff_reports_code_and_component_changes(env: SimpleNamespace) -> None:
    a = build_chain(env.root, "A", 1)["simulation_outputs"]
    keep = env.root.parent / "keep"
    shutil.copytree(env.root, keep)
    (env.comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih } : edited\n")
    CODE_VERSIONS["exc_raster"] = "2"
    try:
        b = build_chain(env.root, "A", 1)["simulation_outputs"]
    finally:
        CODE_VERSIONS["exc_raster"] = "1"
    d = diff(keep / a.relative_to(env.root), b)
    assert "code_versions.exc_raster" in d["summary"]["code"]
    assert "components.mechanisms.files.Ih.mod" in d["summary"]["components"]
    assert "params" not in d["summary"]


def test_status_edit_one_param_set_makes_only_its_partitions_stale(
    env: SimpleNamespace,
) -> None:
    for name, seed in (("A", 1), ("A", 2), ("B", 1)):
        build_chain(env.root, name, seed)

    def rows() -> dict[tuple[str, int | None], dict]:
        got = status(
            root=env.root,
            params_dir=env.pdir,
            code_versions=CODE_VERSIONS,
            shared_assets=SHARED,
            seed_assets=SEEDED,
        )
        return {(r["param_set"], r["seed"]): r for r in got}

    before = rows()
    assert {k: r["state"] for k, r in before.items()} == {
        ("A", 1): "fresh",
        ("A", 2): "fresh",
        ("B", 1): "fresh",
    }

    edit_params(env, "A", inh_shift=3)
    after = rows()
    assert after[("B", 1)]["state"] == "fresh"
    for key in (("A", 1), ("A", 2)):
        r = after[key]
        assert r["state"] == "stale"
        assert {x["kind"] for x in r["reasons"]} == {"params"}
        assert all(x["fields"] == ["inh_shift"] for x in r["reasons"])
        # every asset but the compiled mechanisms, which do not read the params (as in the UI)
        assert {a for a, st in r["assets"].items() if st != "stale"} == {"compiled_mechanisms"}
    text = format_status(list(after.values()))
    assert "params changed: inh_shift" in text

    # a seed registered only as a folder with nothing in it is missing, not fresh
    (env.root / "B" / "seed-9").mkdir()
    assert rows()[("B", 9)]["state"] == "missing"


def test_status_flags_mechanisms_biophysics_code_version_and_upstream(
    env: SimpleNamespace,
) -> None:
    build_chain(env.root, "A", 1)
    build_chain(env.root, "B", 1)

    def reasons(code_versions=CODE_VERSIONS) -> dict[str, set[str]]:
        got = status(
            root=env.root,
            params_dir=env.pdir,
            code_versions=code_versions,
            shared_assets=SHARED,
            seed_assets=SEEDED,
        )
        return {r["param_set"]: {x["kind"] for x in r["reasons"]} for r in got}

    assert reasons(dict(CODE_VERSIONS, exc_raster="2")) == {
        "A": {"code_version"},
        "B": {"code_version"},
    }
    (env.comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih } : new\n")
    assert reasons() == {"A": {"mechanisms"}, "B": {"mechanisms"}}
    # only the asset that reads the .mod files is stale (the UI flags the same one)
    rows = status(
        root=env.root,
        params_dir=env.pdir,
        code_versions=CODE_VERSIONS,
        shared_assets=SHARED,
        seed_assets=SEEDED,
    )
    assert {x["asset"] for r in rows for x in r["reasons"]} == {"compiled_mechanisms"}
    # the mechanism folder in use now decides, not the one the manifest recorded
    other = env.comp.parent / "other_mechanisms"
    other.mkdir()
    (other / "Ih.mod").write_text("NEURON { SUFFIX Ih }\n")
    (other / "L5ExcSyn.mod").write_text("NEURON { POINT_PROCESS L5ExcSyn }\n")
    assert {
        r["param_set"]: {x["kind"] for x in r["reasons"]}
        for r in status(
            root=env.root,
            params_dir=env.pdir,
            code_versions=CODE_VERSIONS,
            shared_assets=SHARED,
            seed_assets=SEEDED,
            mod_dir=other,
        )
    } == {"A": set(), "B": set()}
    (env.comp / "mechanisms" / "Ih.mod").write_text("NEURON { SUFFIX Ih }\n")
    (env.comp / "cells" / "L5PC_bbp.json").write_text('{"soma": {"g_pas": 4e-05}}\n')
    assert reasons() == {"A": {"biophysics"}, "B": {"biophysics"}}
    (env.comp / "cells" / "L5PC_bbp.json").write_text('{"soma": {"g_pas": 3.38e-05}}\n')
    assert reasons() == {"A": set(), "B": set()}

    # functional_groups of A|1 re-made differently: everything downstream of it is stale
    build_chain(env.root, "A", 1)  # identical re-run: still fresh
    assert reasons() == {"A": set(), "B": set()}
    params = load_param_set("A")
    fg_dir = storage.partition_dir(env.root, "functional_groups", "A", 1)
    (fg_dir / "groups.npy").write_bytes(b"other groups")
    write_manifest(
        fg_dir,
        asset="functional_groups",
        params=params,
        seed=1,
        code_version="1",
        outputs=[fg_dir / "groups.npy"],
        inputs={
            "segments": storage.partition_dir(env.root, "segments_table", "A") / "segments.npy"
        },
        extra={},
    )
    got = {
        r["param_set"]: r
        for r in status(
            root=env.root,
            params_dir=env.pdir,
            code_versions=CODE_VERSIONS,
            shared_assets=SHARED,
            seed_assets=SEEDED,
        )
    }
    assert got["B"]["state"] == "fresh"
    assert got["A"]["state"] == "stale"
    stale_assets = {x["asset"] for x in got["A"]["reasons"]}
    assert stale_assets == {"exc_raster"}  # simulation_outputs read exc_raster, unchanged
    assert got["A"]["reasons"][0]["kind"] == "upstream"
