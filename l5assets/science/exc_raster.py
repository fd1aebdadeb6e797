"""Excitatory input spike raster (SPEC section 6).

Each functional group shares one 1/f noise trace (rate profile in [0.5, 1.5], one sample per
ms); each cell scales it by exp(r), r ~ Levy-stable(alpha 1.37, beta -1, loc 1.84, scale 0.44)
(scipy's default S1 parametrisation). Per 1-ms bin a cell spikes at most once, at the bin's
integer ms plus start*1000.

Spikes: "a Poisson count with mean rate/1000 per bin, at most one spike kept" is a Bernoulli
trial with p = 1 - exp(-rate/1000) per bin. We draw it by thinning (`thinned_spikes`): per
cell, candidate bins are Bernoulli trials at the cell's largest p (geometric gaps between
them), and each candidate is kept with probability p(bin)/p_max. That is the same law with
random numbers only for the ~2% of bins that are candidates (L5_reference, 5,222 cells x
30,000 bins: ~5 M draws instead of 157 M).

Trace length: round((stop - start) * 1000) samples, i.e. every 1-ms bin of [start, stop). The
reference makes one sample fewer (an off-by-one that leaves the last ms silent); covering the
whole interval changes the mean rate by 1 part in (stop - start) * 1000 and keeps the raster
aligned with the simulated interval.

Random draws, in this fixed order, from the generator passed in (stage "exc_raster"): for
each group in `group` order: (1) its noise trace (`pink_noise(n_samples, 1, rng)`), (2) the
cells' Levy-stable exponents (n_cells values, scipy `levy_stable.rvs(random_state=rng)`),
(3) the candidate bins' geometric gaps (`candidate_bins`: exponential draws), (4) one uniform
per candidate, in (cell, bin) order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import levy_stable

from l5assets.params import ParamSet
from l5assets.science.noise import pink_noise
from l5assets.science.spikes import SpikeTrains

LEVY_ALPHA = 1.37
LEVY_BETA = -1.0
LEVY_LOC = 1.84  # the reference writes 0.92 * 2
LEVY_SCALE = 0.44


def n_bins(start_s: float, stop_s: float) -> int:
    """Number of 1-ms bins in [start, stop) (rounded, so 0.3 s gives 300, not 299)."""
    return int(round((stop_s - start_s) * 1000.0))


def levy_exponents(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-cell log-rate factors r ~ Levy-stable(1.37, -1, loc 1.84, scale 0.44)."""
    if n == 0:
        return np.zeros(0)
    return np.asarray(
        levy_stable.rvs(
            LEVY_ALPHA, LEVY_BETA, loc=LEVY_LOC, scale=LEVY_SCALE, size=n, random_state=rng
        ),
        dtype=np.float64,
    ).reshape(n)


def bernoulli_spikes(
    rates_hz: np.ndarray, rng: np.random.Generator, first_node: int = 0, offset_ms: float = 0.0
) -> SpikeTrains:
    """At most one spike per 1-ms bin with probability 1 - exp(-rate/1000), one draw per bin.

    `rates_hz` is (n_cells, n_bins); negative rates count as 0. Spike times are the bin index
    plus `offset_ms`; node ids are the row plus `first_node`. Draws `standard_exponential` for
    every bin, row-major. Output in (node, time) order. The rasters use `thinned_spikes` (the
    same law, far fewer draws); this is its reference in the tests.
    """
    rates = np.asarray(rates_hz, dtype=np.float64)
    e = rng.standard_exponential(rates.shape)
    e *= 1000.0  # compare E * 1000 < rate instead of E < rate / 1000
    row, col = np.nonzero(e < rates)
    return SpikeTrains(row.astype(np.int64) + first_node, col.astype(np.float64) + offset_ms)


def bin_probability(rates_hz: np.ndarray) -> np.ndarray:
    """P(at least one Poisson spike in a 1-ms bin) = 1 - exp(-rate/1000); rates < 0 count 0."""
    return -np.expm1(-np.maximum(np.asarray(rates_hz, dtype=np.float64), 0.0) / 1000.0)


def candidate_bins(
    p_max: np.ndarray, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(row, bin) of a Bernoulli(p_max[row]) trial per bin that succeeded, in (row, bin) order.

    Drawn as geometric gaps between successes (the law of a Bernoulli process; one
    `standard_exponential` per gap): first
    `_gap_budget` gaps per row with p > 0, row-major, then, for the rows whose successes had
    not yet passed the last bin, further rounds of gaps (the same rows in order) until they
    have. Rows with p = 0 draw nothing.
    """
    p = np.clip(np.asarray(p_max, dtype=np.float64), 0.0, 1.0)
    rows_out: list[np.ndarray] = []
    bins_out: list[np.ndarray] = []
    active = np.flatnonzero(p > 0.0)
    last = np.full(p.shape, -1, dtype=np.int64)  # last candidate bin so far, per row
    with np.errstate(divide="ignore"):  # p = 1: lambda = inf, every gap is 1
        lam_row = -np.log1p(-p)
    while active.size:
        m = _gap_budget(p[active], n_samples)
        row = np.repeat(active, m)
        # geometric gaps as floor(E / lambda) + 1, lambda = -log(1 - p): exact, and capped
        # in floating point (a tiny p would overflow an integer draw)
        lam = np.repeat(lam_row[active], m)
        gaps = np.minimum(np.floor(rng.standard_exponential(row.size) / lam) + 1.0, n_samples + 1)
        gaps = gaps.astype(np.int64)
        # positions: per-row cumulative sums, each row starting after its last candidate
        pos = np.cumsum(gaps)
        starts = np.concatenate(([0], np.cumsum(m)[:-1]))
        before = np.repeat(pos[starts] - gaps[starts], m)
        pos = pos - before + np.repeat(last[active], m)
        keep = pos < n_samples
        rows_out.append(row[keep])
        bins_out.append(pos[keep])
        ends = pos[starts + m - 1]
        last[active] = ends
        active = active[ends < n_samples]  # the row's gaps ran out before its last bin
    if not rows_out:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if len(rows_out) == 1:  # one round (the usual case): already in (row, bin) order
        return rows_out[0], bins_out[0]
    row, pos = np.concatenate(rows_out), np.concatenate(bins_out)
    order = np.lexsort((pos, row))  # later rounds append: back to (row, bin) order
    return row[order], pos[order]


def _gap_budget(p: np.ndarray, n: int) -> np.ndarray:
    """Gaps to draw per row: the mean count of successes in n trials plus ~6 SD, so that a
    second round is rare."""
    mean = n * p
    return np.ceil(mean + 6.0 * np.sqrt(mean * (1.0 - p)) + 4.0).astype(np.int64)


def thinned_bins(
    row_max_hz: np.ndarray,
    rate_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(row, bin) of the spikes of `thinned_spikes` (same draws), in (row, bin) order, int64."""
    p_max = bin_probability(row_max_hz)
    row, col = candidate_bins(p_max, n_samples, rng)
    u = rng.random(row.size)
    p = bin_probability(rate_at(row, col))
    if np.any(p > p_max[row] * (1 + 1e-12)):
        raise ValueError("thinned_spikes: a rate exceeds its row's bound")
    kept = u * p_max[row] < p
    return row[kept], col[kept]


def thinned_spikes(
    row_max_hz: np.ndarray,
    rate_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_samples: int,
    rng: np.random.Generator,
    first_node: int = 0,
    offset_ms: float = 0.0,
) -> SpikeTrains:
    """At most one spike per 1-ms bin with probability 1 - exp(-rate/1000), by thinning.

    `row_max_hz[i]` bounds cell i's rate over its bins from above and `rate_at(rows, bins)`
    gives the rates at given (cell, bin) points. Candidate bins are Bernoulli(p_max) trials
    (`candidate_bins`); each is kept with probability p(rate)/p_max, one uniform draw per
    candidate in (row, bin) order. The result has exactly the law of one Bernoulli(p) draw per
    bin, with about 2 x (expected candidates) random numbers instead of one per bin. Output in
    (node, time) order.
    """
    row, col = thinned_bins(row_max_hz, rate_at, n_samples, rng)
    return SpikeTrains(row + first_node, col.astype(np.float64) + offset_ms)


def _group_bins(
    n_cells: int, n_samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(cell, bin) of one functional group's spikes: shared trace x exp(r) per cell (draws
    1-4 of the module docstring)."""
    trace = pink_noise(n_samples, 1, rng)[0]
    scale = np.exp(levy_exponents(n_cells, rng))
    if n_cells == 0 or n_samples == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return thinned_bins(
        scale * max(float(trace.max()), 0.0),
        lambda rows, bins: scale[rows] * trace[bins],
        n_samples,
        rng,
    )


def group_spikes(
    n_cells: int,
    first_node: int,
    n_samples: int,
    offset_ms: float,
    rng: np.random.Generator,
) -> SpikeTrains:
    """Spikes of one functional group: shared trace x exp(r) per cell (draws 1-4 above), in
    (node, time) order."""
    row, col = _group_bins(n_cells, n_samples, rng)
    return SpikeTrains(row + first_node, col.astype(np.float64) + offset_ms)


def exc_raster(groups: pd.DataFrame, params: ParamSet, rng: np.random.Generator) -> SpikeTrains:
    """Excitatory raster of every input cell, sorted by time then node id.

    `groups` is `FunctionalGroups.groups` (columns group, first_node_id, n_cells). Times (ms)
    are integers in [start*1000, stop*1000).
    """
    for col in ("group", "first_node_id", "n_cells"):
        if col not in groups.columns:
            raise ValueError(f"exc_raster: groups table lacks column {col!r}")
    nb = n_bins(params.start, params.stop)
    g = groups.sort_values("group", kind="stable")
    # each group's spikes as int32 (node, bin): a third of the memory of the int64/float64
    # trains until the one sort by time (L5_reference: ~1.8 M spikes)
    nodes, bins = [], []
    for first, n in zip(g["first_node_id"], g["n_cells"], strict=True):
        row, col = _group_bins(int(n), nb, rng)
        nodes.append((row + int(first)).astype(np.int32))
        bins.append(col.astype(np.int32))
    if not nodes:
        return SpikeTrains.empty()
    all_nodes, all_bins = np.concatenate(nodes), np.concatenate(bins)
    del nodes, bins  # the parts, before the sort's copies
    return spikes_from_bins(all_nodes, all_bins, params.start * 1000.0)


def spikes_from_bins(nodes: np.ndarray, bins: np.ndarray, offset_ms: float) -> SpikeTrains:
    """Spikes at (integer bin + `offset_ms`) sorted by time then node id; the same train as
    `SpikeTrains(nodes, bins + offset).sorted_by_time()` with less memory."""
    if nodes.size > 1 and not bool(np.all(nodes[1:] >= nodes[:-1])):
        order = np.lexsort((nodes, bins))
    else:  # in node order (as drawn): a stable sort by bin keeps ties in node order
        small = bins.size and 0 <= bins.min() and bins.max() < 65536
        order = np.argsort(bins.astype(np.uint16) if small else bins, kind="stable")
    # sorted int32 copies first, then the int64/float64 arrays: at most ~3 copies alive
    nodes, bins = nodes[order], bins[order]
    del order
    times = bins.astype(np.float64)
    del bins
    times += offset_ms
    return SpikeTrains(nodes.astype(np.int64), times)
