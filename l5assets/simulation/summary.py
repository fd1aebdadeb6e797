"""Summary of one simulation from its output files (pure: files in, numbers out).

- output spikes: the cell's SONATA spike file (population `biophysical`),
- input spikes: the three input SONATA spike files (spike count and mean rate per population),
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

from l5assets.science.spikes import read_sonata_spikes


def isi_cv(times_ms: np.ndarray) -> float | None:
    """Coefficient of variation of the inter-spike intervals (None below 3 spikes)."""
    t = np.sort(np.asarray(times_ms, dtype=np.float64))
    if t.size < 3:
        return None
    isi = np.diff(t)
    m = float(isi.mean())
    return float(isi.std() / m) if m > 0 else None


def read_soma_trace(report: Path, population: str = "biophysical") -> tuple[np.ndarray, np.ndarray]:
    """(time ms, soma values) of the first cell in a compartment report."""
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
    t = t0 + dt * np.arange(data.size)
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
    transient_ms: float = 0.0,
) -> dict[str, Any]:
    """Firing rate, ISI CV, input spikes per population and mean soma V of one run.

    `transient_ms`: the initial period left out of the mean soma V (the rate uses the whole
    run, as the reference's analysis does).
    """
    duration_s = (tstop_ms - tstart_ms) / 1000.0
    if duration_s <= 0:
        raise ValueError("tstop_ms must exceed tstart_ms")
    out_trains = read_sonata_spikes(output_spikes) if Path(output_spikes).exists() else {}
    cell = out_trains.get(cell_population)
    times = cell.timestamps if cell is not None else np.zeros(0)
    cv = isi_cv(times)
    summary: dict[str, Any] = {
        "duration_s": duration_s,
        "spike_count": int(times.size),
        "firing_rate_hz": float(times.size / duration_s),
        "isi_cv": cv,
        "first_spike_ms": float(times.min()) if times.size else None,
    }
    inputs: dict[str, Any] = {}
    for pop, path in sorted(input_spikes.items()):
        trains = read_sonata_spikes(path).get(pop)
        n = len(trains) if trains is not None else 0
        n_nodes = int(np.unique(trains.node_ids).size) if trains is not None else 0
        inputs[pop] = {
            "spike_count": n,
            "active_nodes": n_nodes,
            "mean_rate_per_active_node_hz": (n / n_nodes / duration_s) if n_nodes else 0.0,
        }
    summary["input_spikes"] = inputs
    if membrane_report is not None and Path(membrane_report).exists():
        t, v = read_soma_trace(Path(membrane_report), cell_population)
        keep = t >= tstart_ms + transient_ms
        vv = v[keep] if keep.any() else v
        summary["soma_v_mean_mv"] = float(vv.mean()) if vv.size else None
        summary["soma_v_min_mv"] = float(vv.min()) if vv.size else None
        summary["soma_v_max_mv"] = float(vv.max()) if vv.size else None
        summary["soma_v_samples"] = int(v.size)
    return summary
