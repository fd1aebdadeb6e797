"""Tier 1: the NWB export's science function on small synthetic arrays (no Dagster).

Build an NWBFile, write it, read it back with pynwb: spikes and voltage round-trip exactly
with the right units and rate; nwbinspector finds nothing at CRITICAL or
BEST_PRACTICE_VIOLATION (or worse); two writes in two processes with different hash seeds give
the same bytes. The real asset on the real pipeline: `test_assets_materialize.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from l5assets.science.spikes import SpikeTrains
from l5assets.simulation.nwb import (
    MODEL_SPECIES,
    Provenance,
    RunRecord,
    SomaTrace,
    build_nwbfile,
    population_sizes,
    read_run_record,
    write_nwbfile,
)

POPS = ("exc_stim", "prox_inh_stim", "dist_inh_stim")


def synthetic_run(seed: int = 0, with_soma: bool = True) -> RunRecord:
    """200 ms at dt 0.1: a few cell spikes, a noisy voltage, three small input populations
    (the last node of each silent)."""
    rng = np.random.default_rng(seed)
    inputs, sizes = {}, {}
    for k, pop in enumerate(POPS):
        n = 5 + k
        ids = rng.integers(0, n - 1, size=40)  # node n-1 never fires
        times = np.round(rng.uniform(0.0, 200.0, size=40), 1)
        inputs[pop] = SpikeTrains(ids, times).sorted_by_time()
        sizes[pop] = n
    soma = SomaTrace(v_mv=-70.0 + rng.normal(0, 3, 2000), t0_ms=0.1, dt_ms=0.1)
    return RunRecord(
        tstop_ms=200.0,
        dt_ms=0.1,
        cell_spikes_ms=np.array([12.3, 57.8, 101.1, 180.0]),
        inputs=inputs,
        input_nodes=sizes,
        soma=soma if with_soma else None,
    )


def provenance(seed: int = 7) -> Provenance:
    return Provenance(
        param_set="T_nwb",
        params_hash="a" * 64,
        seed=seed,
        params={"time": {"stop": 0.2}, "dt": 0.1},
        manifests={"simulation_outputs": "b" * 64, "exc_raster": "c" * 64},
        stage_seeds={"exc_raster": 1234},
        code={"git_commit": "deadbeef", "package_version": "0.1.0"},
        description="synthetic",
    )


def write(tmp: Path, run: RunRecord | None = None, prov: Provenance | None = None) -> Path:
    nwb = build_nwbfile(
        run or synthetic_run(), prov or provenance(), cell_name="toy_cell", species=MODEL_SPECIES
    )
    return write_nwbfile(nwb, tmp / "run.nwb")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("nwb"))


def test_spikes_voltage_and_inputs_round_trip_exactly(written):
    from pynwb import NWBHDF5IO

    run = synthetic_run()
    with NWBHDF5IO(str(written), "r") as io:
        nwb = io.read()
        assert list(nwb.units.id[:]) == [0]
        got = np.asarray(nwb.units["spike_times"][0])
        assert np.array_equal(got, run.cell_spikes_ms / 1000.0)  # seconds, bit for bit
        assert nwb.units.resolution == pytest.approx(1e-4)
        v = nwb.acquisition["soma_v"]
        assert type(v).__name__ == "CurrentClampSeries"
        assert np.array_equal(v.data[:], run.soma.v_mv)  # as recorded (mV) ...
        assert v.unit == "volts" and v.conversion == 1e-3  # ... times conversion = volts
        assert v.rate == 10000.0 and v.starting_time == pytest.approx(1e-4)
        assert v.electrode.device.name == "NEURON" and v.electrode.cell_id == "toy_cell"
        for pop in POPS:
            table = nwb.processing["misc"][pop]
            trains = run.inputs[pop]
            n = run.input_nodes[pop]
            assert list(table.id[:]) == list(range(n))  # silent nodes included
            for node in range(n):
                want = np.sort(trains.timestamps[trains.node_ids == node]) / 1000.0
                assert np.array_equal(np.asarray(table["spike_times"][node]), want), (pop, node)
            assert len(table["spike_times"][n - 1]) == 0
        notes = json.loads(nwb.notes)
        prov = provenance()
        assert notes["params_hash"] == prov.params_hash and notes["seed"] == prov.seed
        assert notes["upstream_content_hashes"] == dict(prov.manifests)
        assert notes["params"] == prov.params
        assert nwb.identifier == prov.identifier()
        assert nwb.subject.species == MODEL_SPECIES


# How nwbinspector 0.7.2's checks crash when they read element 0 of an empty HDF5 dataset
# (h5py's messages): they report an ERROR (an exception in the check), not a finding.
_EMPTY_READ = ("out of range for empty dimension", "not within extent for file dataspace")


def inspector_problems(path: Path, *, silent_cell: bool = False) -> list:
    """nwbinspector's messages on a file at CRITICAL or BEST_PRACTICE_VIOLATION or worse
    (every message is printed). `silent_cell`: in a Units table whose rows are all empty,
    three checks of nwbinspector 0.7.2 (`check_units_table_duration`,
    `check_table_values_for_dict`, `check_col_not_nan`) crash reading spike 0 of the empty
    dataset; those ERRORs are tolerated then (the data are right: no spikes)."""
    from nwbinspector import Importance, inspect_nwbfile

    problems = []
    for m in inspect_nwbfile(nwbfile_path=path):
        print(
            f"nwbinspector: {m.importance.name} {m.check_function_name} {m.location}: {m.message}"
        )
        crash = m.importance == Importance.ERROR and any(t in m.message for t in _EMPTY_READ)
        if m.importance.value >= Importance.BEST_PRACTICE_VIOLATION.value and not (
            silent_cell and crash
        ):
            problems.append((m.importance.name, m.check_function_name, m.message[:300]))
    return problems


def test_nwbinspector_finds_no_critical_or_best_practice_violation(written):
    assert not inspector_problems(written)


def test_a_silent_cell_is_a_unit_without_spikes(tmp_path):
    """A run in which the cell never fires keeps its row in /units, with no spike times."""
    from pynwb import NWBHDF5IO

    run = synthetic_run()
    silent = RunRecord(
        tstop_ms=run.tstop_ms,
        dt_ms=run.dt_ms,
        cell_spikes_ms=np.zeros(0),
        inputs=run.inputs,
        input_nodes=run.input_nodes,
        soma=run.soma,
    )
    path = write(tmp_path, run=silent)
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        assert list(units.id[:]) == [0] and len(units["spike_times"][0]) == 0
    assert not inspector_problems(path, silent_cell=True)


_WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import bmtk.simulator.bionet  # loads an NWB extension namespace into pynwb's type map
from test_nwb_export import write
write(Path(sys.argv[1]))
"""


def test_same_inputs_give_the_same_bytes_in_another_process(tmp_path, written):
    """Object ids, identifier and dates are deterministic, also under another hash seed and
    with another NWB namespace loaded in the writing process (BMTK's bionet loads one)."""
    code = _WRITER.format(tests=str(Path(__file__).parent))
    out = tmp_path / "other"
    out.mkdir()
    env = {"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=120)
    assert (out / "run.nwb").read_bytes() == written.read_bytes()


def test_another_seed_is_another_identifier():
    assert provenance(7).identifier() == provenance(7).identifier()
    assert provenance(7).identifier() != provenance(8).identifier()


def test_without_a_soma_report_there_is_no_voltage(tmp_path):
    from pynwb import NWBHDF5IO

    path = write(tmp_path, run=synthetic_run(with_soma=False))
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        assert "soma_v" not in nwb.acquisition
        assert len(nwb.units.id) == 1


def test_bad_inputs_fail_with_one_line(tmp_path):
    run = synthetic_run()
    with pytest.raises(ValueError, match="outside") as e:
        RunRecord(
            tstop_ms=200.0,
            dt_ms=0.1,
            cell_spikes_ms=run.cell_spikes_ms,
            inputs=run.inputs,
            input_nodes={pop: 2 for pop in POPS},  # fewer nodes than the spikes name
        )
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="dt_ms"):
        SomaTrace(v_mv=np.zeros(3), t0_ms=0.0, dt_ms=0.0)
    not_nodes = tmp_path / "x.h5"
    import h5py

    with h5py.File(not_nodes, "w") as f:
        f["spikes/exc_stim/timestamps"] = np.zeros(1)
    with pytest.raises(ValueError, match="node_id"):
        population_sizes({"exc_stim": not_nodes})


def test_read_run_record_from_sonata_files(tmp_path):
    """The file reader: SONATA spike files in ms, node files, a BMTK membrane report."""
    import h5py

    from l5assets.science.spikes import write_sonata_spikes

    cell = tmp_path / "spikes.h5"
    write_sonata_spikes(cell, "biophysical", SpikeTrains([0, 0], [5.0, 9.5]))
    exc = tmp_path / "exc.h5"
    write_sonata_spikes(exc, "exc_stim", SpikeTrains([1, 0, 1], [1.0, 2.0, 3.0]))
    nodes = tmp_path / "exc_nodes.h5"
    with h5py.File(nodes, "w") as f:
        f["nodes/exc_stim/node_id"] = np.arange(3, dtype=np.uint64)
    report = tmp_path / "v_report.h5"
    with h5py.File(report, "w") as f:
        g = f.create_group("report/biophysical")
        g["data"] = np.linspace(-70, -60, 100).reshape(-1, 1)
        m = g.create_group("mapping")
        m["time"] = np.array([0.0, 10.0, 0.1])
        m["index_pointer"] = np.array([0, 1], dtype=np.uint64)
        m["element_ids"] = np.array([0], dtype=np.uint64)
    run = read_run_record(
        cell_spikes=cell,
        input_spikes={"exc_stim": exc},
        input_nodes=population_sizes({"exc_stim": nodes}),
        tstop_ms=10.0,
        dt_ms=0.1,
        membrane_report=report,
    )
    assert np.array_equal(run.cell_spikes_ms, [5.0, 9.5])
    assert run.input_nodes == {"exc_stim": 3}
    assert run.soma.dt_ms == 0.1 and run.soma.t0_ms == pytest.approx(0.1)
    assert np.array_equal(run.soma.v_mv, np.linspace(-70, -60, 100))
