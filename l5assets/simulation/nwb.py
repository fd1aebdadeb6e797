"""One run as an NWB file (pynwb), byte-deterministic (no Dagster).

What goes where (NWB 2.x, checked with nwbinspector in the tests):

- `/units`: the simulated cell, one unit (id = its SONATA node id), spike times in seconds
  (the run's ms / 1000), observed interval [0, tstop], resolution = the time step;
- `/acquisition/soma_v`: the soma voltage as a `CurrentClampSeries` (no current injected:
  bias 0 A) of an `IntracellularElectrode` "soma" on the `Device` "NEURON"; the data are the
  membrane report's values as recorded (mV, float64) with `conversion` 1e-3 to volts, so they
  round-trip bit for bit; `starting_time` + `rate` (1 / dt) give the sample times;
- `/processing/misc/<population>`: one `Units` table per input population (`exc_stim`
  excitatory, `prox_inh_stim` PV+, `dist_inh_stim` SOM+), one row per input node (id = node id,
  silent nodes included), spike times in seconds; `misc` is one of the processing-module names
  nwbinspector recommends, and a Units table there passes the same checks as `/units`;
- `notes`: the provenance as canonical JSON (param set, params, params hash, seed, stage
  seeds, the content hashes of the upstream outputs, code versions): a free-text field that every
  NWB reader shows and nwbinspector does not check;
- `subject`: the model cell (subject_id = its biophysics, species of the data it models).

Determinism: the NWB `identifier` is derived from the provenance (params hash, seed, upstream
content hashes), `session_start_time` and `file_create_date` are a fixed instant (a
simulation has no wall-clock start; the manifest records when it was written), and the
object ids HDF-5 containers carry (random UUIDs in hdmf) are re-drawn from a stream seeded by
the identifier. No schema is cached in the file (hdmf caches every namespace loaded in the
process, so an extension BMTK loads would change the bytes). Same inputs therefore give the
same bytes (tested across processes).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from l5assets.network.build import DIST_POP, EXC_POP, PROX_POP
from l5assets.science.spikes import SpikeTrains

# The file's clock zero: fixed, so that same inputs give same bytes. Sample and spike times
# are relative to it (simulated time 0). After 1980, which nwbinspector takes for a dummy date.
SESSION_START = datetime(2000, 1, 1, tzinfo=UTC)
SOMA_SERIES = "soma_v"
INPUTS_MODULE = "misc"
POPULATION_DESCRIPTIONS = {
    EXC_POP: "excitatory inputs (functional groups), one row per presynaptic node",
    PROX_POP: "PV+ (perisomatic) inhibitory inputs, one row per presynaptic node",
    DIST_POP: "SOM+ (dendritic) inhibitory inputs, one row per presynaptic node",
}
HAY_2011_DOI = "doi:10.1371/journal.pcbi.1002107"
# Every shipped cell models rat L5b thick-tufted pyramidal cells (Hay's cell1 and the BBP
# reconstruction C060114A7 are rat neurons); nwbinspector requires a species.
MODEL_SPECIES = "Rattus norvegicus"


@dataclass(frozen=True)
class SomaTrace:
    """The soma voltage: `v_mv[k]` is the value at `t0_ms + k * dt_ms`."""

    v_mv: np.ndarray
    t0_ms: float
    dt_ms: float

    def __post_init__(self) -> None:
        if self.dt_ms <= 0:
            raise ValueError(f"SomaTrace: dt_ms must be > 0, got {self.dt_ms}")
        v = np.ascontiguousarray(self.v_mv, dtype=np.float64).reshape(-1)
        if v.size == 0:
            raise ValueError("SomaTrace: no samples")
        object.__setattr__(self, "v_mv", v)


@dataclass(frozen=True)
class RunRecord:
    """What the NWB file holds of one run, in the simulation's own units (ms, mV).

    cell_spikes_ms: the cell's spike times; cell_node_id: its SONATA node id; inputs: the
    spike trains of each input population; input_nodes: each population's node count (rows of
    its table, silent nodes included); soma: the soma voltage (None: not recorded).
    """

    tstop_ms: float
    dt_ms: float
    cell_spikes_ms: np.ndarray
    inputs: Mapping[str, SpikeTrains]
    input_nodes: Mapping[str, int]
    soma: SomaTrace | None = None
    cell_node_id: int = 0

    def __post_init__(self) -> None:
        if self.tstop_ms <= 0 or self.dt_ms <= 0:
            raise ValueError(
                f"RunRecord: need tstop_ms, dt_ms > 0, got {self.tstop_ms}, {self.dt_ms}"
            )
        spikes = np.ascontiguousarray(self.cell_spikes_ms, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "cell_spikes_ms", spikes)
        for pop, trains in self.inputs.items():
            n = int(self.input_nodes.get(pop, 0))
            if len(trains) and (trains.node_ids.min() < 0 or trains.node_ids.max() >= n):
                raise ValueError(f"RunRecord: {pop} has spikes of node ids outside [0, {n})")


@dataclass(frozen=True)
class Provenance:
    """Where the run came from: recorded in the file's `notes` and hashed into its identifier.

    manifests: upstream asset -> content hash of the outputs that were read (data only: the
    file must not change with a commit that changes no data); params: the fully resolved
    params; code: the code versions of the assets.
    """

    param_set: str
    params_hash: str
    seed: int
    params: Mapping[str, Any]
    manifests: Mapping[str, str]
    stage_seeds: Mapping[str, int] = field(default_factory=dict)
    code: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def as_json(self) -> str:
        """Canonical JSON (sorted keys): the text stored in `notes`."""
        return json.dumps(
            {
                "generator": "l5assets",
                "param_set": self.param_set,
                "params_hash": self.params_hash,
                "seed": self.seed,
                "stage_seeds": dict(self.stage_seeds),
                "params": self.params,
                "upstream_content_hashes": dict(self.manifests),
                "code": dict(self.code),
            },
            sort_keys=True,
            indent=1,
            default=str,
        )

    def identifier(self) -> str:
        """A UUID-shaped identifier from the params hash, the seed and the upstream content
        hashes: the same inputs always name the file alike, different ones never do."""
        key = json.dumps(
            [self.params_hash, self.seed, sorted(self.manifests.items())], separators=(",", ":")
        )
        return str(uuid.UUID(bytes=hashlib.sha256(key.encode()).digest()[:16], version=4))


def _units_table(
    name: str,
    description: str,
    trains: SpikeTrains,
    node_ids: np.ndarray,
    tstop_s: float,
    resolution_s: float,
):
    """A Units table with one row per node of `node_ids` (ascending; silent nodes get an
    empty row), spike times in seconds, ascending within each row."""
    from hdmf.common import VectorData, VectorIndex
    from pynwb.misc import Units

    node_ids = np.asarray(node_ids, dtype=np.int64)
    order = np.lexsort((trains.timestamps, trains.node_ids))
    ids = trains.node_ids[order]
    times_s = trains.timestamps[order] / 1000.0
    # the ragged column in one go (the end offset of each row's spikes): add_unit per row
    # would cost seconds for the ~5,000 excitatory nodes
    ends = np.searchsorted(ids, node_ids, side="right").astype(np.int64)
    spike_times = VectorData(name="spike_times", description="spike times (s)", data=times_s)
    spike_index = VectorIndex(name="spike_times_index", data=ends, target=spike_times)
    n = node_ids.size
    intervals = VectorData(
        name="obs_intervals",
        description="observed interval of each row (s): the whole run",
        data=np.tile(np.array([[0.0, tstop_s]]), (n, 1)),
    )
    intervals_index = VectorIndex(
        name="obs_intervals_index", data=np.arange(1, n + 1, dtype=np.int64), target=intervals
    )
    return Units(
        name=name,
        description=description,
        id=node_ids,
        columns=[spike_times, spike_index, intervals, intervals_index],
        resolution=resolution_s,
    )


def build_nwbfile(run: RunRecord, prov: Provenance, *, cell_name: str, species: str):
    """The pynwb NWBFile of one run (in memory; `write_nwbfile` writes it).

    cell_name: the model cell (subject_id and electrode cell_id); species: the species whose
    neurons the model is built from (Latin binomial)."""
    from pynwb import NWBFile
    from pynwb.file import Subject
    from pynwb.icephys import CurrentClampSeries

    tstop_s, res_s = run.tstop_ms / 1000.0, run.dt_ms / 1000.0
    nwb = NWBFile(
        session_description=(
            f"l5assets simulation of one L5b pyramidal cell model: param set {prov.param_set}, "
            f"seed {prov.seed}, {tstop_s:g} s"
        ),
        identifier=prov.identifier(),
        session_start_time=SESSION_START,
        file_create_date=SESSION_START,  # fixed for byte-identity; the manifest has the time
        session_id=f"{prov.param_set}-seed-{prov.seed}",
        experiment_description=prov.description or None,
        notes=prov.as_json(),
        related_publications=[HAY_2011_DOI],
        keywords=["simulation", "NEURON", "BMTK", "L5 pyramidal cell"],
        was_generated_by=[["l5assets", str(prov.code.get("version", "unknown"))]],
    )
    nwb.subject = Subject(
        subject_id=cell_name,
        species=species,
        sex="U",
        age="P0D/",  # a model: no age; nwbinspector requires one, an open range says unknown
        description=f"in-silico model cell {cell_name} (BMTK BioNet, NEURON)",
    )
    nwb.units = _units_table(
        "units",
        "the simulated cell's somatic spikes (threshold crossings detected by NEURON)",
        SpikeTrains(np.full(run.cell_spikes_ms.size, run.cell_node_id), run.cell_spikes_ms),
        np.array([run.cell_node_id]),
        tstop_s,
        res_s,
    )
    if run.soma is not None:
        device = nwb.create_device(name="NEURON", description="NEURON simulator (via BMTK)")
        electrode = nwb.create_icephys_electrode(
            name="soma",
            device=device,
            description="simulated recording of the membrane potential at the soma centre",
            location="soma",
            cell_id=cell_name,
        )
        nwb.add_acquisition(
            CurrentClampSeries(
                name=SOMA_SERIES,
                data=run.soma.v_mv,
                electrode=electrode,
                conversion=1e-3,  # stored as recorded (mV): data * conversion = volts
                starting_time=run.soma.t0_ms / 1000.0,
                rate=1000.0 / run.soma.dt_ms,
                bias_current=0.0,
                description="soma membrane potential (mV as recorded; conversion to V)",
            )
        )
    module = nwb.create_processing_module(
        name=INPUTS_MODULE, description="spike trains of the virtual input populations"
    )
    for pop in sorted(run.inputs):
        desc = POPULATION_DESCRIPTIONS.get(pop, f"input population {pop}")
        module.add(
            _units_table(
                pop, desc, run.inputs[pop], np.arange(run.input_nodes[pop]), tstop_s, res_s
            )
        )
    return nwb


@contextmanager
def _seeded_object_ids(identifier: str) -> Iterator[None]:
    """While active, hdmf draws container object ids from a stream seeded by `identifier`
    instead of uuid4 (random): the ids are stored in the file, so they must repeat."""
    import hdmf.container

    counter = iter(range(1 << 62))

    def next_id() -> uuid.UUID:
        digest = hashlib.sha256(f"{identifier}/{next(counter)}".encode()).digest()
        return uuid.UUID(bytes=digest[:16], version=4)

    original = hdmf.container.uuid4
    hdmf.container.uuid4 = next_id
    try:
        yield
    finally:
        hdmf.container.uuid4 = original


def write_nwbfile(nwb, path: Path) -> Path:
    """Write an NWBFile to `path` (HDF5) with deterministic object ids: same file content,
    same bytes. Write into a temp folder (the asset step's): the swap makes it atomic."""
    from pynwb import NWBHDF5IO

    with _seeded_object_ids(nwb.identifier):
        nwb.generate_new_id()  # every container, in the tree's (deterministic) order
    with NWBHDF5IO(str(path), mode="w") as io:
        # no cached specs: hdmf would cache every namespace loaded in this process (BMTK's
        # bionet loads an extension), so the bytes would depend on what ran before; the file
        # uses the core NWB schema only, which every reader has
        io.write(nwb, cache_spec=False)
    return Path(path)


def population_sizes(node_files: Mapping[str, Path]) -> dict[str, int]:
    """Node count of each population from its SONATA node file (`/nodes/<pop>/node_id`)."""
    import h5py

    sizes = {}
    for pop, path in sorted(node_files.items()):
        with h5py.File(path, "r") as f:
            if f"nodes/{pop}/node_id" not in f:
                raise ValueError(f"{path}: no /nodes/{pop}/node_id (not a SONATA node file?)")
            ids = f[f"nodes/{pop}/node_id"][()]
        if ids.size and (ids.min() != 0 or ids.max() != ids.size - 1):
            raise ValueError(f"{path}: {pop} node ids are not 0..{ids.size - 1}")
        sizes[pop] = int(ids.size)
    return sizes


def read_run_record(
    *,
    cell_spikes: Path,
    input_spikes: Mapping[str, Path],
    input_nodes: Mapping[str, int],
    tstop_ms: float,
    dt_ms: float,
    membrane_report: Path | None,
    cell_population: str = "biophysical",
) -> RunRecord:
    """A RunRecord from the simulation's files: the cell's SONATA spike file, the input spike
    files by population, and the membrane report (None or missing: no voltage)."""
    from l5assets.science.spikes import read_sonata_spikes
    from l5assets.simulation.summary import read_soma_trace

    cell = read_sonata_spikes(cell_spikes).get(cell_population, SpikeTrains.empty())
    node_ids = np.unique(cell.node_ids)
    if node_ids.size > 1:
        raise ValueError(f"{cell_spikes}: spikes of {node_ids.size} cells, expected one")
    inputs = {}
    for pop, path in sorted(input_spikes.items()):
        inputs[pop] = read_sonata_spikes(path).get(pop, SpikeTrains.empty())
    soma = None
    if membrane_report is not None and Path(membrane_report).exists():
        t, v = read_soma_trace(Path(membrane_report), cell_population)
        # the report's step is the run's (BMTK samples every step); a trace that says
        # otherwise keeps its own
        step = float(t[1] - t[0]) if t.size > 1 else float(dt_ms)
        step = float(dt_ms) if abs(step - dt_ms) < 1e-9 * dt_ms else step
        soma = SomaTrace(v_mv=v, t0_ms=float(t[0]), dt_ms=step)
    return RunRecord(
        tstop_ms=float(tstop_ms),
        dt_ms=float(dt_ms),
        cell_spikes_ms=cell.timestamps,
        inputs=inputs,
        input_nodes=dict(input_nodes),
        soma=soma,
        cell_node_id=int(node_ids[0]) if node_ids.size else 0,
    )
