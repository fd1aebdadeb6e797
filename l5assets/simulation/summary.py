"""Summary of one simulation from its output files (pure: files in, numbers out).

- output spikes: the cell's SONATA spike file (population `biophysical`),
- input spikes: the three input SONATA spike files (spike count and mean rate per population,
  each over the window its raster covers: excitatory [start, stop), inhibitory [0, stop)),
- membrane report: a BMTK/SONATA compartment report (`/report/<pop>/data`, shape
  (n_steps, n_elements), and `/report/<pop>/mapping`); the soma trace is element 0 of the cell
  when the report covers the soma only, else the first element whose element_id is the soma's
  section (BMTK orders the soma first).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from l5assets.network.build import EXC_POP
from l5assets.science.spikes import read_sonata_spikes

# Left out of the soma V statistics: the relaxation from v_init (-80 mV). Measured on the quiet
# L5PC_bbp cell (34 C, dt 0.1): within 2 mV of rest after 31 ms, within 0.5 mV after 140 ms
# (Ih overshoots on the way).
DEFAULT_TRANSIENT_MS = 150.0


def isi_cv(times_ms: np.ndarray) -> float | None:
    """Coefficient of variation of the inter-spike intervals (None below 3 spikes)."""
    t = np.sort(np.asarray(times_ms, dtype=np.float64))
    if t.size < 3:
        return None
    isi = np.diff(t)
    m = float(isi.mean())
    return float(isi.std() / m) if m > 0 else None


def read_soma_trace(report: Path, population: str = "biophysical") -> tuple[np.ndarray, np.ndarray]:
    """(time ms, soma values) of the first cell in a compartment report.

    BMTK BioNet (1.2.0) records after every time step and never the initial state, while its
    mapping/time says [tstart, tstop, dt]: sample k is the value at tstart + (k + 1) * dt, and
    that is the time returned here (the last sample is at tstop).
    """
    with h5py.File(report, "r") as f:
        grp = f["report"][population]
        mapping = grp["mapping"]
        t0, t1, dt = (float(v) for v in mapping["time"][()])
        ptr = mapping["index_pointer"][()]
        elem = mapping["element_ids"][()]
        # the first cell's elements; BMTK lists the soma section (id 0) first
        lo, hi = int(ptr[0]), int(ptr[1])
        soma_cols = np.flatnonzero(elem[lo:hi] == 0)
        col = lo + (int(soma_cols[len(soma_cols) // 2]) if soma_cols.size else 0)
        data = grp["data"][:, col].astype(np.float64)
    t = t0 + dt * np.arange(1, data.size + 1)
    if t.size and t[-1] > t1 + dt / 2:
        raise ValueError(f"{report}: {data.size} samples do not fit [{t0}, {t1}] at dt {dt}")
    return t, data


def summarize(
    output_spikes: Path,
    input_spikes: Mapping[str, Path],
    tstop_ms: float,
    membrane_report: Path | None = None,
    tstart_ms: float = 0.0,
    cell_population: str = "biophysical",
    transient_ms: float = DEFAULT_TRANSIENT_MS,
    dend_trace: Path | None = None,
) -> dict[str, Any]:
    """Firing rate, ISI CV, input spikes per population and mean soma V of one run.

    Time windows (each reported in the summary, in ms):
    - the cell's firing rate and ISI CV: the whole simulated run [0, tstop_ms];
    - input rates: each population over the window its raster covers (SPEC 6): the excitatory
      population (`exc_stim`) over [tstart_ms, tstop_ms) (tstart_ms = params `start` * 1000),
      every other (inhibitory) population over [0, tstop_ms); spikes outside are not counted;
    - soma V statistics: [min(transient_ms, tstop_ms / 2), tstop_ms], leaving out the
      relaxation from v_init (-80 mV) at the start of the run (at most half of a short run is
      left out, so a mean always exists);
    - dendritic Ca2+ spikes (with `dend_trace`, the runner's hot-zone recording): the same
      window as the soma V, by the cell validation's Ca2+ spike criterion
      (`ca_spike_events`); count, rate over that window, peak times.
    """
    if tstop_ms <= 0 or not 0 <= tstart_ms < tstop_ms:
        raise ValueError(f"need 0 <= tstart_ms < tstop_ms, got {tstart_ms}, {tstop_ms}")
    if transient_ms < 0:
        raise ValueError(f"transient_ms must be >= 0, got {transient_ms}")
    duration_s = tstop_ms / 1000.0
    out_trains = read_sonata_spikes(output_spikes) if Path(output_spikes).exists() else {}
    cell = out_trains.get(cell_population)
    times = cell.timestamps if cell is not None else np.zeros(0)
    times = times[(times >= 0) & (times <= tstop_ms)]  # the run is [0, tstop]
    cv = isi_cv(times)
    summary: dict[str, Any] = {
        "duration_s": duration_s,
        "rate_window_ms": [0.0, float(tstop_ms)],
        "spike_count": int(times.size),
        "firing_rate_hz": float(times.size / duration_s),
        "isi_cv": cv,
        "first_spike_ms": float(times.min()) if times.size else None,
    }
    inputs: dict[str, Any] = {}
    for pop, path in sorted(input_spikes.items()):
        lo = float(tstart_ms) if pop == EXC_POP else 0.0
        window_s = (tstop_ms - lo) / 1000.0
        trains = read_sonata_spikes(path).get(pop)
        if trains is not None:
            inside = (trains.timestamps >= lo) & (trains.timestamps < tstop_ms)
            ids = trains.node_ids[inside]
        else:
            ids = np.zeros(0, dtype=np.int64)
        n = int(ids.size)
        n_nodes = int(np.unique(ids).size)
        inputs[pop] = {
            "window_ms": [lo, float(tstop_ms)],
            "spike_count": n,
            "active_nodes": n_nodes,
            "mean_rate_per_active_node_hz": (n / n_nodes / window_s) if n_nodes else 0.0,
        }
    summary["input_spikes"] = inputs
    if membrane_report is not None and Path(membrane_report).exists():
        t, v = read_soma_trace(Path(membrane_report), cell_population)
        t0 = min(float(transient_ms), tstop_ms / 2.0)
        vv = v[t >= t0 - 1e-9]  # sample times are multiples of dt: no rounding loss
        summary["soma_v_window_ms"] = [t0, float(tstop_ms)]
        summary["soma_v_mean_mv"] = float(vv.mean()) if vv.size else None
        summary["soma_v_min_mv"] = float(vv.min()) if vv.size else None
        summary["soma_v_max_mv"] = float(vv.max()) if vv.size else None
        summary["soma_v_samples"] = int(vv.size)
    if dend_trace is not None and Path(dend_trace).exists():
        summary["dend_ca_spikes"] = dendritic_ca_spikes(
            Path(dend_trace), min(float(transient_ms), tstop_ms / 2.0), tstop_ms
        )
    return summary


def dendritic_ca_spikes(path: Path, t_from_ms: float, tstop_ms: float) -> dict[str, Any]:
    """Ca2+ spikes in the runner's hot-zone trace (`dend_v.h5`) after `t_from_ms`."""
    from l5assets.cell.validation.features import ca_spike_events

    with h5py.File(path, "r") as f:
        v = f["v"][()].astype(np.float64)
        dt = float(f.attrs["dt_ms"])
        t0 = float(f.attrs["t0_ms"])
        site = {
            "section": str(f.attrs["section"]),
            "x": float(f.attrs["x"]),
            "distance_um": float(f.attrs["distance_um"]),
        }
    t = t0 + dt * np.arange(v.size)
    ev = ca_spike_events(t, v, after=t_from_ms)
    window_s = (tstop_ms - t_from_ms) / 1000.0
    return {
        "count": ev["count"],
        "rate_hz": ev["count"] / window_s if window_s > 0 else 0.0,
        "times_ms": ev["times_ms"],
        "half_widths_ms": ev["half_widths_ms"],
        "base_mv": ev["base_mv"],
        "window_ms": [t_from_ms, tstop_ms],
        "site": site,
    }
