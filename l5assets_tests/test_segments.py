"""Segments table: columns and types, geometry sanity, determinism, and BMTK's own sec_id.

The BMTK comparison builds the cell through BioNet's machinery (NetworkBuilder -> SONATA ->
BioNetwork.build_nodes with our registered cell-model hook) in a subprocess, so BMTK's global
state (gids, caches) never leaks into this process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from l5assets.cell.builder import build_cell
from l5assets.cell.segments import COLUMNS, build_segments_table, segments_table

EXPECTED_DTYPES = {
    "bmtk_id": "int64",
    "x": "float64",
    "sec_index": "int64",
    "distance": "float64",
    "coord_x": "float64",
    "coord_y": "float64",
    "coord_z": "float64",
    "diam": "float64",
    "length": "float64",
}


@pytest.fixture(scope="module")
def cell():
    return build_cell("L5PC_bbp", None, 5.0)


@pytest.fixture(scope="module")
def table(cell):
    return segments_table(cell)


def test_columns_and_types(table, cell):
    assert tuple(table.columns) == COLUMNS
    for col, dt in EXPECTED_DTYPES.items():
        assert str(table[col].dtype) == dt, col
    assert pd.api.types.is_string_dtype(table["type"])
    assert len(table) == cell.nseg_total
    counts = table["type"].value_counts().to_dict()
    assert counts == {
        kind: sum(sec.nseg for sec in getattr(cell, kind))
        for kind in ("soma", "dend", "apic", "axon")
    }
    assert counts == {"soma": 5, "dend": 832, "apic": 1964, "axon": 14}  # C060114A7, dL 5


def test_rows_follow_sections(table, cell):
    for bmtk_id, sec in enumerate(cell.all):
        rows = table[table["bmtk_id"] == bmtk_id]
        kind = cell.section_type(sec)
        assert (rows["type"] == kind).all()
        assert (rows["sec_index"] == getattr(cell, kind).index(sec)).all()
        np.testing.assert_allclose(rows["x"], [seg.x for seg in sec])
        np.testing.assert_allclose(rows["length"] * sec.nseg, sec.L)
    assert table["bmtk_id"].is_monotonic_increasing
    assert (table["x"] > 0).all() and (table["x"] < 1).all()
    assert (table["diam"] > 0).all()


def test_distance_is_monotonic_along_sections_and_away_from_soma(table, cell):
    from neuron import h

    for _, rows in table.groupby("bmtk_id"):
        assert rows["distance"].is_monotonic_increasing
        assert (np.diff(rows["distance"].to_numpy()) > 0).all() or len(rows) == 1
    soma = table[table["type"] == "soma"]
    # origin soma(0) (BMTK's convention): the soma's segments sit at x * L
    np.testing.assert_allclose(soma["distance"], soma["x"] * cell.soma[0].L)
    # a child's first segment is farther than the point of the parent it hangs from
    origin = cell.soma[0](0)
    for sec in cell.all[1:]:
        first = table[table["bmtk_id"] == cell.all.index(sec)].iloc[0]
        assert first["distance"] > h.distance(origin, sec.parentseg())
    assert 1000 < table["distance"].max() < 2000  # a thick-tufted L5 PC is 1-2 mm tall
    assert table.loc[table["type"] == "apic", "distance"].max() == table["distance"].max()


def test_coordinates_centre_the_soma(table):
    soma = table[table["type"] == "soma"][["coord_x", "coord_y", "coord_z"]].to_numpy()
    assert np.linalg.norm(soma.mean(axis=0)) < 1.0
    centre = table[(table["type"] == "soma") & np.isclose(table["x"], 0.5)]
    assert np.linalg.norm(centre[["coord_x", "coord_y", "coord_z"]].to_numpy()) < 2.0
    # straight-line distance never exceeds the path distance (plus the soma's half length)
    r = np.linalg.norm(table[["coord_x", "coord_y", "coord_z"]].to_numpy(), axis=1)
    assert (r <= table["distance"] + 20.0).all()


def test_build_segments_table_is_deterministic(table):
    again = build_segments_table("L5PC_bbp", None, 5.0)
    pd.testing.assert_frame_equal(again, table)


BMTK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np
    from bmtk.builder import NetworkBuilder
    from l5assets import paths
    from l5assets.cell import bmtk_hook
    from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms
    from l5assets.cell.segments import segments_table

    out = Path(sys.argv[1])
    net = NetworkBuilder("biophysical")
    net.add_nodes(N=1, pop_name="Pyrc", model_type="biophysical",
                  model_template=bmtk_hook.MODEL_TEMPLATE,
                  dynamics_params="L5PC_bbp.json", morphology=None)
    net.build()
    net.save_nodes(output_dir=str(out / "network"))
    cfg = {
        "run": {"tstop": 1.0, "dt": 0.1, "dL": 5.0, "spike_threshold": -10.0},
        "conditions": {"celsius": 34.0, "v_init": -65.0},
        "components": {"biophysical_neuron_models_dir": str(paths.cells_dir())},
        "output": {"output_dir": str(out / "output"), "log_file": "log.txt"},
        "networks": {"nodes": [{
            "nodes_file": str(out / "network/biophysical_nodes.h5"),
            "node_types_file": str(out / "network/biophysical_node_types.csv")}]},
    }
    (out / "config.json").write_text(json.dumps(cfg))
    load_mechanisms(compile_mechanisms())
    bmtk_hook.register()
    from bmtk.simulator import bionet
    conf = bionet.Config.from_json(str(out / "config.json"), validate=True)
    conf.build_env()
    graph = bionet.BioNetwork.from_config(conf)
    graph.build_nodes()
    bcell = graph.get_cell_gid(0)
    props = bcell.morphology.seg_props
    coords = bcell.morphology.seg_coords.p05
    ours = segments_table(bcell.hobj)
    ours.to_parquet(out / "ours.parquet")
    np.savez(out / "bmtk.npz", sec_id=props.sec_id, x=props.x, dist=props.dist,
             length=props.length, coords=coords,
             names=np.array([s.name() for s in bcell.get_sections()]))
    """
)


def test_bmtk_id_is_bmtks_sec_id(tmp_path, table):
    proc = subprocess.run(
        [sys.executable, "-c", BMTK_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ours = pd.read_parquet(tmp_path / "ours.parquet")
    bm = np.load(tmp_path / "bmtk.npz")
    # the cell BMTK built through our hook is the same cell as build_cell's
    pd.testing.assert_frame_equal(ours, table)
    np.testing.assert_array_equal(ours["bmtk_id"].to_numpy(), bm["sec_id"])
    np.testing.assert_array_equal(ours["x"].to_numpy(), bm["x"])
    np.testing.assert_allclose(ours["distance"].to_numpy(), bm["dist"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours["length"].to_numpy(), bm["length"], rtol=0, atol=1e-9)
    ours_xyz = ours[["coord_x", "coord_y", "coord_z"]].to_numpy().T
    np.testing.assert_allclose(ours_xyz, bm["coords"], rtol=0, atol=1e-6)
    # BMTK's section names carry the type/index our table reports
    first = ours.groupby("bmtk_id").first()
    names = [f"{t}[{i}]" for t, i in zip(first["type"], first["sec_index"], strict=True)]
    assert [n.split(".")[-1] for n in bm["names"]] == names
