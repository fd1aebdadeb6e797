"""The project's own simulation driver (engines `neuron` and `coreneuron`): the network BMTK
builds, without BMTK's BioNet simulator objects.

    python -m l5assets.simulation.runner CONFIG --engine neuron [--output-dir DIR] ...
    python -m l5assets.simulation.runner CONFIG --engine coreneuron [--min-delay MS] ...

Reads the BMTK simulation config (`config.json` of `write_sim_config`), the SONATA node,
edge and input spike files (h5py / pandas), builds the cell with our builder
(`bmtk_hook.cell_from_node`, as the BMTK hook does) and its synapses with our `SynapsePool`,
replays the inputs with built-in `PatternStim`s, runs with NEURON's standard run system and
writes the runner's outputs (`spikes.h5`, `<var>_report.h5`, `synapses.parquet`, `dend_v.h5`,
`result.json` with `"engine": "neuron"`).

Everything BioNet 1.2 does that changes numbers is done the same way, in the same order, so
that the `bionet` and `neuron` engines give identical results (tested):
- cell: nseg from `run.dL` (BMTK's own re-segmentation with the same dL is a no-op), spike
  detector NetCon on soma[0](0.5) with `run.spike_threshold`, `pc.cell(gid, nc)`;
- simulator set-up right after the cell: h.dt, h.tstop, steps_per_ms = 1/dt,
  `pc.setup_transfer()`, `pc.set_maxstep(10)`, one `h.stdinit()` (BMTK initialises once
  before the inputs exist), then h.v_init and h.celsius from `conditions`. BioNet turns on
  `cvode.cache_efficient` only when NEURON has `PtrVector.ptr_update_callback`, which NEURON
  9.0.2 lacks: off here as well;
- inputs in the config's order; per input population its edge populations in the circuit's
  order, their edges in the order of the target index (`indices/target_to_source`, what
  BioNet's `get_target` iterates); an edge with `sec_id`/`sec_x` gets one synapse there; an
  edge with `nsyns` gets `nsyns` synapses placed by `place_synapses` (BioNet's algorithm: the
  segments of the target section types overlapping `distance_range`, each weighted by its
  overlapping length, drawn with `RandomState.choice` from the cell's generator, which the
  runner seeds with `runner.placement_random_state(seed)`), all point processes of an edge
  first, then its NetCons (`pc.gid_connect`, weight[0] = syn_weight, delay);
- W and sids by `synapses.configure_connections` (same keys as BMTK's path), the table by
  `runner.synapse_table`;
- `h.run()` (stdinit + continuerun to tstop); reports sample every step after the first
  (BioNet never records the initial state).

Differences from BioNet's files:
- `spikes.h5`: no gzip; `sorting` is the SONATA enum (none/by_id/by_time), "by_time" (BioNet
  writes the string "none", which libsonata cannot read);
- `<var>_report.h5`: `data` in float32 (SONATA's type, the only one libsonata 0.2 reads;
  BioNet writes float64: our values are BioNet's rounded to float32), with `units`; `time`
  with units "ms"; no gzip/chunking; mapping `index_pointers` (SONATA's name) and
  `index_pointer` (BMTK's, a hard link to the same dataset); the SWC-id mapping columns BioNet
  adds for non-soma reports are not written. As in BioNet, `time` is [tstart, tstop, dt]
  while sample k is the value at tstart + (k + 1) * dt (`summary.read_soma_trace` knows this).

Engine `coreneuron` builds the same network, then runs it in CoreNEURON (direct mode, in this
process): fixed step, `cvode.cache_efficient(1)`, `pc.set_maxstep(10)`, `stdinit`,
`pc.psolve` in CORENEURON_PROGRESS_STEPS chunks up to tstop (a progress line after each);
same output files (`result.json` adds `merge_inputs`, `min_delay_ms`,
`delays_raised`, `mechanisms_build`). What differs from engine `neuron`:
- mechanisms: the `nrnivmodl -coreneuron` build (cache entry
  `mechanisms-<hash>-exact-coreneuron-cf<flags>`, compiled on first use with the record's
  flags, same content hash); CORENEURONLIB names its libcorenrnmech.so;
- inputs: ONE PatternStim replays every input population (CoreNEURON's direct mode takes a
  single PatternStim: `nrn2core_patstim_share_info` asserts `nodecount == 1`). Events of
  equal time then reach the synapses in another order than with one PatternStim per
  population, which changes V by rounding only (~1e-8 mV on the test network, spikes equal).
  Engine `neuron` does the same with `merge_inputs=True` (`--merge-inputs`; off by default,
  so that `neuron` stays identical to `bionet`): compare `coreneuron` with that;
- NetCon delays must exceed dt (CoreNEURON's rule: "usable mindelay is 0 (or less than dt
  for fixed step method)"). A network with a delay <= dt (the reference's 0.1 ms at dt 0.1 ms)
  runs unchanged by shifting the input replay: every input spike is replayed `input_shift_ms`
  = 2 dt - (shortest delay) earlier and every input NetCon's delay is that much longer, so each
  event reaches its synapse at the same time as before (the inputs are the only NetCons).
  Only where every arrival (spike time + delay) lies away from a half-step boundary, where
  the rounding of the shifted sum could move an event by a step: input times on the ms grid
  with the study's 0.1 ms delay at dt 0.1 ms arrive mid-step; otherwise EngineError. Same
  spikes as engine neuron with merged inputs, V equal to float32
  rounding (tested). `result.json` records `input_shift_ms`; the synapse table keeps the
  model's delays. `min_delay_ms` (> dt, `--min-delay MS`) instead raises every shorter delay to
  MS, which changes the model; the value and the number of raised delays are in `result.json`
  and in the synapse table's `delay` column;
- no progress events (Python callbacks do not run inside CoreNEURON); reports record every
  step (a sampling interval comes back empty under CoreNEURON, nrn issue 2101);
- one thread only (threads/multisplit have been seen to give wrong output): refused
  otherwise.
"""

from __future__ import annotations

import ast
import json
import os
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from l5assets.rng import stage_seed
from l5assets.simulation.progress import PROGRESS_PREFIX, say_stage
from l5assets.simulation.runner import (
    EngineError,
    _record_hot_zone,
    apply_rate_tables,
    check_engine_options,
    placement_random_state,
    replay_spikes,
    report_progress,
    synapse_table,
    write_outputs,
)

ENGINE = "neuron"
CORENEURON = "coreneuron"
CORENEURON_PROGRESS_STEPS = 10  # psolve chunks (each a round trip NEURON <-> CoreNEURON)
SPIKE_SORTING = h5py.enum_dtype({"none": 0, "by_id": 1, "by_time": 2}, basetype="u1")
# BioNet's section-name prefix -> SWC type code, and its target-section labels
SWC_TYPE = {"soma": 1, "axon": 2, "dend": 3, "apic": 4}
SECTION_LABELS = {
    "soma": 1,
    "somatic": 1,
    "axon": 2,
    "axonal": 2,
    "dend": 3,
    "basal": 3,
    "apic": 4,
    "apical": 4,
}
UNITS = {"v": "mV", "cai": "mM", "ica": "mA/cm2", "ik": "mA/cm2", "ina": "mA/cm2"}
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


# ---------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class EngineOptions:
    """How the driver runs: engine ("neuron" | "coreneuron"), one merged input PatternStim
    (always under coreneuron), the minimum NetCon delay coreneuron raises shorter delays to
    (None: keep the delays, replay the inputs earlier), threads (1 only)."""

    engine: str = ENGINE
    merge_inputs: bool = False
    min_delay_ms: float | None = None
    threads: int = 1

    def check(self) -> None:
        """Raise EngineError for an option the engine does not take."""
        if self.engine not in (ENGINE, CORENEURON):
            raise EngineError(f"engine {self.engine!r}: the driver runs neuron or coreneuron")
        check_engine_options(
            self.engine,
            merge_inputs=self.merge_inputs,
            min_delay_ms=self.min_delay_ms,
            threads=self.threads,
        )

    @property
    def merged(self) -> bool:
        """Whether the inputs are replayed by one PatternStim."""
        return self.merge_inputs or self.engine == CORENEURON


@dataclass(frozen=True)
class InputSpec:
    """One spike input of the config: its name, population and SONATA spike file."""

    name: str
    population: str
    spike_file: Path


@dataclass(frozen=True)
class ReportSpec:
    """One membrane report: variable, node set, section type(s) ('soma', 'all', ...)."""

    name: str
    variable: str
    cells: str
    sections: tuple[str, ...]


@dataclass(frozen=True)
class DriverConfig:
    """What the driver needs from a BMTK simulation config, paths resolved."""

    path: Path
    tstart: float
    tstop: float
    dt: float
    dL: float
    spike_threshold: float
    v_init: float
    celsius: float
    nodes: tuple[tuple[Path, Path], ...]  # (nodes h5, node types csv)
    edges: tuple[tuple[Path, Path], ...]  # (edges h5, edge types csv)
    inputs: tuple[InputSpec, ...]
    reports: tuple[ReportSpec, ...]
    node_sets: dict[str, Any]
    output_dir: Path
    spikes_file: Path
    cells_dir: Path
    synapses_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


def _substitute(value: Any, variables: dict[str, str]) -> Any:
    """Replace $VAR / ${VAR} in every string of a JSON value."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables) for k, v in value.items()}
    return value


def _read_part(path: Path) -> dict[str, Any]:
    """One SONATA config file with its manifest applied (`${configdir}` = its own folder;
    manifest entries may name each other)."""
    raw = json.loads(path.read_text())
    variables = {"configdir": str(path.parent.resolve())}
    manifest = dict(raw.pop("manifest", {}))
    for _ in range(len(manifest) + 1):  # entries may refer to each other, in any order
        for k, v in manifest.items():
            variables[k.lstrip("$").strip("{}")] = _substitute(v, variables)
    return _substitute(raw, variables)


def _population_of_node_set(name: str, node_sets: dict[str, Any]) -> str:
    spec = node_sets.get(name, {"population": name})
    if set(spec) != {"population"}:
        raise NotImplementedError(f"node set {name!r}: only whole populations are supported")
    return str(spec["population"])


def read_config(config: Path, output_dir: Path | None = None) -> DriverConfig:
    """Read CONFIG (the top-level config.json naming the circuit and simulation files).

    Without a `components` section the project's component folders are used (as the runner
    does); `output_dir` replaces the config's output folder.
    """
    from l5assets import paths

    config = Path(config).resolve()
    top = json.loads(config.read_text())
    merged: dict[str, Any] = {}
    for key in ("network", "simulation"):
        if key in top:
            merged.update(_read_part(config.parent / top[key]))
    rest = {k: v for k, v in top.items() if k not in ("network", "simulation")}
    merged.update(_substitute(rest, {"configdir": str(config.parent)}))
    run, cond, out = merged["run"], merged.get("conditions", {}), merged["output"]
    comps = merged.get("components", {})
    node_sets = {}
    if merged.get("node_sets_file"):
        node_sets = json.loads(Path(merged["node_sets_file"]).read_text())
    out_dir = Path(output_dir or out["output_dir"]).resolve()
    inputs = tuple(
        InputSpec(
            name, _population_of_node_set(spec["node_set"], node_sets), Path(spec["input_file"])
        )
        for name, spec in merged.get("inputs", {}).items()
        if spec.get("input_type") == "spikes"
    )
    others = [n for n, s in merged.get("inputs", {}).items() if s.get("input_type") != "spikes"]
    if others:
        raise NotImplementedError(f"inputs {others}: only spike inputs are supported")
    reports = []
    for name, spec in merged.get("reports", {}).items():
        if spec.get("module") != "membrane_report":
            raise NotImplementedError(f"report {name}: only membrane reports are supported")
        secs = spec.get("sections", "soma")
        reports.append(
            ReportSpec(
                name,
                str(spec["variable_name"]),
                str(spec["cells"]),
                tuple(s.lower() for s in (secs if isinstance(secs, list) else [secs])),
            )
        )
    net = merged["networks"]
    return DriverConfig(
        path=config,
        tstart=float(run.get("tstart", 0.0)),
        tstop=float(run["tstop"]),
        dt=float(run["dt"]),
        dL=float(run.get("dL", 20.0)),
        spike_threshold=float(run.get("spike_threshold", -15.0)),
        v_init=float(cond.get("v_init", -80.0)),
        celsius=float(cond.get("celsius", 34.0)),
        nodes=tuple((Path(n["nodes_file"]), Path(n["node_types_file"])) for n in net["nodes"]),
        edges=tuple((Path(e["edges_file"]), Path(e["edge_types_file"])) for e in net["edges"]),
        inputs=inputs,
        reports=tuple(reports),
        node_sets=node_sets,
        output_dir=out_dir,
        spikes_file=out_dir / Path(out.get("spikes_file", "spikes.h5")).name,
        cells_dir=Path(comps.get("biophysical_neuron_models_dir", paths.cells_dir())),
        synapses_dir=Path(comps.get("synaptic_models_dir", paths.synaptic_models_dir())),
        extra=dict(merged.get("l5assets", {})),
    )


# ---------------------------------------------------------------------------------------------
# SONATA nodes and edges


def _types_table(csv_path: Path) -> dict[int, dict[str, Any]]:
    """A *_types.csv as {type id: {column: value}} (empty cells left out)."""
    df = pd.read_csv(csv_path, sep=" ")
    key = "node_type_id" if "node_type_id" in df.columns else "edge_type_id"
    out = {}
    for row in df.to_dict("records"):
        out[int(row[key])] = {
            k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))
        }
    return out


@dataclass(frozen=True)
class Population:
    """One node population: its size and, per node, its properties (types merged)."""

    name: str
    n_nodes: int
    nodes: list[dict[str, Any]]


def read_nodes(nodes_h5: Path, types_csv: Path) -> list[Population]:
    """The populations of one nodes file, each node's properties = type row + group columns."""
    types = _types_table(types_csv)
    pops = []
    with h5py.File(nodes_h5, "r") as f:
        for name, g in f["nodes"].items():
            type_ids = g["node_type_id"][()]
            n = len(type_ids)
            ids = g["node_id"][()] if "node_id" in g else np.arange(n)
            grp_ids = g["node_group_id"][()] if "node_group_id" in g else np.zeros(n, int)
            grp_idx = g["node_group_index"][()] if "node_group_index" in g else np.arange(n)
            nodes = []
            for i in range(n):
                props = dict(types[int(type_ids[i])])
                grp = g[str(int(grp_ids[i]))]
                for col, ds in grp.items():
                    if isinstance(ds, h5py.Dataset):
                        v = ds[int(grp_idx[i])]
                        props[col] = v.decode() if isinstance(v, bytes) else v
                props["node_id"] = int(ids[i])
                nodes.append(props)
            pops.append(Population(name, int(max(ids, default=-1)) + 1, nodes))
    return pops


@dataclass(frozen=True)
class Edge:
    """One edge row: source node id and its properties (edge type merged with group columns)."""

    source_node_id: int
    props: dict[str, Any]


def _edge_order(g: h5py.Group, target_node_id: int) -> np.ndarray:
    """Edge rows onto one target, in the order of the target index (BioNet's order)."""
    idx = g.get("indices/target_to_source")
    if idx is None:  # no index: file order
        return np.flatnonzero(g["target_node_id"][()] == target_node_id)
    lookup = idx["node_id_to_range"][()]
    if target_node_id >= len(lookup):
        return np.zeros(0, np.int64)
    ranges = idx["range_to_edge_id"][()][lookup[target_node_id][0] : lookup[target_node_id][1]]
    parts = [np.arange(int(a), int(b), dtype=np.int64) for a, b in ranges]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _parse_edge_type(props: dict[str, Any]) -> dict[str, Any]:
    # the two list-valued columns are written as text; parse them as BioNet does
    p = dict(props)
    if isinstance(p.get("target_sections"), str):
        p["target_sections"] = list(ast.literal_eval(p["target_sections"]))
    if isinstance(p.get("distance_range"), str):
        try:
            p["distance_range"] = [float(v) for v in json.loads(p["distance_range"])]
        except json.JSONDecodeError:
            p["distance_range"] = [0.0, float(p["distance_range"])]
    return p


def read_edges(
    edges_h5: Path, types_csv: Path, source: str, target: str, target_node_id: int
) -> Iterator[Edge]:
    """The edges from population `source` onto node `target_node_id` of `target`."""
    types = {k: _parse_edge_type(v) for k, v in _types_table(types_csv).items()}
    with h5py.File(edges_h5, "r") as f:
        for g in f["edges"].values():
            if (
                g["source_node_id"].attrs["node_population"] != source
                or g["target_node_id"].attrs["node_population"] != target
            ):
                continue
            rows = _edge_order(g, target_node_id)
            src = g["source_node_id"][()]
            type_ids = g["edge_type_id"][()]
            grp_ids = g["edge_group_id"][()]
            grp_idx = g["edge_group_index"][()]
            cols: dict[int, dict[str, np.ndarray]] = {}
            for gid in np.unique(grp_ids):
                grp = g[str(int(gid))]
                cols[int(gid)] = {k: v[()] for k, v in grp.items() if isinstance(v, h5py.Dataset)}
            for r in rows:
                props = dict(types[int(type_ids[r])])
                for k, v in cols[int(grp_ids[r])].items():
                    props[k] = v[grp_idx[r]]
                yield Edge(int(src[r]), props)


# ---------------------------------------------------------------------------------------------
# synapse placement (BioNet's algorithm, our implementation)


@dataclass(frozen=True)
class SegmentProps:
    """Per segment of the cell, in BioNet's order (sections of `cell.all`, segments within):
    section, x, SWC type, length and path distance of its centre from soma[0](0)."""

    sections: list[Any]
    x: np.ndarray
    swc_type: np.ndarray
    length: np.ndarray
    dist: np.ndarray

    @classmethod
    def of(cls, cell: Any) -> SegmentProps:
        """The segment table of a built cell."""
        from neuron import h

        origin = cell.soma[0](0.0)
        secs, xs, types, lens, dists = [], [], [], [], []
        for sec in cell.all:
            code = SWC_TYPE[sec.name().rsplit(".", 1)[-1][:4]]
            for seg in sec:
                secs.append(sec)
                xs.append(seg.x)
                types.append(code)
                lens.append(sec.L / sec.nseg)
                dists.append(h.distance(origin, seg))
        return cls(secs, np.array(xs), np.array(types), np.array(lens), np.array(dists))

    def targets(
        self, section_labels: list[str], distance_range: list[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(segment indices, probabilities): segments of the labelled types that overlap
        [dmin, dmax], each with probability proportional to its overlapping length."""
        dmin, dmax = float(distance_range[0]), float(distance_range[1])
        half = self.length / 2.0
        lo, hi = self.dist - half, self.dist + half
        frac = np.maximum(0, np.minimum(hi, dmax) - np.maximum(lo, dmin)) / self.length
        codes = [SECTION_LABELS[s] for s in section_labels]
        # sorted, unique segment indices (BioNet intersects two index sets)
        ix = np.flatnonzero((frac > 0) & np.isin(self.swc_type, codes))
        w = self.length[ix] * frac[ix]
        return ix, w / np.sum(w)


def place_synapses(
    segs: SegmentProps,
    rng: np.random.RandomState,
    nsyns: int,
    section_labels: list[str],
    distance_range: list[float],
    cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]],
) -> list[tuple[Any, float]]:
    """`nsyns` (section, x) locations drawn with `rng` as BioNet draws them (one
    `choice(targets, nsyns, p)` per edge); [] without any target segment."""
    key = (tuple(section_labels), tuple(distance_range))
    if key not in cache:
        cache[key] = segs.targets(section_labels, distance_range)
    ix, p = cache[key]
    if not len(ix):
        warnings.warn(f"no target segment for {key}: edge skipped (as BioNet)", stacklevel=2)
        return []
    chosen = rng.choice(ix, int(nsyns), p=p)
    return [(segs.sections[i], float(segs.x[i])) for i in chosen]


# ---------------------------------------------------------------------------------------------
# the network


@dataclass
class Network:
    """The built network: cell, connections (NetCon + key), replayed inputs, gids."""

    cell: Any
    cell_population: str
    node_id: int
    cell_gid: int
    spike_detector: Any
    connections: list[tuple[Any, Any]] = field(default_factory=list)
    stims: list[Any] = field(default_factory=list)
    input_spike_counts: dict[str, int] = field(default_factory=dict)


def _build_cell(conf: DriverConfig, pops: list[Population]) -> tuple[Population, Any]:
    from l5assets.cell.bmtk_hook import cell_from_node

    bio = [p for p in pops if any(n.get("model_type") == "biophysical" for n in p.nodes)]
    if len(bio) != 1 or len(bio[0].nodes) != 1:
        raise RuntimeError("expected one population with one biophysical node")
    node = bio[0].nodes[0]
    dyn = node.get("dynamics_params")
    if isinstance(dyn, str) and dyn.endswith(".json"):  # BioNet hands the parsed file over
        dyn = json.loads((conf.cells_dir / dyn).read_text())
    template = str(node.get("model_template", "")).split(":", 1)[-1]
    return bio[0], cell_from_node(dyn, node.get("morphology"), conf.dL, template)


@dataclass
class _EdgeBuilder:
    """Makes the synapses and NetCons of edges onto the cell, in BioNet's order."""

    net: Network
    pool: Any
    models_dir: Path
    place: Any  # (nsyns, section labels, distance range) -> [(section, x)]
    models: dict[str, Any] = field(default_factory=dict)

    def model(self, dynamics_file: str) -> Any:
        """The validated synapse model of a dynamics file (parsed once)."""
        from l5assets.cell.synapses import synapse_model

        if dynamics_file not in self.models:
            self.models[dynamics_file] = synapse_model(self.models_dir / dynamics_file)
        return self.models[dynamics_file]

    def connect(self, edge: Edge, pop: str, first_gid: int) -> None:
        """One edge: its point process(es) first, then one NetCon each."""
        from neuron import h

        pc = h.ParallelContext()
        p = edge.props
        model = self.model(str(p["dynamics_params"]))
        if str(p.get("model_template", model.mechanism)) != model.mechanism:
            raise ValueError(f"edge model_template {p['model_template']} != {model.mechanism}")
        if "sec_id" in p:
            locs = [(self.net.cell.all[int(p["sec_id"])], float(p["sec_x"]))]
        else:
            locs = self.place(
                int(p["nsyns"]), list(p["target_sections"]), list(p["distance_range"])
            )
        pps = [self.pool.point_process(model, sec, x) for sec, x in locs]
        for pp in pps:
            nc = pc.gid_connect(first_gid + edge.source_node_id, pp)
            nc.weight[0] = float(p["syn_weight"])
            nc.delay = float(p["delay"])
            self.net.connections.append((nc, (pop, edge.source_node_id)))


def _read_spikes(path: Path, pop: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f.get(f"spikes/{pop}")
        if g is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        ts = g["timestamps"][()].astype(np.float64)
        if g["timestamps"].attrs.get("units", "ms") in ("s", b"s"):
            ts = ts * 1000.0
        return g["node_ids"][()].astype(np.int64), ts


def build_network(conf: DriverConfig, pool: Any, seed: int, merge_inputs: bool = False) -> Network:
    """Cell, simulator set-up (as BioNet does it between cell and inputs), synapses, inputs:
    one PatternStim per input population, or with `merge_inputs` one for all of them (what
    CoreNEURON takes)."""
    from neuron import h

    pc = h.ParallelContext()
    pops = [p for nodes, types in conf.nodes for p in read_nodes(nodes, types)]
    cell_pop, cell = _build_cell(conf, pops)
    first_gid, gid = {}, 0
    for p in pops:  # gids: populations one after another, in the circuit's order
        first_gid[p.name] = gid
        gid += p.n_nodes
    node_id = int(cell_pop.nodes[0]["node_id"])
    cell_gid = first_gid[cell_pop.name] + node_id
    pc.set_gid2node(cell_gid, pc.id())
    det = h.NetCon(cell.soma[0](0.5)._ref_v, None, sec=cell.soma[0])
    det.threshold = conf.spike_threshold
    pc.cell(cell_gid, det)
    net = Network(cell, cell_pop.name, node_id, cell_gid, det)

    _init_simulator(conf)
    segs = SegmentProps.of(cell)
    rng = placement_random_state(seed)
    cache: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}

    def place(n: int, labels: list[str], drange: list[float]) -> list[tuple[Any, float]]:
        return place_synapses(segs, rng, n, labels, drange, cache)

    edges = _EdgeBuilder(net, pool, conf.synapses_dir, place)
    sizes = {p.name: p.n_nodes for p in pops}
    merged: list[tuple[np.ndarray, np.ndarray]] = []  # (gids, times) of every population
    for inp in conf.inputs:
        for edges_h5, types_csv in conf.edges:
            for edge in read_edges(edges_h5, types_csv, inp.population, cell_pop.name, net.node_id):
                edges.connect(edge, inp.population, first_gid[inp.population])
        ids, ts = _read_spikes(inp.spike_file, inp.population)
        net.input_spike_counts[inp.population] = int(len(ids))
        n, first = sizes[inp.population], first_gid[inp.population]
        if merge_inputs:
            if ids.size and (ids.min() < 0 or ids.max() >= n):  # it would hit another's gid
                raise ValueError(f"spike input for {inp.population}: node ids outside [0, {n})")
            merged.append((ids + first, ts))
        elif len(ids):
            net.stims.append(replay_spikes(inp.population, ids, ts, first_gid=first, n_nodes=n))
    if merged and sum(len(g) for g, _ in merged):
        gids = np.concatenate([g for g, _ in merged])
        ts = np.concatenate([t for _, t in merged])
        net.stims.append(replay_spikes("all inputs", gids, ts, first_gid=0, n_nodes=gid))
    return net


def _init_simulator(conf: DriverConfig) -> None:
    """BioSimulator's set-up, done where BioNet does it (after the cells, before inputs)."""
    from neuron import h

    pc = h.ParallelContext()
    h.load_file("stdrun.hoc")
    h.dt = conf.dt
    h.tstop = conf.tstop
    h.steps_per_ms = 1.0 / conf.dt
    pc.setup_transfer()
    pc.set_maxstep(10)
    h.stdinit()
    h.v_init = conf.v_init
    h.celsius = conf.celsius


# ---------------------------------------------------------------------------------------------
# recording and output files


@dataclass
class Report:
    """One membrane report being recorded: element ids/positions and one Vector each."""

    spec: ReportSpec
    population: str
    node_id: int
    element_ids: list[int]
    element_pos: list[float]
    vectors: list[Any]


def record_report(spec: ReportSpec, net: Network) -> Report:
    """Vectors recording `spec.variable` every step: the soma centre for a 'soma' report
    (element 0 at 0.5, as BioNet), else every segment of the named section types."""
    from neuron import h

    cell = net.cell
    if spec.sections == ("soma",):
        locs = [(0, cell.soma[0], 0.5)]
    else:
        wanted = set(SWC_TYPE.values()) if "all" in spec.sections else set()
        wanted |= {SECTION_LABELS[s] for s in spec.sections if s in SECTION_LABELS}
        locs = [
            (i, sec, seg.x)
            for i, sec in enumerate(cell.all)
            if SWC_TYPE[sec.name().rsplit(".", 1)[-1][:4]] in wanted
            for seg in sec
        ]
    vecs = []
    for _, sec, x in locs:
        v = h.Vector()
        v.record(getattr(sec(x), f"_ref_{spec.variable}"))
        vecs.append(v)
    return Report(
        spec,
        net.cell_population,
        net.node_id,
        [i for i, _, _ in locs],
        [float(x) for _, _, x in locs],
        vecs,
    )


def write_report(path: Path, rep: Report, tstart: float, tstop: float, dt: float) -> None:
    """A SONATA compartment report of one cell, uncompressed (libsonata 0.2 reads no gzip).

    Sample k is the value after step k + 1 (BioNet's convention, see the module doc); one row
    per step up to tstop.
    """
    n_steps = int(round((tstop - tstart) / dt))
    data = np.stack([np.asarray(v)[1 : n_steps + 1] for v in rep.vectors], axis=1)
    with h5py.File(path, "w") as f:
        f.attrs["magic"] = np.uint32(0x0A7A)
        f.attrs["version"] = np.array([0, 1], dtype=np.uint32)
        g = f.create_group(f"report/{rep.population}")
        # float32 as SONATA has it (libsonata refuses float64; BioNet writes float64)
        ds = g.create_dataset("data", data=data.astype(np.float32))
        ds.attrs["variable"] = rep.spec.variable
        ds.attrs["units"] = UNITS.get(rep.spec.variable, "")  # libsonata needs the attribute
        m = g.create_group("mapping")
        m.create_dataset("node_ids", data=np.array([rep.node_id], dtype=np.uint64))
        m.create_dataset("index_pointers", data=np.array([0, data.shape[1]], dtype=np.uint64))
        m["index_pointer"] = m["index_pointers"]  # BMTK's reader (and ours) use this name
        m.create_dataset("element_ids", data=np.array(rep.element_ids, dtype=np.uint64))
        m.create_dataset("element_pos", data=np.array(rep.element_pos, dtype=np.float64))
        t = m.create_dataset("time", data=np.array([tstart, tstop, dt], dtype=np.float64))
        t.attrs["units"] = "ms"  # libsonata needs it


def write_spikes(path: Path, population: str, node_id: int, times: np.ndarray) -> None:
    """The cell's spikes as a SONATA spike file, sorted by time, uncompressed, `sorting` as
    SONATA's enum (what libsonata reads; BMTK's reader accepts it too)."""
    ts = np.sort(np.asarray(times, dtype=np.float64))
    with h5py.File(path, "w") as f:
        f.attrs["magic"] = np.uint32(0x0A7A)
        f.attrs["version"] = np.array([0, 1], dtype=np.uint32)
        g = f.create_group(f"spikes/{population}")
        g.attrs.create("sorting", 2, dtype=SPIKE_SORTING)
        t = g.create_dataset("timestamps", data=ts)
        t.attrs["units"] = "ms"
        g.create_dataset("node_ids", data=np.full(ts.size, node_id, dtype=np.uint64))


# ---------------------------------------------------------------------------------------------
# the run


def _mechanisms(record: Path | None, coreneuron: bool) -> Any:
    """The compiled mechanisms to load: the record's (the pipeline's build), or the project's
    (compiled, cached). Engine coreneuron needs the -coreneuron build: compiled on first use
    next to the record's entry, from the same .mod files (same content hash, or refused)."""
    from l5assets.cell.mechanisms import (
        CompiledMechanisms,
        StaleMechanismsError,
        compile_mechanisms,
        for_this_cpu,
        with_coreneuron,
    )

    if record is None:
        return compile_mechanisms(coreneuron=coreneuron, on_progress=say_stage)
    compiled = for_this_cpu(CompiledMechanisms.from_record(record), say_stage)
    if not coreneuron:
        return compiled
    try:
        return with_coreneuron(compiled, say_stage)
    except StaleMechanismsError as e:
        raise EngineError(f"--mechanisms {record}: {e}") from None


def apply_min_delay(delays: list[float], dt: float, min_delay_ms: float | None) -> list[float]:
    """The NetCon delays engine coreneuron runs with under `--min-delay`: every delay shorter
    than `min_delay_ms` (> dt, else EngineError naming the option and the allowed range)
    raised to it; unchanged without the option."""
    d = np.asarray(delays, dtype=np.float64)
    if min_delay_ms is None:
        return d.tolist()
    if not min_delay_ms > dt:
        raise EngineError(
            f"--min-delay {min_delay_ms:g}: must exceed dt = {dt:g} ms (allowed: > {dt:g})"
        )
    return np.maximum(d, min_delay_ms).tolist()


def input_shift(delays: list[float], dt: float) -> float:
    """How much earlier engine coreneuron replays the inputs (and how much longer it makes
    their NetCon delays) so that every delay exceeds dt with each event arriving when it did:
    0 if every delay already exceeds dt, else 2 dt - the shortest delay."""
    if not len(delays):
        return 0.0
    shortest = float(np.min(delays))
    return 0.0 if shortest > dt else 2.0 * dt - shortest


def _coreneuron_delays(net: Network, dt: float, min_delay_ms: float | None) -> int:
    """With `min_delay_ms`, raise the shorter NetCon delays; returns how many were raised."""
    old = [float(nc.delay) for nc, _ in net.connections]
    new = apply_min_delay(old, dt, min_delay_ms)
    raised = 0
    for (nc, _), a, b in zip(net.connections, old, new, strict=True):
        if b != a:
            nc.delay = b
            raised += 1
    return raised


def check_arrivals_mid_step(times: np.ndarray, delays: np.ndarray, dt: float) -> None:
    """EngineError unless every input event (spike time + delay) arrives away from a
    half-step boundary, where NEURON's fixed step delivers it: there the rounding of
    (t - shift) + (d + shift) against t + d could move an event by one step."""
    t = np.unique(np.asarray(times, dtype=np.float64))
    d = np.unique(np.asarray(delays, dtype=np.float64))
    if not t.size or not d.size:
        return
    r = (t[:, None] + d[None, :]) / dt
    off = np.abs(r - np.floor(r) - 0.5)
    if (off < 1e-6).any():
        raise EngineError(
            f"engine coreneuron: input events arrive on half-step boundaries (dt {dt:g} ms, "
            f"delays {', '.join(f'{x:g}' for x in d)} ms), where replaying them earlier could "
            "move an event by one step; allowed: arrival times away from (k + 0.5) dt (use "
            "engine neuron, or --min-delay MS)"
        )


def _shift_inputs(net: Network, dt: float) -> float:
    """Replay every input earlier and lengthen every input NetCon's delay by `input_shift`
    (arrival times unchanged); returns the shift in ms."""
    delays = [float(nc.delay) for nc, _ in net.connections]
    shift = input_shift(delays, dt)
    if shift:
        times = [np.asarray(tvec) for _, tvec, _ in net.stims]
        check_arrivals_mid_step(np.concatenate(times) if times else np.zeros(0), delays, dt)
        from neuron import h

        for nc, _ in net.connections:
            nc.delay = float(nc.delay) + shift
        # a new play(): CoreNEURON takes a PatternStim's spikes as they were when played
        for k, (ps, tvec, gvec) in enumerate(net.stims):
            shifted = h.Vector(np.asarray(tvec) - shift)
            ps.play(shifted, gvec)
            net.stims[k] = (ps, shifted, gvec)
    return shift


def _run(conf: DriverConfig, engine: str) -> None:
    """Initialise and run to tstop: stdrun's h.run() with progress events (neuron), or
    CoreNEURON's psolve (coreneuron: no Python events can run inside CoreNEURON)."""
    from neuron import h

    pc = h.ParallelContext()
    if engine == ENGINE:
        progress = report_progress(h, conf.tstop)  # keep the handler alive for the run
        pc.timeout(0)
        h.run()
        del progress
        return
    from neuron import coreneuron

    h.cvode.cache_efficient(1)
    coreneuron.enable = True
    coreneuron.verbose = 0
    pc.set_maxstep(10)  # again, now that the NetCons exist (the minimum delay CoreNEURON gets)
    pc.timeout(0)
    h.stdinit()
    # in chunks, for progress: each psolve hands the state and event queue back to NEURON and
    # the next continues from it (the chunked run equals engine neuron, test_driver.py; on
    # L5_quick seed 123 its files were byte-identical to one psolve's)
    for t in progress_marks(conf.tstop, conf.dt, CORENEURON_PROGRESS_STEPS):
        pc.psolve(t)
        print(f"{PROGRESS_PREFIX} {h.t:.3f} {conf.tstop:.3f}", flush=True)
    coreneuron.enable = False


def progress_marks(tstop: float, dt: float, steps: int) -> list[float]:
    """The times engine coreneuron stops at to report progress: about `steps` equal chunks,
    each ending on a whole time step, the last at tstop itself."""
    n = max(int(round(tstop / dt)), 1)
    ks = sorted({max(1, round(n * k / steps)) for k in range(1, steps + 1)})
    return [k * dt for k in ks[:-1]] + [tstop]


def run_driver(
    config: Path,
    output_dir: Path | None = None,
    share_synapses: bool = True,
    seed: int | None = None,
    mechanisms: Path | None = None,
    options: EngineOptions | None = None,
) -> dict[str, Any]:
    """Build and run CONFIG with the driver in this process; returns the result dict (the
    runner's keys, "engine": "neuron" or "coreneuron", plus the non-default engine options).
    Call once per process. EngineError for options or delays the engine cannot run."""
    t_start = time.perf_counter()
    opts = options or EngineOptions()
    opts.check()
    from l5assets.cell import synapses
    from l5assets.cell.mechanisms import load_mechanisms, with_rate_tables

    core = opts.engine == CORENEURON
    conf = read_config(Path(config), output_dir)
    compiled = _mechanisms(mechanisms, core)
    if conf.extra.get("rate_tables"):  # the build that keeps the TABLEs (the default drops them)
        compiled = with_rate_tables(compiled, on_progress=say_stage)
    if core:  # CoreNEURON finds our mechanisms only through this variable
        os.environ.update(compiled.coreneuron_env())
    load_mechanisms(compiled)
    say_stage(f"building the cell and its inputs (engine {opts.engine})")
    from neuron import h

    if core and opts.min_delay_ms is not None:
        apply_min_delay([], conf.dt, opts.min_delay_ms)  # a bad option fails before the build
    if seed is None:
        if "seed" not in conf.extra:
            raise ValueError(f"{config}: no seed given and none in the config's l5assets section")
        seed = int(conf.extra["seed"])
    gates = bool(conf.extra.get("exc_release_gates_transmission", False))
    tables = apply_rate_tables(conf.extra)
    conf.output_dir.mkdir(parents=True, exist_ok=True)
    stride = synapses.stride_for_duration(conf.tstop)
    pool = synapses.SynapsePool(
        release_seed=stage_seed(seed, "synapse_release"),
        share=share_synapses,
        release_gates_transmission=gates,
        stride=stride,
    )
    net = build_network(conf, pool, seed, merge_inputs=opts.merged)
    raised = _coreneuron_delays(net, conf.dt, opts.min_delay_ms) if core else 0
    t_built = time.perf_counter()

    say_stage(f"cell built in {t_built - t_start:.0f} s; placing its synapses")
    dend_rec = _record_hot_zone(net.cell, h)
    conns = synapses.configure_connections(_keys(net), pool, weight_seed=seed)
    table = synapse_table(conns, net.cell)
    for r in conf.reports:
        if _population_of_node_set(r.cells, conf.node_sets) != net.cell_population:
            raise NotImplementedError(f"report {r.name}: only the cell's population is recorded")
    reports = [record_report(r, net) for r in conf.reports]
    tvec, idvec = h.Vector(), h.Vector()
    h.ParallelContext().spike_record(net.cell_gid, tvec, idvec)
    # after the synapse table, which keeps the model's delays
    shift = _shift_inputs(net, conf.dt) if core and opts.min_delay_ms is None else 0.0
    t_setup = time.perf_counter()

    say_stage(f"{len(table)} synapses placed; simulating {conf.tstop:.0f} ms")
    _run(conf, opts.engine)
    t_run = time.perf_counter()
    max_events = pool.check_events(conns["netcon"])

    # BioNet saves the spikes of the steps up to tstop (its last block)
    spikes = np.asarray(tvec)
    write_spikes(
        conf.spikes_file,
        net.cell_population,
        net.node_id,
        spikes[spikes <= conf.tstop + conf.dt / 2],
    )
    for rep in reports:
        path = conf.output_dir / f"{rep.spec.name}.h5"
        write_report(path, rep, conf.tstart, conf.tstop, conf.dt)
    extra: dict[str, Any] = {"merge_inputs": True} if opts.merged else {}
    if tables:
        extra["rate_tables"] = True
    if core:
        extra.update(
            min_delay_ms=opts.min_delay_ms,
            delays_raised=raised,
            input_shift_ms=shift,
            mechanisms_build=CORENEURON,
        )
    return write_outputs(
        conf.output_dir,
        table,
        pool,
        dend_rec,
        engine=opts.engine,
        seed=seed,
        share_synapses=share_synapses,
        gates=gates,
        stride=stride,
        max_events=max_events,
        input_spikes=net.input_spike_counts,
        spikes_file=conf.spikes_file,
        tstop=conf.tstop,
        dt=conf.dt,
        mechanisms_hash=compiled.mod_hash,
        times=(t_start, t_built, t_setup, t_run),
        extra=extra,
    )


def _keys(net: Network) -> list[tuple[Any, Any]]:
    """(NetCon, ConnectionKey) per connection, keyed as BMTK's path keys them: the point
    process's own section index and segment x."""
    from l5assets.cell.synapses import ConnectionKey

    sec_ids = {sec.name(): i for i, sec in enumerate(net.cell.all)}
    out = []
    for nc, (pop, nid) in net.connections:
        seg = nc.syn().get_segment()
        out.append((nc, ConnectionKey(pop, int(nid), sec_ids[seg.sec.name()], float(seg.x))))
    return out
