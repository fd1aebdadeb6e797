"""A real BMTK BioNet + NEURON run of the L5 cell on a small network, through the runner CLI.

The network uses the real cell's segments table (built by NEURON in a subprocess), real
functional groups, rasters and BMTK files; the runner runs in subprocesses (one NEURON each):
sharing on, the same again (determinism), and sharing off (same soma voltage).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from l5assets.network.build import DIST_POP, EXC_POP, PROX_POP, build_network
from l5assets.network.sim_config import write_sim_config
from l5assets.params import load_param_set, validate_params
from l5assets.rng import stage_rng
from l5assets.science.exc_raster import exc_raster
from l5assets.science.functional_groups import build_functional_groups
from l5assets.science.inh_raster import inh_profile, inh_raster
from l5assets.science.spikes import read_sonata_spikes, write_sonata_spikes
from l5assets.simulation.summary import read_soma_trace, summarize

SEED = 5
SEGMENTS_SCRIPT = (
    "import sys\n"
    "from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms\n"
    "load_mechanisms(compile_mechanisms())\n"
    "from l5assets.cell.segments import build_segments_table\n"
    "build_segments_table(sys.argv[1], None, float(sys.argv[2])).to_parquet(sys.argv[3])\n"
)


def small_params():
    """L5_quick with lengths / ~15 and 0.2 s: ~2,400 synapses, a few seconds of NEURON."""
    raw = json.loads(json.dumps(dict(load_param_set("L5_quick").raw)))
    raw["lengths"] = {"basal_dist": 400, "basal_prox": 60, "apic": 600}
    raw["n_soma_syns"] = 12
    raw["groups"]["cells_per_group"] = 40
    raw["time"]["stop"] = 0.2
    return validate_params(raw, name="small")


def _runner(config: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "l5assets.simulation.runner",
        str(config),
        "--output-dir",
        str(out),
        *flags,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def build_small_network(tmp: Path) -> tuple:
    """The small network of `small_params` (seed SEED) in `tmp`, with its rasters and config.

    Returns (params, groups, network files, trains, spike files, config files). Also used by
    test_driver.py.
    """
    params = small_params()
    seg_file = tmp / "segments.parquet"
    subprocess.run(
        [sys.executable, "-c", SEGMENTS_SCRIPT, params.biophysics, str(params.dL), str(seg_file)],
        check=True,
        capture_output=True,
    )
    segments = pd.read_parquet(seg_file)
    groups = build_functional_groups(segments, params, stage_rng(SEED, "functional_groups"))
    net = build_network(tmp / "network", params, groups, SEED)
    exc = exc_raster(groups.groups, params, stage_rng(SEED, "exc_raster"))
    profile = inh_profile(exc, int(round(params.stop * 1000)), params.inh_shift)
    c = params.counts
    trains = {
        EXC_POP: exc,
        PROX_POP: inh_raster(
            c.pv_total,
            params.proximal,
            profile,
            params.stop,
            stage_rng(SEED, "inh_raster_proximal"),
        ),
        DIST_POP: inh_raster(
            c.som_total, params.distal, profile, params.stop, stage_rng(SEED, "inh_raster_distal")
        ),
    }
    spike_files = {p: write_sonata_spikes(tmp / f"{p}.h5", p, t) for p, t in trains.items()}
    cfg = write_sim_config(tmp / "config", params, net.network_dir, spike_files, seed=SEED)
    return params, groups, net, trains, spike_files, cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    params, groups, net, trains, spike_files, cfg = build_small_network(tmp)
    # three independent NEURON processes, run side by side
    outs = {"share": tmp / "out_share", "again": tmp / "out_again", "noshare": tmp / "out_noshare"}
    procs = {
        "share": _runner(cfg.config, outs["share"]),
        "again": _runner(cfg.config, outs["again"], "--share-synapses"),
        "noshare": _runner(cfg.config, outs["noshare"], "--no-share-synapses"),
    }
    results = {}
    for k, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"runner {k} failed:\n{stderr[-4000:]}"
        results[k] = json.loads(stdout.strip().splitlines()[-1])
    return params, groups, net, trains, spike_files, outs, results


def test_outputs_exist_and_are_sensible(runs):
    params, groups, net, trains, spike_files, outs, results = runs
    out, res = outs["share"], results["share"]
    for name in ("spikes.h5", "v_report.h5", "synapses.parquet", "result.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "result.json").read_text()) == res
    assert res["n_synapses"] == net.counts["total_synapses"]
    assert res["n_synapses_by_population"] == {
        EXC_POP: net.counts["exc_edges"],
        PROX_POP: net.counts["pv_synapses"],
        DIST_POP: net.counts["som_synapses"],
    }
    assert res["input_spikes"] == {p: len(t) for p, t in trains.items()}
    # sharing: fewer point processes than synapses
    assert res["n_point_processes"] < res["n_synapses"]

    t, v = read_soma_trace(out / "v_report.h5")
    assert v.size == int(round(params.stop * 1000 / params.dt))
    # SPEC 7 conditions took effect: v_init -80 mV (BMTK's first sample is after one step,
    # the cell has moved < 0.05 mV from -80 by then; it rests near -70), celsius 34
    assert t[0] == pytest.approx(params.dt) and t[-1] == pytest.approx(params.stop * 1000)
    assert abs(v[0] - (-80.0)) < 0.05
    assert res["celsius"] == 34.0
    # release streams: default stride for a short run, no connection near it; every input
    # spike reaches each synapse of its source, so the busiest connection saw the busiest
    # source's spike count
    assert res["release_stride"] == 65536
    busiest = max(int(np.bincount(tr.node_ids).max()) for tr in trains.values() if len(tr))
    assert res["max_events_per_connection"] == busiest
    assert np.all(np.isfinite(v)) and -100 < v.min() and v.max() < 70
    # this network drives the cell: it fires, and the spike file agrees with the soma trace
    cell_spikes = read_sonata_spikes(out / "spikes.h5").get("biophysical")
    n_spk = 0 if cell_spikes is None else len(cell_spikes)
    assert n_spk == res["spike_count"]
    crossings = np.count_nonzero((v[1:] >= -10) & (v[:-1] < -10))
    assert abs(n_spk - crossings) <= 1
    assert n_spk >= 1


def test_synapse_table(runs):
    params, groups, net, trains, spike_files, outs, results = runs
    tab = pd.read_parquet(outs["share"] / "synapses.parquet")
    assert len(tab) == results["share"]["n_synapses"]
    exc = tab[tab["source_population"] == EXC_POP]
    syn = groups.synapses.sort_values("node_id", kind="stable")
    # excitatory synapses sit exactly where the functional groups put them
    np.testing.assert_array_equal(exc["source_node_id"], syn["node_id"])
    np.testing.assert_array_equal(exc["sec_id"], syn["bmtk_id"])
    np.testing.assert_allclose(exc["x"], syn["x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(exc["distance"], syn["distance"], rtol=0, atol=1e-6)
    assert set(exc["model"]) == {"PN2PN"} and set(exc["release_probability"]) == {0.6}
    assert exc["weight"].between(0, 5).all()
    assert abs(exc["weight"].mean() - 0.45) < 0.05
    assert exc["sid"].sort_values().tolist() == list(range(len(exc)))
    # inhibitory: BMTK placed them in the requested regions, weights by location
    inh = tab[tab["source_population"] != EXC_POP]
    assert set(inh["release_probability"]) == {0.25}
    pv = tab[tab["source_population"] == PROX_POP]
    assert set(pv["section_type"]) <= {"soma", "dend"}
    assert (pv.loc[pv["section_type"] == "dend", "distance"] < 50 + 10).all()
    som = tab[tab["source_population"] == DIST_POP]
    assert set(som["section_type"]) == {"dend", "apic"}
    assert (som["distance"] > 50 - 10).all()
    np.testing.assert_array_equal(inh["weight"], np.where(inh["section_type"] == "soma", 0.06, 0.1))
    # one inhibitory row per synapse: per source cell, nsyns rows
    per_src = pv.groupby("source_node_id").size()
    with h5py.File(net.edges[PROX_POP]) as f:
        g = f[f"edges/{PROX_POP}_to_biophysical"]
        nsyns = g["0"]["nsyns"][()][g["edge_group_index"][()]]
    np.testing.assert_array_equal(per_src.to_numpy(), nsyns)


def test_deterministic_and_sharing_exact(runs):
    params, groups, net, trains, spike_files, outs, results = runs
    for name in ("spikes.h5", "v_report.h5", "synapses.parquet"):
        assert (outs["share"] / name).read_bytes() == (outs["again"] / name).read_bytes(), name
    _, v_share = read_soma_trace(outs["share"] / "v_report.h5")
    _, v_none = read_soma_trace(outs["noshare"] / "v_report.h5")
    # one point process per synapse vs shared: the same up to summation order (rounding,
    # amplified on an AP's upstroke: up to ~1e-6 mV there on the fitted default cell)
    np.testing.assert_allclose(v_none, v_share, rtol=0, atol=1e-5)
    assert results["noshare"]["n_point_processes"] == results["noshare"]["n_synapses"]
    assert results["noshare"]["spike_count"] == results["share"]["spike_count"]


def test_summary(runs):
    params, groups, net, trains, spike_files, outs, results = runs
    s = summarize(
        outs["share"] / "spikes.h5",
        spike_files,
        params.stop * 1000,
        membrane_report=outs["share"] / "v_report.h5",
    )
    assert s["spike_count"] == results["share"]["spike_count"]
    assert s["firing_rate_hz"] == pytest.approx(s["spike_count"] / params.stop)
    assert {p: v["spike_count"] for p, v in s["input_spikes"].items()} == {
        p: len(t) for p, t in trains.items()
    }
    assert -90 < s["soma_v_mean_mv"] < 0
    # a 200 ms run: the default 150 ms transient is capped at half the run
    assert s["soma_v_window_ms"] == [100.0, 200.0]
    t, v = read_soma_trace(outs["share"] / "v_report.h5")
    assert s["soma_v_samples"] == 1001  # t = 100.0, 100.1, ..., 200.0
    assert s["soma_v_mean_mv"] == pytest.approx(v[t >= 100.0 - 1e-9].mean())
    if s["spike_count"] >= 3:
        assert s["isi_cv"] is not None and s["isi_cv"] >= 0


def test_runner_refuses_a_run_too_long_for_its_release_streams(runs, tmp_path):
    """A config whose tstop (1e7 ms) needs a stride at which this network's ~2,000 exc
    connections do not fit into a Random123 stream: the runner stops before the run.

    The copied config folder sits beside the original, so its relative paths still resolve.
    """
    params, groups, net, trains, spike_files, outs, results = runs
    src = outs["share"].parent / "config"
    long_dir = src.parent / "config_long"
    shutil.copytree(src, long_dir)
    sim_file = long_dir / "simulation_config.json"
    sim = json.loads(sim_file.read_text())
    sim["run"]["tstop"] = 1.0e7
    sim["reports"] = {}
    sim_file.write_text(json.dumps(sim))
    p = _runner(long_dir / "config.json", tmp_path / "out_long")
    try:
        _, stderr = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("the runner started a run its release streams cannot serve")
    assert p.returncode != 0
    assert "maximum supported duration" in stderr
    assert "exc" in stderr or "L5ExcSyn" in stderr


def test_isi_cv_pure():
    from l5assets.simulation.summary import isi_cv

    assert isi_cv(np.array([10.0, 20.0])) is None
    assert isi_cv(np.arange(5) * 25.0) == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    poisson = np.cumsum(rng.exponential(10.0, 20000))
    assert isi_cv(poisson) == pytest.approx(1.0, abs=0.03)


def _report(path: Path, v: np.ndarray, dt: float) -> Path:
    """A one-element SONATA compartment report as BMTK writes it (soma only)."""
    with h5py.File(path, "w") as f:
        g = f.create_group("report/biophysical")
        g["data"] = v.reshape(-1, 1).astype(np.float32)
        m = g.create_group("mapping")
        m["time"] = np.array([0.0, v.size * dt, dt])
        m["index_pointer"] = np.array([0, 1], dtype=np.uint64)
        m["element_ids"] = np.array([0], dtype=np.uint32)
        m["element_pos"] = np.array([0.5])
        m["node_ids"] = np.array([0], dtype=np.uint32)
    return path


def test_summary_windows(tmp_path):
    """Excitatory inputs over [start, stop), inhibitory over [0, stop), cell over the whole run;
    the soma V mean leaves out the relaxation from v_init."""
    from l5assets.science.spikes import SpikeTrains

    tstart, tstop = 500.0, 1000.0
    exc = SpikeTrains(np.repeat([0, 1], 50), np.tile(np.arange(500.0, 1000.0, 10.0), 2))
    inh = SpikeTrains(np.zeros(100, dtype=np.int64), np.arange(0.0, 1000.0, 10.0))
    files = {
        EXC_POP: write_sonata_spikes(tmp_path / "exc.h5", EXC_POP, exc),
        PROX_POP: write_sonata_spikes(tmp_path / "pv.h5", PROX_POP, inh),
    }
    cell = write_sonata_spikes(
        tmp_path / "cell.h5",
        "biophysical",
        SpikeTrains(np.zeros(4, dtype=np.int64), np.array([100.0, 300.0, 600.0, 900.0])),
    )
    dt = 0.1
    t = np.arange(0.0, tstop, dt)
    v = np.where(t < 40.0, -80.0 + 15.0 * t / 40.0, -65.0)  # relaxation, then flat
    rep = _report(tmp_path / "v_report.h5", v, dt)
    s = summarize(cell, files, tstop, membrane_report=rep, tstart_ms=tstart)
    # both populations fire 100 Hz per active cell over their own windows
    assert s["input_spikes"][EXC_POP]["window_ms"] == [500.0, 1000.0]
    assert s["input_spikes"][PROX_POP]["window_ms"] == [0.0, 1000.0]
    assert s["input_spikes"][EXC_POP]["mean_rate_per_active_node_hz"] == pytest.approx(100.0)
    assert s["input_spikes"][PROX_POP]["mean_rate_per_active_node_hz"] == pytest.approx(100.0)
    # the cell: 4 spikes over the whole 1 s run
    assert s["firing_rate_hz"] == pytest.approx(4.0) and s["rate_window_ms"] == [0.0, 1000.0]
    # soma V: the relaxation from -80 mV is left out by default
    assert s["soma_v_window_ms"] == [150.0, 1000.0]
    assert s["soma_v_mean_mv"] == pytest.approx(-65.0)
    assert s["soma_v_min_mv"] == pytest.approx(-65.0)
    s0 = summarize(cell, files, tstop, membrane_report=rep, tstart_ms=tstart, transient_ms=0.0)
    assert s0["soma_v_mean_mv"] < -65.2 and s0["soma_v_min_mv"] == -80.0
    with pytest.raises(ValueError):
        summarize(cell, files, tstop, tstart_ms=tstop)
