"""Synapses of the L5 cell: point processes, sharing pool, per-connection NetCon fields, BMTK hook.

Two NMODL mechanisms (biophys_components/mechanisms): `L5ExcSyn` (AMPA + NMDA, depression,
release draw; BMTK model PN2PN) and `L5GabaSyn` (GABA_A pulse kinetics, depression, release;
PV2PN, SOM2PN). Both keep ALL per-connection state in the NetCon weight vector, so every
connection of one kind (same dynamics file) onto one segment can share a single point process
with results identical to one point process per connection. Sharing is the default: the
reference's 28,902 synapses land on ~2,500 segments.

NetCon weight vector layout (fixed; `EXC_FIELDS` / `GABA_FIELDS`, index = position):

    L5ExcSyn : weight W sid nev nrel D1 D2 F tlast fac
    L5GabaSyn: weight W sid nev nrel D1 D2 tlast fac r0 t0 npend

- weight: BMTK's syn_weight (1 in this study); multiplies the conductance.
- W: per-connection scale. Exc: peak conductance of one event at fac 1, in nS (lognormal per
  synapse). GABA: dimensionless scale of gbar (0.06 on the soma, 0.1 on dendrites).
- sid: stable connection index, dense 0..n-1 within its stream class (exc or GABA).
- everything after sid is state, reset by the mechanisms' NET_RECEIVE INITIAL block
  (nev = spikes received, nrel = successful release draws: useful for checks).

Release randomness: every point process of a class gets Random123 ids (release_seed, class, 0)
(`STREAM_CLASS`); connection `sid` draws its k-th number at stream position sid * stride + k.
The draws therefore depend only on (release_seed, class, sid, k): not on creation order, on
sharing, or on NEURON vs CoreNEURON. A connection must receive fewer than `stride` spikes per
run, and (sid + 1) * stride must fit into the 2**34 positions of a stream. The runner sizes the
stride from the run's duration (`stride_for_duration`: 65,536 up to 65.5 s, then the next power
of two; the inputs spike at most once per ms), the pool refuses connections that do not fit
(`SynapsePool.check_capacity`, naming the longest supported duration), and after the run
`SynapsePool.check_events` verifies that no connection received `stride` events or more
(otherwise its draws would silently have reused the next connection's numbers).

Excitatory model, two documented differences from the reference:
1. each event's increment is scaled by the connection's own fac at event time (the reference
   rescales the synapse's whole running conductance whenever fac changes). This is what makes
   sharing exact.
2. fac is recomputed at every event, released or not: D1 and D2 recover towards 1 over the time
   since the connection's previous event and fac = max(D1 * D2, fac_min) is taken then (before
   this event's depression). The reference updates fac only when a release draw succeeds, so
   between releases its fac keeps the value of the last release, without the recovery since.
   The pools themselves evolve identically (recovery is exponential: recovering in one step or
   in several gives the same D at the next release); only the fac applied at non-released
   spikes differs, ours being the more recovered (larger or equal) one. The .mod header
   (L5ExcSyn.mod) describes the same per-event rule; it is left unchanged so that the
   mechanism library's content hash stays the same.
By default every spike transmits and the release draw only gates the depression update
(reference behaviour); `release_gates_transmission=True` makes failed draws transmit nothing
(then difference 2 has no effect: only released spikes use fac).

How the simulation runner uses this with BMTK BioNet (l5assets.simulation.runner does this):

    pool = SynapsePool(release_seed=stage_seed(seed, "synapse_release"), share=True,
                       release_gates_transmission=params.exc_release_gates_transmission)
    register_bmtk_synapse_models(pool)       # 1. before BMTK builds anything
    net = bionet.BioNetwork.from_config(conf)    # BMTK calls the pool per synapse...
    sim = bionet.BioSimulator.from_config(conf, network=net)  # ...and makes the NetCons
    table = configure_bmtk_connections(net, pool, weight_seed=seed)  # 2. W + sid per NetCon
    sim.run()                                    # or finitialize + pc.psolve (CoreNEURON)
    # `table`: one row per connection (Connections.csv material, plus the NetCon objects)

Keep `pool` (or BMTK's cell) alive while simulating: it holds the point processes.
CoreNEURON: the weight-vector state is transferred both ways and runs are bit-identical to
NEURON (tested); it needs NetCon delays > dt and, for `neuron.coreneuron`, the environment
variable CORENEURONLIB pointing at the compiled `libcorenrnmech.so` before NEURON starts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from l5assets import paths

EXC_MECHANISM = "L5ExcSyn"
GABA_MECHANISM = "L5GabaSyn"

EXC_FIELDS: tuple[str, ...] = (
    "weight",
    "W",
    "sid",
    "nev",
    "nrel",
    "D1",
    "D2",
    "F",
    "tlast",
    "fac",
)
GABA_FIELDS: tuple[str, ...] = (
    "weight",
    "W",
    "sid",
    "nev",
    "nrel",
    "D1",
    "D2",
    "tlast",
    "fac",
    "r0",
    "t0",
    "npend",
)
FIELDS: dict[str, tuple[str, ...]] = {EXC_MECHANISM: EXC_FIELDS, GABA_MECHANISM: GABA_FIELDS}

# Random123 id2 of each mechanism's streams: exc and GABA sids are numbered independently.
STREAM_CLASS: dict[str, int] = {EXC_MECHANISM: 1, GABA_MECHANISM: 2}
STREAM_POSITIONS = 2**34  # positions per Random123 id triple in NEURON/CoreNEURON (seq34)
DEFAULT_STRIDE = 65536  # the smallest stride: fixed up to 65.5 s, so those runs never change

# Mechanism parameters a dynamics file may set (RANGE PARAMETERs of the .mod files).
MECHANISM_PARAMS: dict[str, tuple[str, ...]] = {
    EXC_MECHANISM: (
        "tau_r_AMPA",
        "tau_d_AMPA",
        "tau_r_NMDA",
        "tau_d_NMDA",
        "e",
        "mg",
        "P",
        "d1",
        "tauD1",
        "d2",
        "tauD2",
        "f",
        "tauF",
        "fac_min",
    ),
    GABA_MECHANISM: (
        "Cdur",
        "Alpha",
        "Beta",
        "e",
        "gbar",
        "P",
        "d1",
        "tauD1",
        "d2",
        "tauD2",
        "fac_min",
    ),
}
# Per-connection scale parameters (not mechanism parameters) and pure metadata keys.
CONNECTION_PARAMS: dict[str, tuple[str, ...]] = {
    EXC_MECHANISM: ("W_mean", "W_sd", "W_max"),
    GABA_MECHANISM: ("W_soma", "W_dend"),
}
METADATA_KEYS = ("level_of_detail", "model_name", "description", "units")


class SynapseError(ValueError):
    """A synapse model file or a connection setting is invalid."""


def stride_for_duration(tstop_ms: float) -> int:
    """Stream positions per connection for a run of `tstop_ms`.

    The inputs spike at most once per ms at whole ms in [0, tstop), so a connection receives at
    most tstop_ms + 1 events: the stride is the smallest power of two above that, and never
    below DEFAULT_STRIDE (so runs up to 65.5 s keep the positions, hence the results, they
    always had).
    """
    t = float(tstop_ms)
    if not (math.isfinite(t) and t >= 0):
        raise SynapseError(f"tstop_ms must be finite and >= 0, got {tstop_ms}")
    stride = DEFAULT_STRIDE
    while stride <= t + 1:
        stride *= 2
    return stride


def max_duration_ms(n_connections: int) -> float:
    """Longest run (ms) whose `stride_for_duration` keeps `n_connections` streams disjoint.

    0.0 when even DEFAULT_STRIDE does not fit (more than 262,144 connections of one class).
    """
    n = max(int(n_connections), 1)
    stride = 1 << ((STREAM_POSITIONS // n).bit_length() - 1)  # largest power of two that fits
    if stride < DEFAULT_STRIDE:
        return 0.0
    return float(stride - 2)  # stride_for_duration(t) == stride for t <= stride - 2


@dataclass(frozen=True)
class SynapseModel:
    """One synapse dynamics file (PN2PN / PV2PN / SOM2PN), validated."""

    name: str
    mechanism: str
    mechanism_params: tuple[tuple[str, float], ...]
    connection_params: tuple[tuple[str, float], ...]

    def param(self, key: str) -> float:
        """A mechanism or connection parameter by name."""
        for k, v in self.mechanism_params + self.connection_params:
            if k == key:
                return v
        raise KeyError(key)

    @property
    def stream_class(self) -> int:
        return STREAM_CLASS[self.mechanism]


def synapse_model(dynamics: Mapping[str, Any] | str | Path) -> SynapseModel:
    """Validate a dynamics dict (as BMTK passes it) or load a file name / path.

    A bare name ("PN2PN" or "PN2PN.json") is looked up in `paths.synaptic_models_dir()`.
    """
    if not isinstance(dynamics, Mapping):
        p = Path(dynamics)
        if not p.is_absolute() and not p.exists():
            p = paths.synaptic_models_dir() / (p if p.suffix == ".json" else f"{p}.json")
        with open(p) as f:
            dynamics = json.load(f)
    mech = dynamics.get("level_of_detail")
    if mech not in MECHANISM_PARAMS:
        raise SynapseError(
            f"level_of_detail must be one of {sorted(MECHANISM_PARAMS)}, got {mech!r}"
        )
    allowed_mech = MECHANISM_PARAMS[mech]
    allowed_conn = CONNECTION_PARAMS[mech]
    unknown = set(dynamics) - set(allowed_mech) - set(allowed_conn) - set(METADATA_KEYS)
    if unknown:
        raise SynapseError(f"{mech}: unknown keys {sorted(unknown)}")
    missing = set(allowed_conn) - set(dynamics)
    if missing:
        raise SynapseError(f"{mech}: missing keys {sorted(missing)}")

    def _num(k: str) -> float:
        v = float(dynamics[k])
        if not math.isfinite(v):
            raise SynapseError(f"{mech}: {k} must be finite, got {v}")
        return v

    return SynapseModel(
        name=str(dynamics.get("model_name", mech)),
        mechanism=mech,
        mechanism_params=tuple((k, _num(k)) for k in allowed_mech if k in dynamics),
        connection_params=tuple((k, _num(k)) for k in allowed_conn),
    )


def netcon_field(nc: Any, name: str, mechanism: str) -> float:
    """Read one named field of a NetCon's weight vector."""
    return float(nc.weight[FIELDS[mechanism].index(name)])


def mechanism_of(pp: Any) -> str:
    """`L5ExcSyn` / `L5GabaSyn` (or another name) of a point process object."""
    return pp.hname().split("[", 1)[0]


def node_index(sec: Any, x: float) -> int:
    """Index of the node NEURON places a point process at for `sec(x)`.

    Interior positions map to the segment containing x (0-based segment index + 1); the
    section ends x=0 and x=1 are their own nodes (0 and nseg + 1). Point processes on one
    node see the same voltage, so connections there can share one point process exactly.
    """
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise SynapseError(f"x must be in [0, 1], got {x}")
    nseg = int(sec.nseg)
    if x == 0.0:
        return 0
    if x == 1.0:
        return nseg + 1
    return min(int(x * nseg), nseg - 1) + 1


@dataclass
class SynapsePool:
    """Creates L5ExcSyn / L5GabaSyn point processes, one per (model, segment) when sharing.

    `release_seed`: uint32 (use `rng.stage_seed(seed, "synapse_release")`).
    `share`: one point process per (dynamics model, segment) if True, else one per call.
    `release_gates_transmission`: exc only; False = reference (every spike transmits).
    `stride`: stream positions per connection (a connection must receive fewer events); use
    `stride_for_duration(tstop_ms)`.
    """

    release_seed: int
    share: bool = True
    release_gates_transmission: bool = False
    stride: int = DEFAULT_STRIDE
    _pps: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)
    _all: list[Any] = field(default_factory=list, repr=False)
    _models: dict[str, SynapseModel] = field(default_factory=dict, repr=False)
    # BMTK passes one dict object per edge type: validate it once (the dict is kept alive)
    _parsed: dict[int, tuple[Mapping[str, Any], SynapseModel]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        if not 0 <= int(self.release_seed) < 2**32:
            raise SynapseError(f"release_seed must be a uint32, got {self.release_seed}")
        if self.stride < 1 or STREAM_POSITIONS // self.stride < 1:
            raise SynapseError(f"stride must be in [1, 2**34], got {self.stride}")

    @property
    def max_sid(self) -> int:
        """Largest connection index that keeps streams disjoint."""
        return STREAM_POSITIONS // self.stride - 1

    def check_capacity(self, n_by_mechanism: Mapping[str, int]) -> None:
        """Raise SynapseError if a class has more connections than disjoint streams.

        `n_by_mechanism`: connections per mechanism (sids are numbered per class).
        """
        for mech, n in sorted(n_by_mechanism.items()):
            if int(n) - 1 > self.max_sid:
                t_max = max_duration_ms(int(n))
                raise SynapseError(
                    f"{n} {mech} connections x {self.stride} release-stream positions each "
                    f"exceed the {STREAM_POSITIONS} (2**34) positions of a Random123 stream: "
                    f"at most {self.max_sid + 1} connections fit at this stride; the maximum "
                    f"supported duration for {n} connections is {t_max / 1000.0:.3f} s "
                    f"({t_max:.0f} ms)"
                )

    def check_events(self, netcons: Iterable[Any]) -> int:
        """Verify that no connection received `stride` or more events; return the maximum.

        Reads `nev` from each NetCon's weight vector (after a run). A connection past its
        stride would have drawn from the next connection's positions: raise SynapseError.
        """
        worst, worst_sid, worst_mech = 0, -1, ""
        for nc in netcons:
            mech = mechanism_of(nc.syn())
            if mech not in FIELDS:
                continue
            nev = int(netcon_field(nc, "nev", mech))
            if nev > worst:
                worst, worst_sid, worst_mech = nev, int(netcon_field(nc, "sid", mech)), mech
        if worst >= self.stride:
            raise SynapseError(
                f"{worst_mech} connection sid {worst_sid} received {worst} events, not fewer "
                f"than the stride {self.stride}: its release draws overlapped the next "
                f"connection's stream (give a larger stride)"
            )
        return worst

    @property
    def point_processes(self) -> list[Any]:
        """Every point process created, in creation order."""
        return list(self._all)

    def model_of(self, pp: Any) -> SynapseModel:
        """The synapse model a point process of this pool was created for."""
        return self._models[pp.hname()]

    def point_process(self, dynamics: Mapping[str, Any] | SynapseModel, sec: Any, x: float):
        """The point process for a connection of model `dynamics` at `sec(x)`.

        With sharing, connections of one model onto one segment get the same object.
        """
        model = dynamics if isinstance(dynamics, SynapseModel) else self._parse(dynamics)
        key = (model, sec, node_index(sec, x))
        if self.share and key in self._pps:
            return self._pps[key]
        from neuron import h

        pp = getattr(h, model.mechanism)(sec(x))
        for k, v in model.mechanism_params:
            setattr(pp, k, v)
        pp.stride = float(self.stride)
        if model.mechanism == EXC_MECHANISM:
            pp.release_gates = 1.0 if self.release_gates_transmission else 0.0
        pp.rng.set_ids(int(self.release_seed), model.stream_class, 0)
        if self.share:
            self._pps[key] = pp
        self._all.append(pp)
        self._models[pp.hname()] = model
        return pp

    def _parse(self, dynamics: Mapping[str, Any]) -> SynapseModel:
        hit = self._parsed.get(id(dynamics))
        if hit is not None and hit[0] is dynamics:
            return hit[1]
        model = synapse_model(dynamics)
        self._parsed[id(dynamics)] = (dynamics, model)
        return model

    def configure_netcon(self, nc: Any, *, W: float, sid: int, weight: float | None = None) -> None:
        """Write a connection's W and stream index (and optionally weight) into its NetCon."""
        pp = nc.syn()
        mech = mechanism_of(pp)
        if mech not in FIELDS:
            raise SynapseError(f"NetCon targets {mech}, not an L5 synapse")
        sid = int(sid)
        if not 0 <= sid <= self.max_sid:
            raise SynapseError(f"sid must be in [0, {self.max_sid}], got {sid}")
        if not (math.isfinite(W) and W >= 0):
            raise SynapseError(f"W must be finite and >= 0, got {W}")
        fields = FIELDS[mech]
        if weight is not None:
            nc.weight[0] = float(weight)
        nc.weight[fields.index("W")] = float(W)
        nc.weight[fields.index("sid")] = float(sid)

    def connect(
        self,
        source: Any,
        dynamics: Mapping[str, Any] | SynapseModel,
        sec: Any,
        x: float,
        *,
        W: float,
        sid: int,
        weight: float = 1.0,
        delay: float = 0.1,
    ):
        """Make one connection without BMTK: point process from the pool + configured NetCon.

        `source` is anything `h.NetCon` accepts as a source (a VecStim, a NetStim) or None
        (then deliver events with `nc.event(t)`).
        """
        from neuron import h

        pp = self.point_process(dynamics, sec, x)
        nc = h.NetCon(source, pp)
        nc.delay = delay
        self.configure_netcon(nc, W=W, sid=sid, weight=weight)
        return nc


def gaba_W(model: SynapseModel, sec: Any) -> float:
    """The reference's GABA connection scale: W_soma on somatic sections, W_dend elsewhere."""
    is_soma = "soma" in sec.name().rsplit(".", 1)[-1]
    return model.param("W_soma") if is_soma else model.param("W_dend")


def exc_W(model: SynapseModel, n: int, weight_seed: int) -> np.ndarray:
    """n excitatory peak conductances (nS), lognormal per the model file, from the
    `synapse_weights` stage stream of `weight_seed` (row k belongs to exc sid k)."""
    from l5assets.rng import stage_rng
    from l5assets.science.connectivity import exc_weights

    rng = stage_rng(weight_seed, "synapse_weights")
    return exc_weights(
        n, rng, mean=model.param("W_mean"), sd=model.param("W_sd"), w_max=model.param("W_max")
    )


@dataclass(frozen=True)
class ConnectionKey:
    """What identifies a connection independently of the order NEURON objects were made."""

    source_population: str
    source_node_id: int
    sec_id: int
    x: float


def assign_sids(keys: Iterable[tuple[str, ConnectionKey]]) -> np.ndarray:
    """Dense stream indices per mechanism class, in the sorted order of the keys.

    `keys`: (mechanism, key) per connection. Ties (same source onto the same spot with the
    same model) are interchangeable, so the creation-order tie-break cannot change results.
    """
    items = list(keys)
    sids = np.full(len(items), -1, dtype=np.int64)
    by_class: dict[str, list[int]] = {}
    for i, (mech, _) in enumerate(items):
        by_class.setdefault(mech, []).append(i)
    for idx in by_class.values():
        order = sorted(
            idx,
            key=lambda i: (
                items[i][1].source_population,
                items[i][1].source_node_id,
                items[i][1].sec_id,
                items[i][1].x,
                i,
            ),
        )
        sids[np.array(order, dtype=np.int64)] = np.arange(len(order))
    return sids


def register_bmtk_synapse_models(pool: SynapsePool) -> None:
    """Make BMTK BioNet create L5ExcSyn / L5GabaSyn point processes through `pool`.

    BMTK calls `synapse_model(dynamics_params, sec_x, section)` per synapse (the edge's
    `model_template` = the dynamics file's `level_of_detail`) and then makes one NetCon per
    synapse itself (weight[0] = syn_weight, delay). With sharing, several NetCons then target
    one point process. Call before BMTK builds the network; call
    `configure_bmtk_connections` after it has created the NetCons.
    """
    from bmtk.simulator.bionet.pyfunction_cache import add_synapse_model

    def _make(dynamics_params: Mapping[str, Any], sec_x: float, section: Any):
        return pool.point_process(dynamics_params, section, sec_x)

    for mech in (EXC_MECHANISM, GABA_MECHANISM):
        add_synapse_model(_make, name=mech, overwrite=True)


def _bmtk_cells(graph: Any) -> list[Any]:
    cells = graph.get_local_cells()
    return [cells[k] for k in sorted(cells)]


def configure_bmtk_connections(graph: Any, pool: SynapsePool, *, weight_seed: int) -> pd.DataFrame:
    """Set W and sid on every L5 synapse NetCon BMTK made; return one row per connection.

    `graph` is the built `bmtk.simulator.bionet.BioNetwork`. sids are dense per class, in the
    order of (source population, source node id, sec_id, x); exc W are drawn per sid from the
    `synapse_weights` stream of `weight_seed` (the partition seed); GABA W by location.
    Columns: mechanism, model, sid, source_population, source_node_id, sec_id, sec_x,
    section, W, P, weight, delay, and `netcon` (the NetCon object, for the runner).
    """
    rows: list[dict[str, Any]] = []
    for cell in _bmtk_cells(graph):
        sec_ids = {sec.name(): i for i, sec in enumerate(cell.get_sections())}
        for conn in cell.connections():
            nc = conn._connector
            pp = nc.syn()
            mech = mechanism_of(pp)
            if mech not in FIELDS:
                continue
            seg = pp.get_segment()
            sec = seg.sec
            rows.append(
                {
                    "mechanism": mech,
                    "model": pool.model_of(pp).name,
                    "source_population": str(conn._edge_prop.source_population),
                    "source_node_id": int(conn.source_node.node_id),
                    "sec_id": int(sec_ids[sec.name()]),
                    "sec_x": float(seg.x),
                    "section": sec.name(),
                    "netcon": nc,
                    "_pp": pp,
                }
            )
    return _configure_rows(rows, pool, weight_seed)


def configure_connections(
    netcons: Iterable[tuple[Any, ConnectionKey]], pool: SynapsePool, *, weight_seed: int
) -> pd.DataFrame:
    """Like `configure_bmtk_connections` for NetCons made without BMTK: (NetCon, key) pairs."""
    rows = []
    for nc, key in netcons:
        pp = nc.syn()
        seg = pp.get_segment()
        rows.append(
            {
                "mechanism": mechanism_of(pp),
                "model": pool.model_of(pp).name,
                "source_population": key.source_population,
                "source_node_id": int(key.source_node_id),
                "sec_id": int(key.sec_id),
                "sec_x": float(key.x),
                "section": seg.sec.name(),
                "netcon": nc,
                "_pp": pp,
            }
        )
    return _configure_rows(rows, pool, weight_seed)


def _configure_rows(
    rows: list[dict[str, Any]], pool: SynapsePool, weight_seed: int
) -> pd.DataFrame:
    keys = [
        (
            r["mechanism"],
            ConnectionKey(r["source_population"], r["source_node_id"], r["sec_id"], r["sec_x"]),
        )
        for r in rows
    ]
    n_by_mech: dict[str, int] = {}
    for mech, _ in keys:
        n_by_mech[mech] = n_by_mech.get(mech, 0) + 1
    pool.check_capacity(n_by_mech)
    sids = assign_sids(keys)
    exc_rows = [i for i, r in enumerate(rows) if r["mechanism"] == EXC_MECHANISM]
    if exc_rows:
        exc_models = {pool.model_of(rows[i]["_pp"]) for i in exc_rows}
        if len(exc_models) != 1:
            # one weight stream per run: several exc models would need a per-model rule
            names = sorted(m.name for m in exc_models)
            raise SynapseError(f"expected one excitatory model, got {names}")
        (exc_model,) = exc_models
        w_exc = exc_W(exc_model, len(exc_rows), weight_seed)
    for i, r in enumerate(rows):
        pp = r.pop("_pp")
        model = pool.model_of(pp)
        sid = int(sids[i])
        if r["mechanism"] == EXC_MECHANISM:
            W = float(w_exc[sid])
        else:
            W = gaba_W(model, pp.get_segment().sec)
        pool.configure_netcon(r["netcon"], W=W, sid=sid)
        r.update(
            sid=sid,
            W=W,
            P=model.param("P"),
            weight=float(r["netcon"].weight[0]),
            delay=float(r["netcon"].delay),
        )
    cols = [
        "mechanism",
        "model",
        "sid",
        "source_population",
        "source_node_id",
        "sec_id",
        "sec_x",
        "section",
        "W",
        "P",
        "weight",
        "delay",
        "netcon",
    ]
    return pd.DataFrame(rows, columns=cols)
