"""The NEURON worker: builds the cell once and simulates protocols in this process (run by
`run_protocols` as `python -m l5assets.cell.validation --worker JSON`).

Every protocol starts from the cell's resting steady state (the membrane is relaxed at t < 0 with
no stimulus), runs at 34 C in a fresh Python subprocess so NEURON state never leaks into the
caller (the CLI, Dagster and pytest all call this module), and is integrated with NEURON's
variable-step CVode (as Hay and BluePyOpt did; default tolerance), resampled onto a 0.025 ms
grid. Why not fixed steps: the bAP in this weakly excitable trunk is sensitive to the step; on
the default cell the 800 um amplitude is 46.2 mV at dt = 0.025 ms, 50.7 mV at 0.0125 ms and
53.6 mV with CVode (unchanged from atol 1e-3 to 1e-6), i.e. fixed steps converge to CVode's
value. `run_protocols(..., cvode=False)` keeps fixed steps available. Sweeps of one protocol
share the stimulus-free lead-in: it is simulated once, saved with ``SaveState`` and restored
for every sweep.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from l5assets.cell.validation.protocols import (
    CELSIUS,
    CVODE_ATOL,
    DT,
    E_FAR,
    PROTOCOLS,
    TRAIN_CALIBRATION,
    TRAIN_MARGIN,
    V_INIT,
    EpspCurrent,
    Protocol,
    Pulse,
    Sweep,
    ValidationError,
    ap_windows,
    train_protocol,
)
from l5assets.cell.validation.traces import ProtocolTraces


def apical_trunk(cell: Any, reach: float) -> list[Any]:
    """Sections of the apical trunk from the soma out to path distance `reach` (um).

    At every branch point the child with the largest diameter is followed among the children
    whose subtree reaches `reach` (so a thick but short oblique is never taken)."""
    from neuron import h

    soma = cell.soma[0]
    apic = list(cell.apic)
    apic_set = {s.name() for s in apic}
    h.distance(0, soma(0.5))

    def children(sec: Any) -> list[Any]:
        return [c for c in h.SectionRef(sec=sec).child if c.name() in apic_set]

    reach_of: dict[str, float] = {}

    def subtree_reach(sec: Any) -> float:
        key = sec.name()
        if key not in reach_of:
            own = h.distance(soma(0.5), sec(1.0))
            reach_of[key] = max([own] + [subtree_reach(c) for c in children(sec)])
        return reach_of[key]

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    roots = [s for s in apic if s.parentseg() is None or s.parentseg().sec.name() not in apic_set]
    cands = [s for s in roots if subtree_reach(s) >= reach]
    if not cands:
        longest = max((subtree_reach(s) for s in roots), default=0.0)
        raise ValidationError(f"the apical tree reaches {longest:.0f} um, less than {reach} um")
    path = [max(cands, key=lambda s: s(0.5 / s.nseg).diam)]
    while h.distance(soma(0.5), path[-1](1.0)) < reach:
        kids = [c for c in children(path[-1]) if subtree_reach(c) >= reach]
        path.append(max(kids, key=lambda s: s(0.5 / s.nseg).diam))
    return path


# Main apical bifurcation of Hay's cell1 as `main_bifurcation` finds it (SPEC: ~627 um); trunk
# sites given on cell1 keep their offset from it on another morphology ("main_bifurcation").
HAY_CELL1_BIFURCATION_UM = 626.8
BIFURCATION_DIAM_RATIO = 0.6  # thinner child >= 0.6 x thicker: a split of the trunk, not an oblique
BIFURCATION_MIN_EXTENT = 200.0  # um both children's subtrees reach beyond the branch point


def main_bifurcation(cell: Any) -> float:
    """Path distance (um, from the soma centre) of the main apical bifurcation.

    Walking the apical trunk outwards (`apical_trunk`), the first branch point whose two
    thickest children are of similar diameter (ratio >= 0.6) and both extend >= 200 um further.
    C060114A7: 374.7 um; Hay's cell1: 626.8 um."""
    from neuron import h

    soma = cell.soma[0]
    apic_set = {s.name() for s in cell.apic}
    longest = max(h.distance(soma(0.5), s(1.0)) for s in cell.apic)
    trunk = apical_trunk(cell, 0.9 * longest)

    def reach(sec: Any) -> float:
        kids = [c for c in h.SectionRef(sec=sec).child if c.name() in apic_set]
        return max([h.distance(soma(0.5), sec(1.0))] + [reach(c) for c in kids])

    for sec in trunk:
        kids = [c for c in h.SectionRef(sec=sec).child if c.name() in apic_set]
        if len(kids) < 2:
            continue
        kids.sort(key=lambda c: c(0.5 / c.nseg).diam, reverse=True)
        d_bp = h.distance(soma(0.5), sec(1.0))
        a, b = kids[0], kids[1]
        if (
            b(0.5 / b.nseg).diam >= BIFURCATION_DIAM_RATIO * a(0.5 / a.nseg).diam
            and min(reach(a), reach(b)) >= d_bp + BIFURCATION_MIN_EXTENT
        ):
            return float(d_bp)
    raise ValidationError("no main apical bifurcation found on the trunk")


def site_shift(cell: Any) -> float:
    """How far (um) the protocols' trunk sites (given on Hay's cell1) move on this cell."""
    if cell.biophysics.validation.sites == "main_bifurcation":
        return main_bifurcation(cell) - HAY_CELL1_BIFURCATION_UM
    return 0.0


def trunk_point(trunk: list[Any], soma: Any, distance: float) -> tuple[Any, float]:
    """(section, x) on the trunk at a path distance from the soma centre."""
    from neuron import h

    for sec in trunk:
        d0 = h.distance(soma(0.5), sec(0.0))
        d1 = h.distance(soma(0.5), sec(1.0))
        if d0 <= distance <= d1:
            return sec, (distance - d0) / (d1 - d0) if d1 > d0 else 0.5
    raise ValidationError(f"trunk does not contain distance {distance} um")


def epsp_waveform(t: np.ndarray, e: EpspCurrent) -> np.ndarray:
    """Double-exponential current (nA) with peak `e.peak`, zero before `e.onset`."""
    s = t - e.onset
    tp = e.tau_rise * e.tau_decay / (e.tau_decay - e.tau_rise) * math.log(e.tau_decay / e.tau_rise)
    norm = math.exp(-tp / e.tau_decay) - math.exp(-tp / e.tau_rise)
    sp = np.maximum(s, 0.0)
    wave = (np.exp(-sp / e.tau_decay) - np.exp(-sp / e.tau_rise)) / norm * e.peak
    return np.where(s > 0, wave, 0.0)


def _advance(tstop: float) -> None:
    from neuron import h

    while h.t < tstop - 0.5 * h.dt:
        h.fadvance()


def calibrate_train_pulses(
    h: Any,
    cell: Any,
    *,
    shift: float,
    cvode: bool,
    atol: float,
    dt: float,
    sweeps: Sequence[int] | None = None,
) -> dict[str, list[float]]:
    """Per ca_train sweep (all, or the indices `sweeps`), the amplitude (nA) of each pulse: the
    weakest (bisection to TRAIN_CALIBRATION's resolution) at which that pulse, after the
    pulses before it at their own amplitudes, evokes an AP in its window (`ap_windows`), times
    TRAIN_MARGIN. Each trial restarts from a saved state at the pulse's onset, so a trial costs
    only the pulse's window."""
    from l5assets.cell.validation.features import SOMA_THRESHOLD, threshold_crossings

    lo0, hi0, tol = TRAIN_CALIBRATION
    proto = PROTOCOLS["ca_train"]
    chosen = [proto.sweeps[i] for i in (range(len(proto.sweeps)) if sweeps is None else sweeps)]
    h.celsius = CELSIUS
    segs, _ = _place_sites(h, cell, proto, shift, None)
    run = _ProtocolRun(h, cell, proto, segs, 5, cvode=cvode, atol=atol, dt=dt)
    _, _, at_start = run.lead_in()  # at the first pulse's onset

    def restore(state: Any) -> None:
        state.restore()
        if cvode:
            h.cvode.re_init()
        h.frecord_init()

    def has_ap(window: tuple[float, float]) -> bool:
        up = threshold_crossings(np.array(run.trec), np.array(run.recs["soma"]), SOMA_THRESHOLD)
        return bool(((up >= window[0]) & (up < window[1])).any())

    out: dict[str, list[float]] = {}
    first: float | None = None  # every sweep's first pulse starts from the same state
    for sw in chosen:
        windows = ap_windows(sw)
        run.set_sweep(Sweep(sw.name, pulses=tuple(replace(p, amp=0.0) for p in sw.pulses)))
        state, amps = at_start, []
        for k, window in enumerate(windows):

            def ok(
                a: float, k: int = k, window: tuple[float, float] = window, state: Any = state
            ) -> bool:
                restore(state)
                run.pulses[k].amp = a
                run.advance(window[1])
                return has_ap(window)

            if k == 0 and first is not None:
                amp = first
            else:
                # bracket from the first pulse's threshold (most pulses need less than twice
                # it), widened to the search range when that is not enough
                lo, hi = lo0, min(hi0, 2.0 * first) if first else hi0
                if not ok(hi):
                    lo, hi = hi, hi0
                if ok(hi):
                    while hi - lo > tol:
                        mid = 0.5 * (lo + hi)
                        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
                    amp = round(hi * TRAIN_MARGIN, 4)
                else:
                    # no AP within the search range: the pulse is left out (0 nA), never
                    # forced at the range's top (which could fire the Ca2+ spike by itself);
                    # `pulse_aps` then counts it as a pulse without its AP
                    amp = 0.0
                if k == 0 and amp > 0:
                    first = amp
            amps.append(amp)
            run.pulses[k].amp = amp
            if k + 1 < len(windows):  # on to the next pulse's onset with this one applied
                restore(state)
                run.advance(sw.pulses[k + 1].delay)
                state = h.SaveState()
                state.save()
        out[sw.name] = amps
    h.cvode_active(0)
    return out


def _place_sites(
    h: Any, cell: Any, proto: Protocol, shift: float, pulse_amp: dict[str, list[float]] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The recording segments of a protocol's sites, and what to record about them."""
    soma = cell.soma[0]
    origin = soma(0.5)
    segs: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    dists = [d + shift for d in proto.trunk_distances()]
    trunk = apical_trunk(cell, max(dists)) if dists else []
    for name, d in proto.sites:
        sec, x = (soma, 0.5) if d is None else trunk_point(trunk, soma, d + shift)
        seg = sec(x)
        segs[name] = seg
        info[name] = {
            "section": sec.name(),
            "x": round(float(seg.x), 6),
            "distance": round(float(h.distance(origin, seg)), 3),
            "requested": d,
            "diam": round(float(seg.diam), 4),
        }
        if pulse_amp is not None and d is None:  # the pulses are somatic
            info[name]["pulse_nA"] = pulse_amp
    return segs, info


def _epsp_sources(h: Any, proto: Protocol, segs: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """EPSP-shaped currents: NEURON's Exp2Syn (its conductance peaks at the NetCon weight) with
    a reversal potential so far away that g*(v - e) is a voltage-independent current: with
    e = E_FAR and weight = peak/E_FAR the current is -peak*(1 - v/E_FAR), i.e. within 1e-4 of
    an injected double-exponential current (event-driven, so exact under CVode too)."""
    out = {}
    for site in sorted({e.site for s in proto.sweeps for e in s.epsps}):
        kinds = {
            (e.tau_rise, e.tau_decay, e.peak)
            for s in proto.sweeps
            for e in s.epsps
            if e.site == site
        }
        if len(kinds) != 1:
            raise ValidationError(f"{proto.name}: one EPSP kind per site, got {kinds}")
        tau_rise, tau_decay, peak = next(iter(kinds))
        syn = h.Exp2Syn(segs[site])
        syn.e = E_FAR
        # Exp2Syn computes its peak normalisation at initialisation: the taus are set here;
        # the NetCon exists before SaveState.save (it must) and only its events vary by sweep.
        syn.tau1, syn.tau2 = tau_rise, tau_decay
        nc = h.NetCon(None, syn)
        nc.weight[0] = peak / E_FAR
        out[site] = (syn, nc)
    return out


class _ProtocolRun:
    """The NEURON objects of one protocol run (made once: SaveState needs the same objects)
    and the steps of a sweep; every object dies with the instance."""

    def __init__(
        self,
        h: Any,
        cell: Any,
        proto: Protocol,
        segs: dict[str, Any],
        n_pulse: int,
        *,
        cvode: bool,
        atol: float,
        dt: float,
    ) -> None:
        self.h, self.cell, self.proto = h, cell, proto
        self.cvode, self.atol, self.dt = cvode, atol, dt
        soma = cell.soma[0]
        self.hold = h.IClamp(soma(0.5))
        self.hold.delay, self.hold.dur, self.hold.amp = 0.0, 1e9, proto.holding
        self.pulses = [h.IClamp(soma(0.5)) for _ in range(n_pulse)]
        self.epsp_syn = _epsp_sources(h, proto, segs)
        self.epsp_events: list[tuple[Any, float]] = []
        self.trec = h.Vector()
        self.trec.record(h._ref_t)
        self.recs = {}
        for name, seg in segs.items():
            v = h.Vector()
            v.record(seg._ref_v, sec=seg.sec)
            self.recs[name] = v

    def init_rest(self) -> None:
        """Relax to the resting steady state with every stimulus off (they act at t >= 0
        only): large implicit fixed steps at t < 0, then t = 0 and the recordings start."""
        h = self.h
        h.cvode_active(0)
        h.finitialize(float(getattr(self.cell, "v_init", V_INIT)))
        h.t = -1e4
        h.dt = 10.0
        while h.t < -15.0:
            h.fadvance()
        h.dt = self.dt
        h.t = 0.0
        h.cvode_active(1 if self.cvode else 0)
        if self.cvode:
            h.cvode.atol(self.atol)
            h.cvode.re_init()
        else:
            h.fcurrent()
        h.frecord_init()

    def set_sweep(self, sw: Sweep) -> None:
        lead_in = self.proto.lead_in
        if any(p.delay < lead_in for p in sw.pulses) or any(e.onset < lead_in for e in sw.epsps):
            raise ValidationError(f"{self.proto.name}/{sw.name}: stimulus inside the lead-in")
        for k, clamp in enumerate(self.pulses):
            # an unused clamp is off and never starts (no at_time discontinuity for CVode)
            pk = sw.pulses[k] if k < len(sw.pulses) else Pulse("soma", 1e9, 0.0, 0.0)
            clamp.delay, clamp.dur, clamp.amp = pk.delay, pk.duration, pk.amp
        self.epsp_events = [(self.epsp_syn[e.site][1], e.onset) for e in sw.epsps]

    def queue_events(self) -> None:
        for nc, onset in self.epsp_events:
            nc.event(onset)

    def advance(self, tstop: float) -> None:
        if self.cvode:
            self.h.continuerun(tstop)
        else:
            _advance(tstop)

    def lead_in(self) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
        """The stimulus-free lead-in shared by every sweep: simulated once and saved."""
        self.set_sweep(Sweep("lead-in"))
        self.init_rest()
        self.advance(self.proto.lead_in)
        lead_t = np.array(self.trec)
        lead = {k: np.array(v) for k, v in self.recs.items()}
        state = self.h.SaveState()
        state.save()
        return lead_t, lead, state

    def start_sweep(self, sw: Sweep, state: Any) -> None:
        """Bring the cell to the end of the lead-in with this sweep's stimuli queued."""
        self.set_sweep(sw)
        if state is not None:
            state.restore()
            if self.cvode:
                self.h.cvode.re_init()
            self.h.frecord_init()
        else:
            self.init_rest()
            self.queue_events()
            self.advance(self.proto.lead_in)
            if self.cvode:  # the restore path re-initialises the integrator here too
                self.h.cvode.re_init()
        if state is not None:
            self.queue_events()


def _resample(run: _ProtocolRun, grid: np.ndarray, grid_dt: float, lead: Any) -> np.ndarray:
    """One sweep's traces (sites x samples) on the uniform output grid."""
    proto = run.proto
    t_run = np.array(run.trec)
    t_all = np.concatenate([lead[0], t_run[1:]]) if lead else t_run
    out = np.empty((len(proto.sites), grid.size))
    exact = not run.cvode and run.dt == grid_dt
    for j, (name, _) in enumerate(proto.sites):
        rec = np.array(run.recs[name])
        v_all = np.concatenate([lead[1][name], rec[1:]]) if lead else rec
        if exact and v_all.size != grid.size:
            raise ValidationError(f"{proto.name}: {v_all.size} samples, expected {grid.size}")
        # variable-step output goes onto the uniform DT grid (linear interpolation)
        out[j] = v_all if exact else np.interp(grid, t_all, v_all)
    return out


def _run_protocol(
    h: Any,
    cell: Any,
    proto: Protocol,
    *,
    cvode: bool,
    use_savestate: bool,
    atol: float = CVODE_ATOL,
    dt: float = DT,
    shift: float = 0.0,
    sweeps: Sequence[int] | None = None,
    calibrate: bool = True,
) -> ProtocolTraces:
    """Simulate one protocol on an already built cell; every NEURON object it makes dies here.

    `shift` moves every trunk site (um); `sweeps` selects sweep indices (default all). A
    protocol with `fixed_dt` always integrates with that fixed step; ca_train calibrates its
    pulses first (`calibrate_train_pulses`) unless `calibrate` is False."""
    t_start = time.monotonic()
    pulse_amp = None
    if proto.fixed_dt is not None:
        cvode, dt = False, proto.fixed_dt
    if proto.name == "ca_train" and calibrate:
        pulse_amp = calibrate_train_pulses(
            h, cell, shift=shift, cvode=cvode, atol=atol, dt=dt, sweeps=sweeps
        )
        proto = train_protocol(pulse_amp)
    grid_dt = proto.fixed_dt or DT
    chosen = [proto.sweeps[i] for i in (range(len(proto.sweeps)) if sweeps is None else sweeps)]
    h.celsius = CELSIUS
    segs, info = _place_sites(h, cell, proto, shift, pulse_amp)
    run = _ProtocolRun(
        h, cell, proto, segs, max(len(s.pulses) for s in chosen), cvode=cvode, atol=atol, dt=dt
    )
    lead = None
    state = None
    if use_savestate:
        lead_t, lead_v, state = run.lead_in()
        lead = (lead_t, lead_v)
    grid = np.arange(int(round(proto.tstop / grid_dt)) + 1) * grid_dt
    data = np.empty((len(chosen), len(proto.sites), grid.size))
    for i, sw in enumerate(chosen):
        run.start_sweep(sw, state)
        run.advance(proto.tstop)
        data[i] = _resample(run, grid, grid_dt, lead)
    h.cvode_active(0)
    tr = ProtocolTraces(
        proto.name, grid_dt, [s.name for s in chosen], [n for n, _ in proto.sites], data, info
    )
    tr.runtime_s = time.monotonic() - t_start
    return tr


def _worker(req: dict[str, Any]) -> None:
    t_start = time.monotonic()
    from neuron import h

    from l5assets.cell.builder import build_cell
    from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms

    mod_dir = Path(req["mod_dir"]) if req.get("mod_dir") else None
    cache_root = Path(req["cache_root"]) if req.get("cache_root") else None
    # the unflagged build: a validation must not depend on the user's L5ASSETS_MECH_CFLAGS
    load_mechanisms(compile_mechanisms(mod_dir, cache_root, cflags=""))
    h.load_file("stdrun.hoc")
    cell = build_cell(
        biophysics=req["cell"], morphology=req["morphology"], dL=float(req.get("dL", 5.0))
    )
    shift = site_shift(cell)
    build_s = time.monotonic() - t_start
    out = Path(req["out"])
    runtimes: dict[str, Any] = {"build_s": build_s, "site_shift_um": shift}
    # a unit is [protocol, sweep indices or None]; each is saved in its own folder
    for k, (name, sweeps) in enumerate(req["units"]):
        tr = _run_protocol(
            h,
            cell,
            PROTOCOLS[name],
            cvode=bool(req.get("cvode", True)),
            use_savestate=not req.get("no_savestate", False),
            atol=float(req.get("atol", CVODE_ATOL)),
            dt=float(req.get("dt", DT)),
            shift=shift,
            sweeps=sweeps,
        )
        folder = out / f"unit{k}"
        folder.mkdir()
        tr.save(folder)
        runtimes[f"unit{k}"] = tr.runtime_s
    (out / "runtime.json").write_text(json.dumps(runtimes))


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Internal: run one validation protocol in NEURON.")
    ap.add_argument("--worker", required=True, help="JSON request")
    args = ap.parse_args(argv)
    _worker(json.loads(args.worker))
    return 0
