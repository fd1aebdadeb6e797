"""Run one BMTK BioNet + NEURON simulation in its own process.

    python -m l5assets.simulation.runner CONFIG [--output-dir DIR]
        [--share-synapses | --no-share-synapses] [--seed N] [--mechanisms RECORD]
        [--engine {bionet,neuron,coreneuron}] [--merge-inputs] [--min-delay MS] [--threads N]

`--engine neuron` runs the same network with the project's own driver
(`l5assets.simulation.driver`, no BMTK simulator objects; identical results, tested);
`--engine coreneuron` runs the driver's network in CoreNEURON (see the driver's doc: one
merged input PatternStim, delays <= dt run by replaying the inputs earlier, one thread); the
default `bionet` is
described here. Options an engine cannot honour are refused with a one-line error (exit 2).

CONFIG is the `config.json` written by `l5assets.network.sim_config.write_sim_config`. The
process compiles/loads the project's mechanism library, registers our cell and synapse models
with BMTK, builds the cell, its synapses and the virtual inputs from the SONATA files, sets the
per-synapse parameters, runs, and writes into the output folder:

- `spikes.h5`: the cell's spikes (SONATA, written by BMTK),
- `<var>_report.h5`: membrane report(s) (SONATA compartment reports, written by BMTK),
- `synapses.parquet`: one row per synapse (the reference's Connections.csv, plus locations),
- `dend_v.h5`: V at the cell's Ca2+ recording site on the apical trunk (the validation's BAC
  site), every time step, for the dendritic Ca2+ spikes of the summary,
- `result.json`: counts and wall times (the only output that differs between identical runs,
  together with BMTK's `log.txt`).
BMTK empties/creates the output folder first (give a fresh one, e.g. a temp dir).

Virtual inputs: BMTK would drive each virtual cell with a `VecStim`, an NMODL mechanism that
NEURON itself does not contain. Instead every input synapse's NetCon listens to the input
cell's gid and one built-in `PatternStim` per input population replays its spike file (same
event times: spike time + NetCon delay). See `L5BioNetwork`.

Synapses are made by `l5assets.cell.synapses` (point-process pool, sharing on by default;
`--no-share-synapses` makes one point process per connection) and configured after BMTK has
made the NetCons (`configure_bmtk_connections`). Randomness, all from the partition seed
(SPEC 7 "Ours: seeded from the partition seed"):
- excitatory weights W: stage "synapse_weights", one draw per excitatory connection in the
  synapse module's stable `sid` order; inhibitory W 0.06 on the soma, 0.1 on dendrites;
- release draws: Random123 streams keyed by stage_seed("synapse_release") and `sid`, with
  `stride` positions per connection sized from tstop (`synapses.stride_for_duration`); runs
  too long for the number of connections are refused before the run, and after it the
  runner checks that no connection received `stride` events or more (`result.json`:
  `release_stride`, `max_events_per_connection`);
- inhibitory synapse placement: BMTK draws it per cell from `cell.prng`
  (numpy RandomState seeded with the cell's gid in BMTK, i.e. the same for every seed); we
  replace that generator with one spawned from the "inh_connectivity" stage of the seed
  (child key 1; the network build uses the stage's root stream for the nsyns counts).

Synapse table order (`synapse_id`): BMTK builds the inputs in the config's order (exc_stim,
prox_inh_stim, dist_inh_stim), each population's edges in file order, an edge's `nsyns`
synapses one after the other: fixed by the network files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l5assets.rng import stage_key, stage_seed
from l5assets.simulation.progress import PROGRESS_PREFIX, say_stage

SYNAPSES_FILE = "synapses.parquet"
DEND_FILE = "dend_v.h5"  # soma-independent hot-zone voltage, for the dendritic Ca2+ spikes
RESULT_FILE = "result.json"
PLACEMENT_CHILD = 1
ENGINES = ("bionet", "neuron", "coreneuron")


class EngineError(ValueError):
    """An engine option, or a value of the network, the chosen engine cannot run with (the
    message is one line naming the option or field and what is allowed)."""


def check_engine_options(
    engine: str, *, merge_inputs: bool = False, min_delay_ms: float | None = None, threads: int = 1
) -> None:
    """Refuse engine options that do not apply to `engine` (before anything is built)."""
    if engine not in ENGINES:
        raise EngineError(f"engine {engine!r}: not one of {', '.join(ENGINES)}")
    if threads != 1:
        why = (
            "CoreNEURON's threads/multisplit have been seen to give wrong output"
            if engine == "coreneuron"
            else "no threaded run is implemented"
        )
        raise EngineError(f"--threads {threads}: engine {engine} allows 1 thread only ({why})")
    if merge_inputs and engine != "neuron":
        raise EngineError(
            f"--merge-inputs: an option of engine neuron only (engine {engine} "
            + ("always merges its inputs)" if engine == "coreneuron" else "never does)")
        )
    if min_delay_ms is not None and engine != "coreneuron":
        raise EngineError(f"--min-delay: an option of engine coreneuron only, not {engine}")


def placement_random_state(seed: int) -> np.random.RandomState:
    """Generator for BMTK's inhibitory synapse placement (a RandomState, as BMTK calls it)."""
    seq = np.random.SeedSequence(
        entropy=int(seed), spawn_key=(stage_key("inh_connectivity"), PLACEMENT_CHILD)
    )
    return np.random.RandomState(np.random.MT19937(seq))


def _load_config(config: Path, output_dir: Path | None) -> Any:
    """bionet.Config from CONFIG, with the output folder optionally moved.

    A config without component folders (what `write_sim_config` writes by default, so that it
    embeds no checkout path) gets the project's: `paths.cells_dir()` and
    `paths.synaptic_models_dir()`.
    """
    from bmtk.simulator import bionet

    from l5assets import paths

    conf = bionet.Config.from_json(str(Path(config).resolve()))
    comps = dict(conf.get("components", {}))
    if "biophysical_neuron_models_dir" not in comps or "synaptic_models_dir" not in comps:
        comps.setdefault("biophysical_neuron_models_dir", str(paths.cells_dir()))
        comps.setdefault("synaptic_models_dir", str(paths.synaptic_models_dir()))
        d = dict(conf)
        d["components"] = comps
        conf = bionet.Config(d)
    if output_dir is not None:
        out_dir = Path(output_dir).resolve()
        d = dict(conf)
        out = dict(d["output"])
        out["output_dir"] = str(out_dir)
        for k in list(out):
            if k == "log_file" or k.startswith("spikes_file"):
                out[k] = str(out_dir / Path(out[k]).name)
        d["output"] = out
        conf = bionet.Config(d)
    return conf


def _network_class(seed: int) -> type:
    """BioNetwork subclass: seeded synapse placement and PatternStim-driven virtual inputs."""
    from bmtk.simulator.bionet import BioNetwork

    class L5BioNetwork(BioNetwork):
        """BMTK's BioNetwork with two changes, both invisible in the network files.

        1. Synapse placement (edges with target_sections/distance_range) draws from the
           partition seed, not from the cell's gid.
        2. Virtual input cells are not VecStim objects (VecStim is an NMODL mechanism that
           is not part of NEURON itself and that we do not ship): their synapses are connected
           to the input cells' gids with `pc.gid_connect`, and one built-in `PatternStim` per
           input population replays the spike file into those gids. Event times and NetCon
           delays are the same as with VecStim sources.
        """

        pattern_stims: list[Any]
        input_spike_counts: dict[str, int]

        def _init_connections(self) -> None:
            first = not self._connections_initialized
            super()._init_connections()
            if first:
                for _, cell in sorted(self._rank_node_gids.items()):
                    cell.prng = placement_random_state(seed)

        def add_spike_trains(self, spike_trains, node_set, spikes_generator=None, sim=None):
            if spike_trains is None:
                raise NotImplementedError("only spike-file inputs are supported")
            self._init_connections()
            if not hasattr(self, "pattern_stims"):
                self.pattern_stims, self.input_spike_counts = [], {}
            for node_pop in self.node_populations:
                pop = node_pop.name
                if pop not in node_set.population_names():
                    continue
                for edge_pop in self.find_edges(source_nodes=pop):
                    if not edge_pop.virtual_connections:
                        raise NotImplementedError(f"edges from {pop} are not all virtual")
                    for trg_nid, trg_cell in self._rank_node_ids[edge_pop.target_nodes].items():
                        for edge in edge_pop.get_target(trg_nid):
                            src = self.get_node_id(pop, edge.source_node_id)
                            trg_cell.set_syn_connection(edge, src, None)
                df = spike_trains.to_dataframe(populations=[pop], with_population_col=False)
                self.input_spike_counts[pop] = 0 if df is None else len(df)
                if df is None or not len(df):  # BMTK returns None for a population w/o spikes
                    continue
                stim = replay_spikes(
                    pop,
                    df["node_ids"].to_numpy(np.int64),
                    df["timestamps"].to_numpy(np.float64),
                    first_gid=self.gid_pool.get_gid(name=pop, node_id=0),
                    n_nodes=int(np.max(node_pop.node_ids)) + 1,
                )
                self.pattern_stims.append(stim)
            self.io.barrier()

    return L5BioNetwork


def rate_tables_asked(config: Path) -> bool:
    """Whether CONFIG's l5assets section asks for `rate_tables` (read before NEURON loads a
    mechanism library: that needs the build with the TABLEs)."""
    from l5assets.simulation.driver import read_config

    return bool(read_config(Path(config)).extra.get("rate_tables", False))


def apply_rate_tables(extra: dict[str, Any]) -> bool:
    """Switch the channels' rate TABLEs on if the config's l5assets section asks for
    `rate_tables` (they are off once the mechanisms are loaded: exact rate equations);
    returns whether it did."""
    tables = bool(extra.get("rate_tables", False))
    if tables:
        from l5assets.cell.mechanisms import set_rate_tables

        set_rate_tables(True)
    return tables


def replay_spikes(
    pop: str, node_ids: np.ndarray, timestamps: np.ndarray, *, first_gid: int, n_nodes: int
) -> tuple[Any, Any, Any]:
    """One built-in `PatternStim` replaying a population's spikes into the gids
    `first_gid + node id` (every NetCon made with `pc.gid_connect` to such a gid receives them).

    Returns (PatternStim, time Vector, gid Vector): keep them alive while simulating.
    """
    from neuron import h

    ids = np.asarray(node_ids, dtype=np.int64)
    ts = np.asarray(timestamps, dtype=np.float64)
    # an id outside the population would land on another population's gid
    if ids.size and (ids.min() < 0 or ids.max() >= n_nodes):
        raise ValueError(f"spike input for {pop}: node ids outside [0, {n_nodes})")
    order = np.lexsort((ids, ts))  # PatternStim needs nondecreasing times
    gids = ids[order] + int(first_gid)
    tvec, gvec = h.Vector(ts[order]), h.Vector(gids.astype(np.float64))
    ps = h.PatternStim()
    ps.play(tvec, gvec)
    return ps, tvec, gvec


def _section_type(name: str) -> str:
    """'soma' | 'dend' | 'apic' | 'axon' from a NEURON section name (`<cell>.<type>[i]`)."""
    return name.rsplit(".", 1)[-1].split("[")[0]


def synapse_table(conns: pd.DataFrame, cell: Any) -> pd.DataFrame:
    """The per-synapse table (SPEC 7 Connections.csv plus locations) from the configured
    connections of `l5assets.cell.synapses.configure_bmtk_connections`.

    One row per synapse, in BMTK's build order: synapse_id, source_population,
    source_node_id, model, mechanism, sid (release stream index), sec_id, x, section_type,
    segment (NEURON segment name), distance (path distance from soma[0](0), the segments
    table's origin), weight W, release_probability, syn_weight (NetCon weight[0]), delay,
    point_process (index of the point process; shared ones repeat).
    """
    from neuron import h

    origin = cell.soma[0](0.0)
    pp_index: dict[str, int] = {}
    extra = []
    for nc in conns["netcon"]:
        pp = nc.syn()
        seg = pp.get_segment()
        name = pp.hname()
        if name not in pp_index:
            pp_index[name] = len(pp_index)
        extra.append(
            {
                "section_type": _section_type(seg.sec.name()),
                "segment": f"{seg.sec.name()}({seg.x:.6g})",
                "distance": float(h.distance(origin, seg)),
                "point_process": pp_index[name],
            }
        )
    ext = pd.DataFrame(extra, index=conns.index)
    t = pd.concat([conns.drop(columns=["netcon"]), ext], axis=1)
    t = (
        t.rename(
            columns={
                "sec_x": "x",
                "W": "weight",
                "P": "release_probability",
                "weight": "syn_weight",
            }
        )
        if len(t)
        else t
    )
    t.insert(0, "synapse_id", np.arange(len(t), dtype=np.int64))
    cols = [
        "synapse_id",
        "source_population",
        "source_node_id",
        "model",
        "mechanism",
        "sid",
        "sec_id",
        "x",
        "section_type",
        "segment",
        "distance",
        "weight",
        "release_probability",
        "syn_weight",
        "delay",
        "point_process",
    ]
    return t[cols].reset_index(drop=True)


def _no_swc_ids(cell: Any) -> None:
    """Let BMTK's membrane reports at non-soma locations work without an SWC file.

    BMTK labels each recorded segment with SWC line ids by re-reading the morphology as an SWC
    table; our morphologies are Neurolucida .asc (or the packaged default, no path at all),
    which that reader cannot parse. An empty table makes BMTK write -1 ids (metadata only).
    """
    morph = cell.morphology
    if getattr(morph, "_swc_map", None) is None and not str(morph.swc_path or "").lower().endswith(
        ".swc"
    ):
        morph._swc_map = pd.DataFrame(
            {
                "id": pd.Series(dtype=np.int64),
                "type": pd.Series(dtype=np.int64),
                "nameindex": pd.Series(dtype=np.int64),
            }
        )


def run_simulation(
    config: Path,
    output_dir: Path | None = None,
    share_synapses: bool = True,
    seed: int | None = None,
    mechanisms: Path | None = None,
) -> dict[str, Any]:
    """Build and run the simulation of CONFIG in this process; returns the result dict.

    `mechanisms` is a compiled_mechanisms record (JSON) naming the library to load; without
    it the project's mechanisms are compiled (cached) and loaded. Call once per process:
    NEURON's state cannot be reset.
    """
    t_start = time.perf_counter()
    from l5assets.cell import bmtk_hook, synapses
    from l5assets.cell.mechanisms import (
        CompiledMechanisms,
        compile_mechanisms,
        for_this_cpu,
        load_mechanisms,
        with_rate_tables,
    )

    compiled = (
        for_this_cpu(CompiledMechanisms.from_record(mechanisms), say_stage)
        if mechanisms
        else compile_mechanisms()
    )
    if rate_tables_asked(config):
        compiled = with_rate_tables(compiled, on_progress=say_stage)
    load_mechanisms(compiled)
    say_stage("building the cell and its inputs (BMTK BioNet)")

    from bmtk.simulator import bionet
    from neuron import h

    conf = _load_config(Path(config), output_dir)
    extra = dict(conf.get("l5assets", {}))
    if seed is None:
        if "seed" not in extra:
            raise ValueError(f"{config}: no seed given and none in the config's l5assets section")
        seed = int(extra["seed"])
    gates = bool(extra.get("exc_release_gates_transmission", False))
    tables = apply_rate_tables(extra)

    # BMTK's environment without copying the config into the output (it would carry paths)
    conf._set_logging()
    conf.create_output_dir()
    conf.load_nrn_modules()
    bmtk_hook.register()
    # positions per connection in the release streams, sized for this run's duration
    stride = synapses.stride_for_duration(float(conf.tstop))
    pool = synapses.SynapsePool(
        release_seed=stage_seed(seed, "synapse_release"),
        share=share_synapses,
        release_gates_transmission=gates,
        stride=stride,
    )
    synapses.register_bmtk_synapse_models(pool)

    net = _network_class(seed).from_config(conf)
    sim = bionet.BioSimulator.from_config(conf, network=net)
    cells = list(net.get_local_cells().values())
    if len(cells) != 1:
        raise RuntimeError(f"expected one biophysical cell, got {len(cells)}")
    cell = cells[0]
    _no_swc_ids(cell)
    t_built = time.perf_counter()

    say_stage(f"cell built in {t_built - t_start:.0f} s; placing its synapses")
    dend_rec = _record_hot_zone(cell.hobj, h)
    conns = synapses.configure_bmtk_connections(net, pool, weight_seed=seed)
    n_bmtk = len(cell.connections())
    if len(conns) != n_bmtk:
        raise RuntimeError(f"{n_bmtk - len(conns)} of {n_bmtk} connections are not L5 synapses")
    table = synapse_table(conns, cell)
    t_setup = time.perf_counter()

    say_stage(f"{len(table)} synapses placed; simulating {float(conf.tstop):.0f} ms")
    progress = report_progress(h, float(conf.tstop))  # keep the handler alive for the run
    sim.run()
    del progress
    t_run = time.perf_counter()
    # no connection may have drawn past its stride (it would have reused another's numbers)
    max_events = pool.check_events(conns["netcon"])

    out_dir = Path(conf.output_dir)
    spikes_file = Path(conf.output["spikes_file"])
    result = write_outputs(
        out_dir,
        table,
        pool,
        dend_rec,
        engine="bionet",
        seed=seed,
        share_synapses=share_synapses,
        gates=gates,
        stride=stride,
        max_events=max_events,
        input_spikes=getattr(net, "input_spike_counts", {}),
        spikes_file=spikes_file,
        tstop=float(conf.tstop),
        dt=float(conf.dt),
        mechanisms_hash=compiled.mod_hash,
        times=(t_start, t_built, t_setup, t_run),
        extra={"rate_tables": True} if tables else None,
    )
    return result


def write_outputs(
    out_dir: Path,
    table: pd.DataFrame,
    pool: Any,
    dend_rec: dict[str, Any] | None,
    *,
    engine: str,
    seed: int,
    share_synapses: bool,
    gates: bool,
    stride: int,
    max_events: int,
    input_spikes: dict[str, int],
    spikes_file: Path,
    tstop: float,
    dt: float,
    mechanisms_hash: str,
    times: tuple[float, float, float, float],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write synapses.parquet, dend_v.h5 and result.json (the outputs every engine writes the
    same way) after a run; returns the result dict. `times`: perf_counter at start, cell
    built, synapses set up, run done; `extra`: engine options to record (non-default ones
    only, so that equal runs of different engines keep the same fields). Reads h.celsius and
    the spikes file."""
    from neuron import h

    t_start, t_built, t_setup, t_run = times
    table.to_parquet(out_dir / SYNAPSES_FILE, index=False)
    if dend_rec is not None:
        _write_hot_zone(out_dir / DEND_FILE, dend_rec, dt)
    result = {
        "engine": engine,
        "seed": int(seed),
        "share_synapses": bool(share_synapses),
        "exc_release_gates_transmission": bool(gates),
        "n_synapses": int(len(table)),
        "n_synapses_by_population": {
            str(k): int(v)
            for k, v in table["source_population"].value_counts().sort_index().items()
        },
        "n_point_processes": len(pool.point_processes),
        "release_stride": int(stride),
        "max_events_per_connection": int(max_events),
        "celsius": float(h.celsius),
        "input_spikes": dict(sorted(input_spikes.items())),
        "spike_count": cell_spike_count(spikes_file),
        "tstop_ms": float(tstop),
        "dt_ms": float(dt),
        "mechanisms_hash": mechanisms_hash,
        "wall_seconds": {
            "build": round(t_built - t_start, 3),
            "setup": round(t_setup - t_built, 3),
            "run": round(t_run - t_setup, 3),
            "total": round(time.perf_counter() - t_start, 3),
        },
        "files": {
            "spikes": spikes_file.name,
            "synapses": SYNAPSES_FILE,
            "reports": sorted(p.name for p in out_dir.glob("*_report.h5")),
            **({"dend_v": DEND_FILE} if dend_rec is not None else {}),
        },
        **(extra or {}),
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


PROGRESS_STEPS = 100


def report_progress(h: Any, tstop: float, steps: int = PROGRESS_STEPS) -> Any:
    """Print `L5PROGRESS <t_ms> <tstop_ms>` at every 1/steps of the run (the parent turns the
    lines into progress messages). The events are queued after each finitialize (which clears
    the queue); they only print, so the integration is unchanged. Returns the handler: keep a
    reference while the run lasts."""
    marks = [tstop * k / steps for k in range(1, steps + 1)]

    def say() -> None:
        print(f"{PROGRESS_PREFIX} {h.t:.3f} {tstop:.3f}", flush=True)

    cvode = h.CVode()

    def queue() -> None:
        if cvode.active():  # under CVode an event restarts the integrator: no progress then
            return
        for t in marks:
            cvode.event(t, say)

    return h.FInitializeHandler(1, queue)


def _record_hot_zone(cell: Any, h: Any) -> dict[str, Any] | None:
    """Record V at the cell's Ca2+ recording site: the validation's BAC/Ca2+ site (620 um on
    the apical trunk on Hay's cell1, moved by the cell's site rule), every time step."""
    from l5assets.cell.validation.protocols import BAC_SITE_UM
    from l5assets.cell.validation.worker import apical_trunk, site_shift, trunk_point

    if not getattr(cell, "apic", None):
        return None
    d = BAC_SITE_UM + site_shift(cell)
    sec, x = trunk_point(apical_trunk(cell, d), cell.soma[0], d)
    vec = h.Vector()
    vec.record(sec(x)._ref_v)
    return {
        "vec": vec,
        "section": sec.name().split(".")[-1],
        "x": float(x),
        "distance_um": float(h.distance(cell.soma[0](0.5), sec(x))),
    }


def _write_hot_zone(path: Path, rec: dict[str, Any], dt: float) -> None:
    import h5py

    v = np.asarray(rec["vec"], dtype=np.float32)
    with h5py.File(path, "w", track_order=True) as f:
        ds = f.create_dataset("v", data=v)
        ds.attrs["units"] = "mV"
        f.attrs["dt_ms"] = dt
        f.attrs["t0_ms"] = 0.0
        f.attrs["section"] = rec["section"]
        f.attrs["x"] = rec["x"]
        f.attrs["distance_um"] = rec["distance_um"]


def cell_spike_count(spikes_file: Path) -> int:
    """Number of spikes in BMTK's output spike file (0 if it has none)."""
    from l5assets.science.spikes import read_sonata_spikes

    if not spikes_file.exists():
        return 0
    return int(sum(len(t) for t in read_sonata_spikes(spikes_file).values()))


def watch_parent(parent_pid: int | None = None, interval_s: float = 1.0) -> None:
    """Exit (code 137) as soon as the process that started us is gone.

    The runner lives in its own session (so that a cancelled run can end its whole process
    group); when the run's process is killed outright it must not simulate on, reparented to
    init, into a temp folder nobody removes. The Dagster layer also asks the kernel for
    SIGKILL on parent death (PR_SET_PDEATHSIG); this daemon thread covers the rest (e.g. the
    parent's thread that started us ended). `parent_pid`: default env L5ASSETS_PARENT_PID;
    without it, nothing is watched.
    """
    import threading
    import time

    if parent_pid is None:
        env = os.environ.get("L5ASSETS_PARENT_PID", "")
        parent_pid = int(env) if env.isdigit() else None
    if not parent_pid:
        return
    if os.getppid() != parent_pid:
        os._exit(137)

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os._exit(137)

    threading.Thread(target=loop, name="watch-parent", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    watch_parent()
    ap = argparse.ArgumentParser(
        prog="python -m l5assets.simulation.runner", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("config", type=Path, help="config.json written by write_sim_config")
    ap.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="write outputs here instead of the config's output folder",
    )
    ap.add_argument(
        "--share-synapses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="share one point process per (kind, section, x) (default: on)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help="partition seed (default: the config's l5assets.seed)",
    )
    ap.add_argument(
        "--mechanisms",
        type=Path,
        default=None,
        help="compiled_mechanisms record (JSON) of the library to load "
        "(default: compile the project's mechanisms, cached)",
    )
    ap.add_argument(
        "--engine",
        choices=ENGINES,
        default="bionet",
        help="bionet: BMTK BioNet (default); neuron: the project's own driver "
        "(l5assets.simulation.driver), same results; coreneuron: the driver's network run in "
        "CoreNEURON (delays <= dt: the inputs are replayed earlier by the difference, so "
        "every event arrives when it would; see --min-delay)",
    )
    ap.add_argument(
        "--merge-inputs",
        action="store_true",
        help="engine neuron: replay all input populations with one PatternStim, as engine "
        "coreneuron does (same-time events then arrive in another order: rounding-level "
        "differences from bionet; for comparing with coreneuron)",
    )
    ap.add_argument(
        "--min-delay",
        type=float,
        default=None,
        metavar="MS",
        help="engine coreneuron: run every NetCon delay shorter than MS (> dt) at MS, a change "
        "of the model recorded in result.json (default: keep the delays, shift the inputs)",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="threads (only 1 is allowed, by every engine)"
    )
    args = ap.parse_args(argv)
    # run with -m this module is __main__, while the driver raises the importable module's class
    from l5assets.simulation import runner as importable

    try:
        check_engine_options(
            args.engine,
            merge_inputs=args.merge_inputs,
            min_delay_ms=args.min_delay,
            threads=args.threads,
        )
        pos = (args.config, args.output_dir, args.share_synapses, args.seed, args.mechanisms)
        if args.engine == "bionet":
            result = run_simulation(*pos)
        else:
            from l5assets.simulation.driver import EngineOptions, run_driver

            opts = EngineOptions(args.engine, args.merge_inputs, args.min_delay, args.threads)
            result = run_driver(*pos, options=opts)
    except (EngineError, importable.EngineError) as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
