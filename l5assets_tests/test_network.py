"""The SONATA network and the BMTK configs, read back with h5py; the network checked against
BMTK's own NetworkBuilder output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from l5assets.network.build import (
    CELL_POP,
    DIST_POP,
    EXC_POP,
    INH_TARGETS,
    PROX_POP,
    build_network,
    draw_inh_nsyns,
)
from l5assets.network.sim_config import write_sim_config
from l5assets.params import load_param_set, validate_params
from l5assets.rng import stage_rng
from l5assets.science.functional_groups import build_functional_groups
from l5assets.science.spikes import SpikeTrains, write_sonata_spikes

QUICK = load_param_set("L5_quick")


def small_params(tmp_path: Path, **over: object):
    """L5_quick scaled down (lengths / 20) so the network has a few hundred synapses."""
    raw = json.loads(json.dumps(dict(QUICK.raw)))
    raw["lengths"] = {"basal_dist": 400, "basal_prox": 60, "apic": 600}
    raw["n_soma_syns"] = 12
    raw["groups"]["cells_per_group"] = 40
    raw["time"]["stop"] = 0.2
    raw.update(over)
    return validate_params(raw, name="small")


def synthetic_segments() -> pd.DataFrame:
    """A toy morphology's segments table (contract columns): soma, 12 basal, 16 apical sections."""
    rows = []
    rows.append(
        dict(
            bmtk_id=0,
            x=0.5,
            type="soma",
            sec_index=0,
            distance=0.0,
            coord_x=0.0,
            coord_y=0.0,
            coord_z=0.0,
            diam=20.0,
            length=20.0,
        )
    )
    bid = 1
    for kind, n_sec, direction in (("dend", 12, -1.0), ("apic", 16, 1.0)):
        for s in range(n_sec):
            nseg = 9
            angle = 2 * np.pi * s / n_sec
            for k in range(nseg):
                x = (k + 0.5) / nseg
                d = 10.0 + 200.0 * x + 15.0 * (s % 3)
                rows.append(
                    dict(
                        bmtk_id=bid,
                        x=x,
                        type=kind,
                        sec_index=s,
                        distance=d,
                        coord_x=d * 0.3 * np.cos(angle),
                        coord_y=direction * d,
                        coord_z=d * 0.3 * np.sin(angle),
                        diam=1.0,
                        length=200.0 / nseg,
                    )
                )
            bid += 1
    return pd.DataFrame(rows)


def _groups(params, seed):
    rng = stage_rng(seed, "functional_groups")
    return build_functional_groups(synthetic_segments(), params, rng)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("net")
    params = small_params(tmp)
    groups = _groups(params, 7)
    files = build_network(tmp / "network", params, groups, 7)
    return params, groups, files


def test_counts_and_locations(built):
    params, groups, files = built
    c = params.counts
    with h5py.File(files.nodes[EXC_POP]) as f:
        assert f[f"nodes/{EXC_POP}/node_id"].shape[0] == c.exc_total == groups.n_cells
    with h5py.File(files.nodes[PROX_POP]) as f:
        assert f[f"nodes/{PROX_POP}/node_id"].shape[0] == c.pv_soma + c.pv_prox
    with h5py.File(files.nodes[DIST_POP]) as f:
        assert f[f"nodes/{DIST_POP}/node_id"].shape[0] == c.som_basal + c.som_apic
    with h5py.File(files.nodes[CELL_POP]) as f:
        assert f[f"nodes/{CELL_POP}/node_id"].shape[0] == 1

    syn = groups.synapses.sort_values("node_id", kind="stable")
    with h5py.File(files.edges[EXC_POP]) as f:
        g = f[f"edges/{EXC_POP}_to_{CELL_POP}"]
        assert g["source_node_id"].shape[0] == len(syn) == files.counts["exc_edges"]
        np.testing.assert_array_equal(g["source_node_id"][()], syn["node_id"].to_numpy())
        np.testing.assert_array_equal(g["target_node_id"][()], 0)
        grp = g[str(int(g["edge_group_id"][0]))]
        idx = g["edge_group_index"][()]
        np.testing.assert_array_equal(grp["sec_id"][()][idx], syn["bmtk_id"].to_numpy())
        np.testing.assert_array_equal(grp["sec_x"][()][idx], syn["x"].to_numpy())
        n_types = np.unique(g["edge_type_id"][()]).size
    assert n_types == len(groups.groups)

    # one edge type per group, PN2PN, weight 1, delay 0.1
    with open(files.edge_types[EXC_POP], newline="") as f:
        rows = list(csv.DictReader(f, delimiter=" "))
    assert len(rows) == len(groups.groups)
    assert {r["dynamics_params"] for r in rows} == {"PN2PN.json"}
    assert {float(r["syn_weight"]) for r in rows} == {1.0}
    assert {float(r["delay"]) for r in rows} == {0.1}

    nsyns = draw_inh_nsyns(params, 7)
    for src in (PROX_POP, DIST_POP):
        with h5py.File(files.edges[src]) as f:
            g = f[f"edges/{src}_to_{CELL_POP}"]
            got = g["0"]["nsyns"][()][g["edge_group_index"][()]]
            want = np.concatenate(
                [nsyns[f"{t.population}/{t.pop_name}"] for t in INH_TARGETS if t.population == src]
            )
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(g["source_node_id"][()], np.arange(want.size))
        with open(files.edge_types[src], newline="") as f:
            rows = list(csv.DictReader(f, delimiter=" "))
        targets = [t for t in INH_TARGETS if t.population == src]
        assert [r["target_sections"] for r in rows] == [
            str(list(t.target_sections)) for t in targets
        ]
        assert [json.loads(r["distance_range"]) for r in rows] == [
            list(t.distance_range) for t in targets
        ]
    pv = params.peri_inh
    all_pv = np.concatenate([nsyns[f"{PROX_POP}/on_soma"], nsyns[f"{PROX_POP}/on_dend"]])
    assert all_pv.min() >= pv.min and all_pv.max() <= pv.max
    assert files.counts["total_synapses"] == len(syn) + sum(int(v.sum()) for v in nsyns.values())


def test_byte_deterministic_across_processes(built, tmp_path):
    """Same inputs -> same bytes, also in a fresh process with another string-hash seed."""
    params, groups, files = built
    again = build_network(tmp_path / "again", params, groups, 7)
    script = (
        "import sys; from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_network import small_params, _groups\n"
        "from l5assets.network.build import build_network\n"
        "p = small_params(Path(sys.argv[1]))\n"
        "build_network(Path(sys.argv[1]) / 'sub', p, _groups(p, 7), 7)\n"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent)],
        check=True,
        env=env,
    )
    for other in (again, None):
        d = other.network_dir if other else tmp_path / "sub"
        for p in files.all_files():
            assert (d / p.name).read_bytes() == p.read_bytes(), p.name


def _attrs(obj: h5py.HLObject) -> dict[str, object]:
    return {k: (np.asarray(v).dtype.str, np.asarray(v).tolist()) for k, v in obj.attrs.items()}


def _h5_contents(path: Path) -> dict[str, object]:
    """Every group's and dataset's attributes (dtype and value), and every dataset's dtype,
    shape, filter and values."""
    with h5py.File(path) as f:
        out: dict[str, object] = {"/": _attrs(f)}

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = (
                    str(obj.dtype),
                    obj.shape,
                    obj.compression,
                    _attrs(obj),
                    obj[()].tolist(),
                )
            else:
                out[name] = _attrs(obj)

        f.visititems(visit)
    return out


SMALL_LENGTHS = {"basal_dist": 400, "basal_prox": 60, "apic": 600}
BMTK_CASES = {
    "seed7": (7, {}, None),
    "seed8": (8, {}, None),
    # no PV+ cells: no prox_inh_stim files
    "no_pv": (3, {"n_soma_syns": 0, "lengths": {**SMALL_LENGTHS, "basal_prox": 0}}, None),
    # no excitatory cells: no exc_stim files
    "no_exc": (4, {"lengths": {"basal_dist": 0, "basal_prox": 60, "apic": 0}}, None),
    # a user morphology: a column of the cell's node type
    "morphology": (5, {}, "/data/cells/cell1.asc"),
}


@pytest.mark.parametrize("case", sorted(BMTK_CASES))
def test_same_network_as_bmtk_builder(tmp_path, case):
    """Our array writer and BMTK's NetworkBuilder (the reference's way) write the same network:
    the same files, every HDF5 dataset with the same dtype, filter, attributes and values, and
    byte-identical types tables; also with a population missing and with a user morphology."""
    seed, over, morphology = BMTK_CASES[case]
    params = small_params(tmp_path, **over)
    groups = _groups(params, seed)
    node = None
    if morphology:
        from l5assets.network.build import cell_node_properties

        node = {**cell_node_properties(params), "morphology": morphology}
    ours = build_network(tmp_path / "ours", params, groups, seed, cell_node=node)
    bmtk = build_network(tmp_path / "bmtk", params, groups, seed, cell_node=node, builder="bmtk")
    assert [p.name for p in ours.all_files()] == [p.name for p in bmtk.all_files()]
    if case == "no_exc":
        assert EXC_POP not in ours.nodes and EXC_POP not in ours.edges
    if case == "no_pv":
        assert PROX_POP not in ours.nodes and PROX_POP not in ours.edges
    if morphology:
        assert morphology in ours.node_types[CELL_POP].read_text()
    for a, b in zip(ours.all_files(), bmtk.all_files(), strict=True):
        if a.suffix == ".h5":
            assert _h5_contents(a) == _h5_contents(b), a.name
        else:
            assert a.read_bytes() == b.read_bytes(), a.name


def test_seed_changes_inhibitory_counts(built):
    params, _, _ = built
    a, b = draw_inh_nsyns(params, 7), draw_inh_nsyns(params, 8)
    assert any(not np.array_equal(a[k], b[k]) for k in a)


def test_sim_config_valid_for_bionet(built, tmp_path):
    from bmtk.simulator import bionet

    params, _, files = built
    spikes = {p: tmp_path / f"{p}.h5" for p in (EXC_POP, PROX_POP, DIST_POP)}
    for pop, path in spikes.items():  # the validator wants the input files to exist
        write_sonata_spikes(path, pop, SpikeTrains(np.array([0, 1]), np.array([5.0, 7.5])))
    cfg = write_sim_config(tmp_path / "cfg", params, files.network_dir, spikes, seed=7)
    conf = bionet.Config.from_json(str(cfg.config))
    assert conf.validate()
    assert conf.tstop == pytest.approx(200.0)
    assert conf.dt == params.dt
    assert conf.v_init == -80.0 and conf.celsius == 34.0
    assert conf.spike_threshold == -10.0
    assert {i["node_set"] for i in conf.inputs.values()} == {EXC_POP, PROX_POP, DIST_POP}
    assert {Path(i["input_file"]).resolve() for i in conf.inputs.values()} == {
        p.resolve() for p in spikes.values()
    }
    assert Path(conf.output_dir) == (tmp_path / "cfg" / "output").resolve()
    assert [r["sections"] for r in conf.reports.values()] == ["soma"]
    assert len(conf.nodes) == 4 and len(conf.edges) == 3
    net_files = {p.resolve() for p in files.all_files()}
    assert {Path(n[k]).resolve() for n in conf.nodes for k in n} | {
        Path(e[k]).resolve() for e in conf.edges for k in e
    } == net_files
    # written deterministically
    again = write_sim_config(tmp_path / "cfg2", params, files.network_dir, spikes, seed=7)
    for a, b in zip(cfg.all_files(), again.all_files(), strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_population_without_nodes(tmp_path):
    """No PV+ cells (basal_prox 0, n_soma_syns 0): no prox files, no prox input in the config."""
    from bmtk.simulator import bionet

    params = small_params(
        tmp_path, n_soma_syns=0, lengths={"basal_dist": 400, "basal_prox": 0, "apic": 600}
    )
    assert params.counts.pv_total == 0
    files = build_network(tmp_path / "net", params, _groups(params, 3), 3)
    assert PROX_POP not in files.nodes and PROX_POP not in files.edges
    assert all(p.exists() for p in files.all_files())
    assert not list((tmp_path / "net").glob(f"{PROX_POP}*"))
    spikes = {p: tmp_path / f"{p}.h5" for p in (EXC_POP, PROX_POP, DIST_POP)}
    for pop, path in spikes.items():
        write_sonata_spikes(path, pop, SpikeTrains.empty())
    cfg = write_sim_config(tmp_path / "cfg", params, files.network_dir, spikes, seed=3)
    conf = bionet.Config.from_json(str(cfg.config))
    assert conf.validate()
    assert {i["node_set"] for i in conf.inputs.values()} == {EXC_POP, DIST_POP}
    assert len(conf.nodes) == 3 and len(conf.edges) == 2


# SPEC 5, hard-coded: where each inhibitory sub-population's synapses may go.
SPEC_INH_TARGETS = {
    PROX_POP: [
        ("on_soma", "PV2PN.json", "['somatic']", [-2000.0, 2000.0]),
        ("on_dend", "PV2PN.json", "['dend']", [0.0, 50.0]),
    ],
    DIST_POP: [
        ("dend", "SOM2PN.json", "['dend']", [50.0, 2000.0]),
        ("apic", "SOM2PN.json", "['apic']", [50.0, 2000.0]),
    ],
}


def test_inhibitory_targets_match_spec(built):
    """PV soma: somatic, any distance; PV proximal: dend 0-50 um; SOM basal: dend 50-2000 um;
    SOM apical: apic 50-2000 um (SPEC 5), read from the written edge-types files."""
    _, _, files = built
    for src, want in SPEC_INH_TARGETS.items():
        with open(files.edge_types[src], newline="") as f:
            rows = list(csv.DictReader(f, delimiter=" "))
        with h5py.File(files.nodes[src]) as f:
            type_ids = f[f"nodes/{src}/node_type_id"][()]
        with open(files.node_types[src], newline="") as f:
            pop_of_type = {
                int(r["node_type_id"]): r["pop_name"] for r in csv.DictReader(f, delimiter=" ")
            }
        # node order: the first sub-population's cells first
        names = [pop_of_type[int(t)] for t in type_ids]
        assert names == sorted(names, key=[w[0] for w in want].index)
        got = [
            (r["dynamics_params"], r["target_sections"], json.loads(r["distance_range"]))
            for r in rows
        ]
        assert got == [(w[1], w[2], w[3]) for w in want]
        assert {r["model_template"] for r in rows} == {"L5GabaSyn"}


def _storage_tree(root: Path, files, params) -> dict[str, Path]:
    """<root>/<param_set>/seed-7/{network,exc_raster,inh_rasters} as the storage lays it out."""
    import shutil

    from l5assets.storage import partition_dir

    net = partition_dir(root, "network", params.name, 7)
    shutil.copytree(files.network_dir, net)
    spikes = {
        EXC_POP: partition_dir(root, "exc_raster", params.name, 7) / f"{EXC_POP}.h5",
        PROX_POP: partition_dir(root, "inh_rasters", params.name, 7) / f"{PROX_POP}.h5",
        DIST_POP: partition_dir(root, "inh_rasters", params.name, 7) / f"{DIST_POP}.h5",
    }
    for pop, path in spikes.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_sonata_spikes(path, pop, SpikeTrains(np.array([0, 1]), np.array([5.0, 7.5])))
    return {"network": net, **spikes}


def test_sim_config_independent_of_storage_root(built, tmp_path):
    """Two storage roots give byte-identical config files; a moved tree still resolves."""
    from bmtk.simulator import bionet

    from l5assets.storage import partition_dir

    params, _, files = built
    written = {}
    for root in (tmp_path / "a", tmp_path / "deeper" / "b"):
        t = _storage_tree(root, files, params)
        cfg_dir = partition_dir(root, "simulation_config", params.name, 7)
        spikes = {p: t[p] for p in (EXC_POP, PROX_POP, DIST_POP)}
        written[root] = write_sim_config(cfg_dir, params, t["network"], spikes, seed=7)
    (a, b) = written.values()
    for fa, fb in zip(a.all_files(), b.all_files(), strict=True):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
        assert str(tmp_path) not in fa.read_text()
    assert str(Path(__file__).resolve().parents[1]) not in a.circuit.read_text()
    # move the whole tree: BMTK still finds every file, in the new place
    moved = tmp_path / "moved"
    (tmp_path / "a").rename(moved)
    cfg = moved / a.config.relative_to(tmp_path / "a")
    conf = bionet.Config.from_json(str(cfg))
    assert conf.validate()
    paths = [Path(i["input_file"]) for i in conf.inputs.values()]
    paths += [Path(n[k]) for n in conf.nodes for k in n]
    paths += [Path(e[k]) for e in conf.edges for k in e]
    assert len(paths) == 3 + 2 * 4 + 2 * 3
    for p in paths:
        assert p.is_file(), p
        assert p.resolve().is_relative_to(moved.resolve()), p
