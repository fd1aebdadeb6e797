"""Figures of a run and its inputs (matplotlib Agg, no Dagster): what the materializations of
`functional_groups`, `exc_raster`, `inh_rasters` and `simulation_summary` show in the UI.

Each figure is drawn once, written full size next to the outputs and scaled down to a small
inline PNG (at most INLINE_MAX_BYTES, for Markdown metadata). PNGs carry no timestamp or
version text, so the same run gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

INLINE_MAX_BYTES = 150_000
FULL_DPI = 130
_INLINE_DPIS = (70, 55, 42, 32)
POP_STYLE = {  # population -> (label, colour)
    "exc_stim": ("exc", "tab:red"),
    "prox_inh_stim": ("PV+", "tab:blue"),
    "dist_inh_stim": ("SOM+", "tab:green"),
}
RASTER_SAMPLE = {"exc_stim": 120, "prox_inh_stim": 30, "dist_inh_stim": 30}
RATE_BIN_MS = 20.0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, dpi: float) -> bytes:
    """The figure as PNG bytes (no metadata text: deterministic)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def inline_png(fig: Any, dpis: tuple[float, ...] = _INLINE_DPIS) -> bytes | None:
    """The figure as a PNG of at most INLINE_MAX_BYTES (the first of `dpis` that fits), or
    None if none does."""
    for dpi in dpis:
        small = png_bytes(fig, dpi)
        if len(small) <= INLINE_MAX_BYTES:
            return small
    return None


def _encode_png(image: Any, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=compress_level)  # no text chunks: deterministic
    return buf.getvalue()


def render(fig: Any, full_path: Path) -> bytes:
    """Write `fig` full size to `full_path`; return a small PNG of it (<= INLINE_MAX_BYTES).

    The figure is drawn once, at FULL_DPI (drawing, mostly text layout, is most of the cost);
    the small copy is that image scaled down (Lanczos) to the first of the inline resolutions
    that fits."""
    from PIL import Image

    fig.set_dpi(FULL_DPI)
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")  # opaque
    _pyplot().close(fig)
    # the full-size file at zlib level 1: ~2x faster than 6, hardly larger (flat colours)
    Path(full_path).write_bytes(_encode_png(image, compress_level=1))
    for dpi in _INLINE_DPIS:
        size = (round(image.width * dpi / FULL_DPI), round(image.height * dpi / FULL_DPI))
        # scaling makes in-between colours; a 256-colour palette keeps the PNG small
        small = image.resize(size, Image.Resampling.LANCZOS).quantize(256)
        data = _encode_png(small)
        if len(data) <= INLINE_MAX_BYTES:
            return data
    raise ValueError(f"inline figure over {INLINE_MAX_BYTES} bytes even at {_INLINE_DPIS[-1]} dpi")


def histogram_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`np.histogram(values, bins=edges)[0]` without sorting `values` (numpy sorts them for
    an array of edges: ~0.1 s for a 30-s raster): the last bin includes its right edge."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, v, side="right") - 1
    idx[v == edges[-1]] = edges.size - 2
    keep = (idx >= 0) & (idx < edges.size - 1)
    return np.bincount(idx[keep], minlength=edges.size - 1)


def _spiking_ids(node_ids: np.ndarray) -> np.ndarray:
    """The distinct node ids that spiked, ascending (a count per id: O(n), no sort)."""
    if not node_ids.size:
        return np.zeros(0, dtype=np.int64)
    if node_ids.min() < 0:  # not SONATA ids: sort instead
        return np.unique(node_ids)
    return np.flatnonzero(np.bincount(node_ids.astype(np.int64, copy=False)))


def _raster_and_rates(
    ax_r: Any,
    ax_rate: Any,
    trains: Mapping[str, Any],
    tstop_ms: float,
    legend: Any,
    sample_scale: int = 1,
) -> None:
    """Per population (POP_STYLE order): a raster of a sample of its inputs on `ax_r`, stacked,
    and its rate per active input in RATE_BIN_MS bins on `ax_rate`, labelled by
    `legend(pop, label, timestamps, n_active)`."""
    bins = np.arange(0.0, tstop_ms + RATE_BIN_MS, RATE_BIN_MS)
    offset = 0
    for pop, (label, colour) in POP_STYLE.items():
        if pop not in trains:
            continue
        ids = np.asarray(trains[pop].node_ids)
        ts = np.asarray(trains[pop].timestamps)
        spiking = _spiking_ids(ids)
        keep = spiking[: RASTER_SAMPLE[pop] * sample_scale]  # the first ids: a fixed sample
        sel = ids <= keep[-1] if keep.size else np.zeros(ids.size, dtype=bool)
        rank = np.searchsorted(keep, ids[sel])
        ax_r.scatter(ts[sel], rank + offset, s=1.5, c=colour, marker="|", linewidths=0.6)
        ax_r.text(tstop_ms * 1.005, offset + len(keep) / 2, label, color=colour, fontsize=8)
        offset += len(keep) + 5
        n = max(int(spiking.size), 1)
        counts = histogram_counts(ts, bins)
        ax_rate.step(
            bins[:-1],
            counts / n / (RATE_BIN_MS / 1000.0),
            where="post",
            color=colour,
            lw=0.9,
            label=legend(pop, label, ts, n),
        )


def summary_figure(
    summary: Mapping[str, Any],
    input_trains: Mapping[str, Any],
    output_spikes_ms: np.ndarray,
    tstop_ms: float,
    soma: tuple[np.ndarray, np.ndarray] | None = None,
    dend: tuple[np.ndarray, np.ndarray] | None = None,
) -> Any:
    """Input raster (a sample of each population), population rates, soma voltage with the
    cell's spikes, and the hot-zone voltage with its Ca2+ spikes: one figure per run.

    `input_trains`: population -> SpikeTrains (node_ids, timestamps in ms); `soma` / `dend`:
    (t ms, v mV) traces, or None when not recorded."""
    plt = _pyplot()
    rows = 2 + (soma is not None) + (dend is not None)
    fig, axes = plt.subplots(
        rows, 1, figsize=(10, 2.1 * rows + 0.6), sharex=True, constrained_layout=True
    )
    ax_r, ax_rate = axes[0], axes[1]
    rates = summary.get("input_spikes", {})
    _raster_and_rates(
        ax_r,
        ax_rate,
        input_trains,
        tstop_ms,
        lambda pop, label, ts, n: (
            f"{label} ({rates[pop]['mean_rate_per_active_node_hz']:.1f} Hz)"
            if "mean_rate_per_active_node_hz" in rates.get(pop, {})
            else label
        ),
    )
    ax_r.set_ylabel("input (sample)")
    ax_r.set_yticks([])
    ax_rate.set_ylabel("rate per input (Hz)")
    ax_rate.legend(fontsize=7, loc="upper right", ncol=3)
    k = 2
    if soma is not None:
        ax = axes[k]
        k += 1
        ax.plot(soma[0], soma[1], color="k", lw=0.5)
        spikes = np.asarray(output_spikes_ms)
        if spikes.size:
            ax.plot(spikes, np.full(spikes.size, 45.0), "v", color="tab:purple", ms=3)
        ax.set_ylabel("soma V (mV)")
    if dend is not None:
        ax = axes[k]
        ax.plot(dend[0], dend[1], color="tab:orange", lw=0.5)
        ca = summary.get("dend_ca_spikes") or {}
        times = np.asarray(ca.get("times_ms") or [], dtype=float)
        if times.size:
            ax.plot(times, np.full(times.size, 25.0), "*", color="tab:brown", ms=5)
        site = (ca.get("site") or {}).get("distance_um")
        ax.set_ylabel(f"hot zone V (mV){f' @ {site:.0f} um' if site else ''}")
    axes[-1].set_xlabel("time (ms)")
    axes[-1].set_xlim(0.0, tstop_ms)
    cv = summary.get("isi_cv")
    ca = summary.get("dend_ca_spikes") or {}
    title = (
        f"{summary.get('param_set', '')} seed {summary.get('seed', '')}: "
        f"{summary.get('spike_count', 0)} spikes, {summary.get('firing_rate_hz', 0.0):.2f} Hz, "
        f"ISI CV {'n/a' if cv is None else f'{cv:.2f}'}"
        + (f", {ca['count']} dendritic Ca2+ spikes" if ca else "")
    )
    fig.suptitle(title, fontsize=10)
    return fig


def read_dend_trace(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t ms, v mV) of the runner's hot-zone recording (`dend_v.h5`)."""
    import h5py

    with h5py.File(path, "r") as f:
        v = f["v"][()].astype(np.float64)
        dt = float(f.attrs["dt_ms"])
        t0 = float(f.attrs["t0_ms"])
    return t0 + dt * np.arange(v.size), v


def groups_figure(segments: Any, synapses: Any, groups: Any, title: str) -> Any:
    """Functional groups on the cell: every segment in grey (x-y projection, size by
    diameter), each group's synapses in its own colour, cluster centres as crosses; one panel
    per region (basal, apical) so the two sets of groups can be told apart."""
    plt = _pyplot()
    regions = [r for r in ("basal", "apic") if (synapses["region"] == r).any()]
    # panels about as wide as the cell is (aspect 1 on a ~1300 x 330 um cell)
    fig, axes = plt.subplots(1, len(regions) or 1, figsize=(3.4 * max(len(regions), 1), 7))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("tab20")
    for ax, region in zip(axes, regions, strict=False):
        ax.scatter(
            segments["coord_x"],
            segments["coord_y"],
            s=np.clip(segments["diam"], 0.2, 4.0),
            c="0.8",
            linewidths=0,
        )
        syn = synapses[synapses["region"] == region]
        # one collection per panel (a scatter per group made drawing the figure cost ~1 s):
        # group k of the region in colour k, its synapses drawn group after group
        gids = np.unique(syn["group"].to_numpy())
        rank = np.searchsorted(gids, syn["group"].to_numpy())
        order = np.argsort(rank, kind="stable")
        colours = cmap(np.arange(gids.size) % 20)
        ax.scatter(
            syn["coord_x"].to_numpy()[order],
            syn["coord_y"].to_numpy()[order],
            s=2,
            c=colours[rank[order]],
            linewidths=0,
        )
        centres = groups.set_index("group").loc[gids]
        ax.scatter(centres["coord_x"], centres["coord_y"], s=36, marker="x", c=colours)
        n_groups = int((groups["region"] == region).sum())
        ax.set_title(f"{region}: {n_groups} groups, {len(syn)} synapses", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlabel("x (um)")
        ax.set_ylabel("y (um)")
    fig.suptitle(title, fontsize=10)
    # fixed margins, not tight_layout (another draw of ~30k points, ~0.1 s per seed)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.9, bottom=0.07, wspace=0.35)
    return fig


def raster_figure(trains: Mapping[str, Any], tstop_ms: float, title: str) -> Any:
    """A sample of each population's spike trains above their population rates."""
    plt = _pyplot()
    fig, (ax_r, ax_rate) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    _raster_and_rates(
        ax_r,
        ax_rate,
        trains,
        tstop_ms,
        lambda pop, label, ts, n: (
            f"{label} ({ts.size / n / (tstop_ms / 1000.0):.1f} Hz per active input)"
        ),
        sample_scale=2 if len(trains) == 1 else 1,
    )
    ax_r.set_ylabel("inputs (sample)")
    ax_r.set_yticks([])
    ax_rate.set_ylabel(f"rate per input (Hz, {RATE_BIN_MS:g} ms bins)")
    ax_rate.set_xlabel("time (ms)")
    ax_rate.set_xlim(0.0, tstop_ms)
    ax_rate.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    # fixed margins (tight_layout's margins for this layout): tight_layout draws the figure
    # once more, ~0.1 s of each raster stage
    fig.subplots_adjust(left=0.07, right=0.945, top=0.92, bottom=0.1, hspace=0.13)
    return fig
