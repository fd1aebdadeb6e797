"""The project's own driver (engine `neuron`) against BMTK BioNet (engine `bionet`), on the
small real network of test_simulation.py, each engine in its own runner subprocess; and the
driver's SONATA files read by BMTK's readers and by libsonata 0.2.

What "identical" means here: spike times (float64) equal, the synapse table equal (every
synapse on the same segment, same W, sid, delay, point process), the hot-zone V equal; the
soma report of the driver is float32 (SONATA's type, the one libsonata reads) and equals
BioNet's float64 report rounded to float32.

Engine `coreneuron` against engine `neuron` with merged inputs, on the network's own 0.1 ms
delays at dt 0.1 ms (inputs replayed earlier) and at delays raised above dt (a copy of the
network): same spikes, V within one float32 step, same synapses and results; the --min-delay
option, and options refused before any build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_simulation import _runner, build_small_network

from l5assets import paths
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


def test_rate_tables_option_reaches_both_engines(runs, tmp_path):
    """A config with `rate_tables` (the param set's option): engines neuron and bionet both
    switch the channels' TABLEs on and record it, agree with each other as they do without
    it, and differ from the exact-rate runs."""
    params, net, trains, outs, results = runs
    _, _, _, _, _, cfg = build_small_network(tmp_path)
    sim = Path(cfg.config).with_name("simulation_config.json")  # the l5assets section's file
    conf = json.loads(sim.read_text())
    conf["l5assets"]["rate_tables"] = True
    sim.write_text(json.dumps(conf))
    touts = {e: tmp_path / f"tables_{e}" for e in ENGINES}
    procs = {e: _runner(cfg.config, touts[e], "--engine", e) for e in ENGINES}
    for e, p in procs.items():
        stdout, stderr = p.communicate(timeout=900)
        assert p.returncode == 0, f"engine {e} failed:\n{stderr[-4000:]}"
        assert json.loads(stdout.strip().splitlines()[-1])["rate_tables"] is True
    v = {e: read_soma_trace(touts[e] / "v_report.h5")[1] for e in ENGINES}
    np.testing.assert_array_equal(v["neuron"].astype(np.float32), v["bionet"].astype(np.float32))
    exact = read_soma_trace(outs["neuron"] / "v_report.h5")[1]
    assert v["neuron"].shape == exact.shape and not np.array_equal(v["neuron"], exact)
    assert "rate_tables" not in results["neuron"]


# ---------------------------------------------------------------------------------------------
# engine coreneuron against engine neuron with merged inputs (issue 11 item 2)
#
# CoreNEURON needs NetCon delays > dt. On the small network's own 0.1 ms delays (dt 0.1 ms)
# engine coreneuron replays the inputs 0.1 ms earlier over 0.2 ms delays (same arrival times):
# compared with engine neuron on the same network ("shifted" vs "neuron_merged_fast"). And on
# a copy with every delay raised to SLOW_DELAY_MS, no shift ("coreneuron" vs "neuron_merged"),
# which --min-delay must reproduce on the original. Engine coreneuron replays all inputs with
# one PatternStim; engine neuron does the same with --merge-inputs, so both do equal
# arithmetic. Measured on this network: the same spike times (float64, bit-identical) and
# bit-identical float32 soma and hot-zone V; the tolerance below is one float32 step at 80 mV.

SLOW_DELAY_MS = 0.2
V_TOL_MV = 1e-5  # float32 spacing at 64-128 mV is 7.6e-6 mV
CORE_CASES = {  # name: (network copy, runner flags)
    "neuron_merged": ("slow", ("--engine", "neuron", "--merge-inputs")),
    "coreneuron": ("slow", ("--engine", "coreneuron")),
    "shifted": ("fast", ("--engine", "coreneuron")),
    "neuron_merged_fast": ("fast", ("--engine", "neuron", "--merge-inputs")),
    "min_delay": ("fast", ("--engine", "coreneuron", "--min-delay", str(SLOW_DELAY_MS))),
}


def _core_runner(config, out, *flags):
    # reuse both builds; nrnivmodl's own flags: the engines' equality is on the plain build
    # (the default build's fast math is tested on its own, test_default_build.py)
    env = dict(os.environ, L5ASSETS_CACHE_DIR=str(paths.cache_dir()), L5ASSETS_MECH_CFLAGS="none")
    cmd = [sys.executable, "-m", "l5assets.simulation.runner", str(config), "--output-dir"]
    return subprocess.Popen(
        [*cmd, str(out), *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def _raise_delays(root, delay_ms):
    """Every edge type of the network under `root` gets `delay_ms`."""
    for csv in (root / "network").glob("*_edge_types.csv"):
        df = pd.read_csv(csv, sep=" ")
        df["delay"] = delay_ms
        df.to_csv(csv, sep=" ", index=False)


@pytest.fixture(scope="module")
def core_runs(tmp_path_factory):
    fast = tmp_path_factory.mktemp("core_fast")
    params, groups, net, trains, spike_files, cfg = build_small_network(fast)
    slow = tmp_path_factory.mktemp("core_slow")
    shutil.copytree(fast / "network", slow / "network")
    shutil.copytree(fast / "config", slow / "config")
    for f in fast.glob("*.h5"):  # the input spike files (the config names them relatively)
        shutil.copy2(f, slow / f.name)
    _raise_delays(slow, SLOW_DELAY_MS)
    roots = {"fast": fast, "slow": slow}
    outs = {name: fast / f"out_{name}" for name in CORE_CASES}
    done = {}
    batches = (("neuron_merged", "coreneuron"), ("shifted", "neuron_merged_fast"), ("min_delay",))
    for batch in batches:  # 2 at a time
        procs = {
            n: _core_runner(
                roots[CORE_CASES[n][0]] / "config" / "config.json", outs[n], *CORE_CASES[n][1]
            )
            for n in batch
        }
        for n, p in procs.items():
            stdout, stderr = p.communicate(timeout=600)
            done[n] = (p.returncode, stdout, stderr)
    results, progress = {}, {}
    for n, (rc, stdout, stderr) in done.items():
        assert rc == 0, f"{n} failed:\n{stderr[-4000:]}"
        results[n] = json.loads(stdout.strip().splitlines()[-1])
        progress[n] = [x for x in stdout.splitlines() if x.startswith("L5PROGRESS ")]
        print(f"{n}: {results[n]['spike_count']} spikes, wall {results[n]['wall_seconds']}")
    return net, outs, results, progress


def test_coreneuron_runs_in_chunks_that_report_progress(core_runs):
    """CoreNEURON runs in CORENEURON_PROGRESS_STEPS psolve chunks, each followed by a
    progress line; the chunked run is the one the equality tests below compare."""
    from l5assets.simulation.driver import CORENEURON_PROGRESS_STEPS, progress_marks

    net, outs, results, progress = core_runs
    tstop = results["coreneuron"]["tstop_ms"]
    lines = progress["coreneuron"]
    assert len(lines) == CORENEURON_PROGRESS_STEPS
    marks = progress_marks(tstop, results["coreneuron"]["dt_ms"], CORENEURON_PROGRESS_STEPS)
    assert [float(x.split()[1]) for x in lines] == pytest.approx(marks, abs=1e-6)
    assert float(lines[-1].split()[1]) == pytest.approx(tstop)


def test_progress_marks_are_whole_steps_ending_at_tstop() -> None:
    from l5assets.simulation.driver import progress_marks

    assert progress_marks(1000.0, 0.1, 10) == pytest.approx([100.0 * k for k in range(1, 11)])
    assert progress_marks(0.3, 0.1, 10) == pytest.approx([0.1, 0.2, 0.3])  # fewer steps
    for tstop in (250.0, 250.05):  # a tstop off the step grid: every chunk but the last on it
        marks = progress_marks(tstop, 0.1, 7)
        assert marks[-1] == tstop and bool(np.all(np.diff(marks) > 0)) and len(marks) == 7
        steps = np.array(marks[:-1]) / 0.1
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)


def test_coreneuron_same_spikes_as_neuron_merged(core_runs):
    net, outs, results, _ = core_runs
    sp = {n: read_sonata_spikes(outs[n] / "spikes.h5")["biophysical"] for n in results}
    ref = sp["neuron_merged"].timestamps
    assert ref.size >= 3
    np.testing.assert_array_equal(sp["coreneuron"].timestamps, ref)
    np.testing.assert_array_equal(sp["coreneuron"].node_ids, sp["neuron_merged"].node_ids)


def test_coreneuron_same_soma_and_hot_zone_voltage(core_runs):
    net, outs, results, _ = core_runs
    t_n, v_n = read_soma_trace(outs["neuron_merged"] / "v_report.h5")
    t_c, v_c = read_soma_trace(outs["coreneuron"] / "v_report.h5")
    np.testing.assert_array_equal(t_c, t_n)
    assert v_c.shape == v_n.shape and v_n.size == int(
        round(results["coreneuron"]["tstop_ms"] / 0.1)
    )
    assert np.max(np.abs(v_c.astype(np.float64) - v_n)) <= V_TOL_MV
    dend = {}
    for n in ("neuron_merged", "coreneuron"):
        with h5py.File(outs[n] / "dend_v.h5") as f:
            dend[n] = f["v"][()].astype(np.float64)
    assert dend["coreneuron"].shape == dend["neuron_merged"].shape
    assert np.max(np.abs(dend["coreneuron"] - dend["neuron_merged"])) <= V_TOL_MV


def test_coreneuron_same_synapses_and_result_fields(core_runs):
    net, outs, results, _ = core_runs
    tabs = {n: pd.read_parquet(outs[n] / "synapses.parquet") for n in results}
    pd.testing.assert_frame_equal(tabs["coreneuron"], tabs["neuron_merged"], check_exact=True)
    assert (tabs["coreneuron"]["delay"] == SLOW_DELAY_MS).all()
    core, nrn = results["coreneuron"], results["neuron_merged"]
    assert core["engine"] == "coreneuron" and nrn["engine"] == "neuron"
    assert core["merge_inputs"] is nrn["merge_inputs"] is True
    assert core["mechanisms_build"] == "coreneuron" and core["min_delay_ms"] is None
    assert core["delays_raised"] == 0
    only_core = {
        "engine",
        "wall_seconds",
        "mechanisms_build",
        "min_delay_ms",
        "delays_raised",
        "input_shift_ms",
    }
    assert {k: v for k, v in core.items() if k not in only_core} == {
        k: v for k, v in nrn.items() if k not in only_core
    }  # incl. spike_count, max_events_per_connection (weight-vector state came back)


def _v(out: Path) -> dict[str, np.ndarray]:
    """Soma (float32 report) and hot-zone V of one run, as float64."""
    with h5py.File(out / "dend_v.h5") as f:
        dend = f["v"][()].astype(np.float64)
    return {"soma": read_soma_trace(out / "v_report.h5")[1].astype(np.float64), "dend": dend}


def test_coreneuron_runs_delays_not_above_dt_by_replaying_inputs_earlier(core_runs):
    """The study's own 0.1 ms delays at dt 0.1 ms: no change of the model, same spikes and V
    as engine neuron (merged inputs) on the same network; the table keeps the 0.1 ms."""
    net, outs, results, _ = core_runs
    res, ref = results["shifted"], results["neuron_merged_fast"]
    assert res["input_shift_ms"] == pytest.approx(0.1) and res["delays_raised"] == 0
    assert res["spike_count"] == ref["spike_count"] and res["n_synapses"] == ref["n_synapses"]
    sp = {
        n: read_sonata_spikes(outs[n] / "spikes.h5")["biophysical"]
        for n in ("shifted", "neuron_merged_fast")
    }
    assert sp["neuron_merged_fast"].timestamps.size >= 3
    np.testing.assert_array_equal(sp["shifted"].timestamps, sp["neuron_merged_fast"].timestamps)
    v, v_ref = _v(outs["shifted"]), _v(outs["neuron_merged_fast"])
    for k in ("soma", "dend"):
        assert v[k].shape == v_ref[k].shape
        assert np.max(np.abs(v[k] - v_ref[k])) <= V_TOL_MV, k
    tab = pd.read_parquet(outs["shifted"] / "synapses.parquet")
    pd.testing.assert_frame_equal(
        tab, pd.read_parquet(outs["neuron_merged_fast"] / "synapses.parquet"), check_exact=True
    )
    assert (tab["delay"] == 0.1).all()
    # on the raised copy nothing needs shifting
    assert results["coreneuron"]["input_shift_ms"] == 0.0


def test_input_shift() -> None:
    from l5assets.simulation.driver import input_shift

    assert input_shift([0.1, 0.3], 0.1) == pytest.approx(0.1)  # shortest delay becomes 2 dt
    assert input_shift([0.0], 0.025) == pytest.approx(0.05)
    assert input_shift([0.2, 0.3], 0.1) == 0.0
    assert input_shift([], 0.1) == 0.0


def test_input_shift_only_where_arrivals_are_mid_step() -> None:
    """Whole-ms spikes with 0.1 ms delays arrive mid-step at dt 0.1 (the study: shifted);
    at dt 0.2 they arrive on half-step boundaries, where rounding decides: refused."""
    from l5assets.simulation.driver import check_arrivals_mid_step
    from l5assets.simulation.runner import EngineError

    times = np.arange(0.0, 1000.0)
    check_arrivals_mid_step(times, np.array([0.1]), 0.1)
    check_arrivals_mid_step(np.zeros(0), np.array([0.1]), 0.2)
    with pytest.raises(EngineError, match=r"^engine coreneuron: input events arrive on half-step"):
        check_arrivals_mid_step(times, np.array([0.1]), 0.2)


def test_coreneuron_min_delay_option_equals_raised_network(core_runs):
    net, outs, results, _ = core_runs
    res = results["min_delay"]
    assert res["min_delay_ms"] == SLOW_DELAY_MS
    assert res["delays_raised"] == net.counts["total_synapses"] == res["n_synapses"]
    tab = pd.read_parquet(outs["min_delay"] / "synapses.parquet")
    pd.testing.assert_frame_equal(
        tab, pd.read_parquet(outs["coreneuron"] / "synapses.parquet"), check_exact=True
    )  # the raised delays are in the table
    for f in ("spikes.h5", "v_report.h5", "dend_v.h5"):  # same model as the edited network
        with h5py.File(outs["min_delay"] / f) as a, h5py.File(outs["coreneuron"] / f) as b:
            key = {"spikes.h5": "spikes/biophysical/timestamps"}.get(f, None)
            key = key or ("report/biophysical/data" if f == "v_report.h5" else "v")
            np.testing.assert_array_equal(a[key][()], b[key][()])


def test_engine_options_refused_before_any_build(tmp_path, capsys):
    from l5assets.simulation import runner
    from l5assets.simulation.driver import apply_min_delay

    cfg = str(tmp_path / "none.json")  # never read: the options fail first
    cases = {
        ("--engine", "coreneuron", "--threads", "2"): "--threads 2: engine coreneuron allows 1 "
        "thread only (CoreNEURON's threads/multisplit have been seen to give wrong output)",
        ("--engine", "neuron", "--min-delay", "0.2"): "--min-delay: an option of engine "
        "coreneuron only, not neuron",
        ("--engine", "bionet", "--merge-inputs"): "--merge-inputs: an option of engine neuron "
        "only (engine bionet never does)",
    }
    for flags, message in cases.items():
        assert runner.main([cfg, *flags]) == 2
        assert capsys.readouterr().err.strip() == (
            f"python -m l5assets.simulation.runner: error: {message}"
        )
    assert apply_min_delay([0.1, 0.3], 0.1, 0.2) == [0.2, 0.3]
    assert apply_min_delay([0.1], 0.1, None) == [0.1]  # no option: the delays stay
    with pytest.raises(runner.EngineError, match=r"--min-delay 0.1: must exceed dt = 0.1 ms"):
        apply_min_delay([0.2], 0.1, 0.1)
