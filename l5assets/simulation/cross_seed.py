"""Across the seeds of one param set: the summaries side by side, mean and spread.

Reads the per-seed `simulation_summary` results (summary.json) and tabulates, per seed, the
cell's firing rate, ISI CV and dendritic Ca2+ events (count and rate at the hot-zone site);
`statistics` gives mean, SD, min and max over the seeds that have each value (ISI CV is None
below 3 spikes; cells without an apical trunk have no Ca2+ site); `figure` plots each metric
across seeds with its mean +- SD.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

METRICS: tuple[tuple[str, str, str], ...] = (  # column, label, unit
    ("firing_rate_hz", "firing rate", "Hz"),
    ("isi_cv", "ISI CV", ""),
    ("dend_ca_spikes", "dendritic Ca2+ spikes", "count"),
    ("dend_ca_spike_rate_hz", "dendritic Ca2+ spike rate", "Hz"),
)


def seed_table(summaries: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per seed (sorted): seed, spike_count, the METRICS columns (NaN when absent)."""
    rows = []
    for seed in sorted(summaries):
        s = summaries[seed]
        ca = s.get("dend_ca_spikes") or {}
        rows.append(
            {
                "seed": int(seed),
                "spike_count": int(s["spike_count"]),
                "firing_rate_hz": float(s["firing_rate_hz"]),
                "isi_cv": np.nan if s.get("isi_cv") is None else float(s["isi_cv"]),
                "dend_ca_spikes": float(ca["count"]) if "count" in ca else np.nan,
                "dend_ca_spike_rate_hz": float(ca["rate_hz"]) if "rate_hz" in ca else np.nan,
            }
        )
    cols = ["seed", "spike_count", *(m[0] for m in METRICS)]
    return pd.DataFrame(rows, columns=cols)


def statistics(table: pd.DataFrame) -> dict[str, dict[str, float | int | None]]:
    """Per metric: n (seeds with a value), mean, sd (sample, ddof 1; None below 2), min, max."""
    out: dict[str, dict[str, float | int | None]] = {}
    for col, _, _ in METRICS:
        v = table[col].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        out[col] = {
            "n": int(v.size),
            "mean": float(v.mean()) if v.size else None,
            "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()) if v.size else None,
            "max": float(v.max()) if v.size else None,
        }
    return out


def figure(table: pd.DataFrame, title: str) -> Any:
    """One panel per metric: each seed's value, and the mean +- SD across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = statistics(table)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 3.2))
    x = np.arange(len(table))
    for ax, (col, label, unit) in zip(axes, METRICS, strict=True):
        ax.plot(x, table[col].to_numpy(dtype=np.float64), "o", color="0.35", ms=4)
        st = stats[col]
        if st["mean"] is not None:
            ax.axhline(st["mean"], color="tab:red", lw=1.2)
            if st["sd"] is not None:
                ax.axhspan(
                    st["mean"] - st["sd"], st["mean"] + st["sd"], color="tab:red", alpha=0.15
                )
        ax.set_title(
            f"{label}\nmean {_fmt(st['mean'])} sd {_fmt(st['sd'])} (n {st['n']})", fontsize=9
        )
        ax.set_ylabel(unit)
        ax.set_xticks(x if len(x) <= 12 else x[:: max(1, len(x) // 12)])
        ax.set_xticklabels(
            [str(s) for s in table["seed"].to_numpy()[ax.get_xticks().astype(int)]],
            fontsize=7,
            rotation=90 if len(x) > 6 else 0,
        )
        ax.set_xlabel("seed")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
