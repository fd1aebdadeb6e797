"""The project's own driver (engine `neuron`) against BMTK BioNet (engine `bionet`), on the
small real network of test_simulation.py, each engine in its own runner subprocess; and the
driver's SONATA files read by BMTK's readers and by libsonata 0.2.

What "identical" means here: spike times (float64) equal, the synapse table equal (every
synapse on the same segment, same W, sid, delay, point process), the hot-zone V equal; the
soma report of the driver is float32 (SONATA's type, the one libsonata reads) and equals
BioNet's float64 report rounded to float32.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from test_simulation import _runner, build_small_network

from l5assets.science.spikes import read_sonata_spikes
from l5assets.simulation.summary import read_soma_trace

ENGINES = ("bionet", "neuron")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("driver")
    params, groups, net, trains, spike_files, cfg = build_small_network(tmp)
    outs = {e: tmp / f"out_{e}" for e in ENGINES}
    procs = {e: _runner(cfg.config, outs[e], "--engine", e) for e in ENGINES}  # side by side
    results = {}
    for e, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"engine {e} failed:\n{stderr[-4000:]}"
        results[e] = json.loads(stdout.strip().splitlines()[-1])
    for e in ENGINES:  # the figures for the record (pytest -s shows them)
        w = results[e]["wall_seconds"]
        print(f"engine {e}: {results[e]['spike_count']} spikes, wall {w}")
    return params, net, trains, outs, results


def test_same_spikes(runs):
    params, net, trains, outs, results = runs
    spikes = {e: read_sonata_spikes(outs[e] / "spikes.h5")["biophysical"] for e in ENGINES}
    np.testing.assert_array_equal(spikes["neuron"].timestamps, spikes["bionet"].timestamps)
    np.testing.assert_array_equal(spikes["neuron"].node_ids, spikes["bionet"].node_ids)
    assert results["neuron"]["spike_count"] == results["bionet"]["spike_count"] >= 1


def test_same_soma_and_hot_zone_voltage(runs):
    params, net, trains, outs, results = runs
    t_b, v_b = read_soma_trace(outs["bionet"] / "v_report.h5")
    t_n, v_n = read_soma_trace(outs["neuron"] / "v_report.h5")
    np.testing.assert_array_equal(t_n, t_b)
    assert v_n.size == int(round(params.stop * 1000 / params.dt))
    # the driver's report is float32: BioNet's float64 values rounded to float32, exactly
    np.testing.assert_array_equal(v_n.astype(np.float32), v_b.astype(np.float32))
    assert np.max(np.abs(v_n - v_b)) < 1e-4
    dend = {}
    for e in ENGINES:
        with h5py.File(outs[e] / "dend_v.h5") as f:
            dend[e] = (f["v"][()], dict(f.attrs))
    np.testing.assert_array_equal(dend["neuron"][0], dend["bionet"][0])
    assert dend["neuron"][1] == dend["bionet"][1]


def test_same_synapses(runs):
    params, net, trains, outs, results = runs
    tabs = {e: pd.read_parquet(outs[e] / "synapses.parquet") for e in ENGINES}
    pd.testing.assert_frame_equal(tabs["neuron"], tabs["bionet"], check_exact=True)
    assert len(tabs["neuron"]) == net.counts["total_synapses"]
    # the inhibitory ones were placed by the seeded draw (not all on one segment)
    inh = tabs["neuron"][tabs["neuron"]["source_population"] != "exc_stim"]
    assert inh["segment"].nunique() > 10


def test_same_result_fields(runs):
    params, net, trains, outs, results = runs
    res = {e: json.loads((outs[e] / "result.json").read_text()) for e in ENGINES}
    assert set(res["neuron"]) == set(res["bionet"])
    assert res["neuron"]["engine"] == "neuron" and res["bionet"]["engine"] == "bionet"
    skip = {"engine", "wall_seconds"}
    assert {k: v for k, v in res["neuron"].items() if k not in skip} == {
        k: v for k, v in res["bionet"].items() if k not in skip
    }
    assert res["neuron"]["input_spikes"] == {p: len(t) for p, t in trains.items()}


def test_reports_read_by_bmtk_and_libsonata(runs):
    libsonata = pytest.importorskip("libsonata")
    from bmtk.utils.reports.compartment import CompartmentReport
    from bmtk.utils.reports.spike_trains import SpikeTrains

    params, net, trains, outs, results = runs
    out = outs["neuron"]
    with h5py.File(out / "v_report.h5") as f:
        g = f["report/biophysical"]
        v = g["data"][()]
        m = g["mapping"]
        assert g["data"].compression is None
        for name in ("node_ids", "index_pointers", "element_ids", "element_pos", "time"):
            assert name in m, name
        np.testing.assert_array_equal(m["index_pointers"][()], [0, 1])
        np.testing.assert_array_equal(m["time"][()], [0.0, params.stop * 1000, params.dt])
    with h5py.File(out / "spikes.h5") as f:
        ts = f["spikes/biophysical/timestamps"][()]
        assert f["spikes/biophysical/timestamps"].compression is None

    # libsonata 0.2.x
    rep = libsonata.ElementReportReader(str(out / "v_report.h5"))["biophysical"]
    assert rep.get_node_ids() == [0] and rep.data_units == "mV" and rep.time_units == "ms"
    frame = rep.get()
    np.testing.assert_array_equal(np.asarray(frame.data), v)
    assert [tuple(i) for i in np.asarray(frame.ids)] == [(0, 0)]
    spk = libsonata.SpikeReader(str(out / "spikes.h5"))["biophysical"]
    assert spk.sorting == "by_time"
    np.testing.assert_array_equal([t for _, t in spk.get()], ts)

    # BMTK
    cr = CompartmentReport(str(out / "v_report.h5"), mode="r")
    np.testing.assert_array_equal(
        np.asarray(cr.data(node_id=0, population="biophysical")).reshape(v.shape), v
    )
    assert cr.dt(population="biophysical") == pytest.approx(params.dt)
    df = SpikeTrains.load(str(out / "spikes.h5")).to_dataframe()
    np.testing.assert_array_equal(np.sort(df["timestamps"].to_numpy()), ts)
