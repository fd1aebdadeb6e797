"""Excitatory input spike raster (SPEC section 6).

Each functional group shares one 1/f noise trace (rate profile in [0.5, 1.5], one sample per
ms); each cell scales it by exp(r), r ~ Levy-stable(alpha 1.37, beta -1, loc 1.84, scale 0.44)
(scipy's default S1 parametrisation). Per 1-ms bin a cell spikes at most once, at the bin's
integer ms plus start*1000.

Spikes: "a Poisson count with mean rate/1000 per bin, at most one spike kept" is a Bernoulli
trial with p = 1 - exp(-rate/1000). We draw it as E < rate/1000 with E ~ Exp(1)
(P(E < lam) = 1 - exp(-lam)): the same law, one fast ziggurat draw per bin and no exp/Poisson
evaluation, so 5,222 cells x 30,000 bins take seconds.

Trace length: round((stop - start) * 1000) samples, i.e. every 1-ms bin of [start, stop). The
reference makes one sample fewer (an off-by-one that leaves the last ms silent); covering the
whole interval changes the mean rate by 1 part in (stop - start) * 1000 and keeps the raster
aligned with the simulated interval.

Random draws, in this fixed order, from the generator passed in (stage "exc_raster"): for
each group in `group` order: (1) its noise trace (`pink_noise(n_samples, 1, rng)`), (2) the
cells' Levy-stable exponents (n_cells values, scipy `levy_stable.rvs(random_state=rng)`),
(3) `standard_exponential` for the (n_cells, n_samples) bins, row-major; drawn in blocks of
whole rows to bound memory, which yields the same numbers as one block.
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
BLOCK_BINS = 2_000_000  # bins per block of exponential draws (~16 MB of float64)


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
    """At most one spike per 1-ms bin with probability 1 - exp(-rate/1000).

    `rates_hz` is (n_cells, n_bins); negative rates count as 0. Spike times are the bin index
    plus `offset_ms`; node ids are the row plus `first_node`. Draws `standard_exponential` for
    every bin, row-major. Output in (node, time) order.
    """
    rates = np.asarray(rates_hz, dtype=np.float64)
    e = rng.standard_exponential(rates.shape)
    e *= 1000.0  # compare E * 1000 < rate instead of E < rate / 1000
    row, col = np.nonzero(e < rates)
    return SpikeTrains(row.astype(np.int64) + first_node, col.astype(np.float64) + offset_ms)


def blocked_spikes(
    n_cells: int,
    n_samples: int,
    rate_rows: Callable[[int, int], np.ndarray],
    rng: np.random.Generator,
    first_node: int = 0,
    offset_ms: float = 0.0,
) -> SpikeTrains:
    """`bernoulli_spikes` for rates built a block of rows at a time by `rate_rows(r0, r1)`.

    Blocks hold about BLOCK_BINS bins, bounding memory; as the exponential draws stay
    row-major, the block size does not change the spikes.
    """
    rows_per_block = max(1, BLOCK_BINS // max(n_samples, 1))
    parts = [
        bernoulli_spikes(
            rate_rows(r0, min(r0 + rows_per_block, n_cells)), rng, first_node + r0, offset_ms
        )
        for r0 in range(0, n_cells, rows_per_block)
    ]
    return SpikeTrains.concat(parts)


def group_spikes(
    n_cells: int,
    first_node: int,
    n_samples: int,
    offset_ms: float,
    rng: np.random.Generator,
) -> SpikeTrains:
    """Spikes of one functional group: shared trace x exp(r) per cell (draws 1-3 above)."""
    trace = pink_noise(n_samples, 1, rng)[0]
    scale = np.exp(levy_exponents(n_cells, rng))
    return blocked_spikes(
        n_cells,
        n_samples,
        lambda r0, r1: scale[r0:r1, None] * trace[None, :],
        rng,
        first_node,
        offset_ms,
    )


def exc_raster(groups: pd.DataFrame, params: ParamSet, rng: np.random.Generator) -> SpikeTrains:
    """Excitatory raster of every input cell, sorted by time then node id.

    `groups` is `FunctionalGroups.groups` (columns group, first_node_id, n_cells). Times (ms)
    are integers in [start*1000, stop*1000).
    """
    for col in ("group", "first_node_id", "n_cells"):
        if col not in groups.columns:
            raise ValueError(f"exc_raster: groups table lacks column {col!r}")
    nb = n_bins(params.start, params.stop)
    offset = params.start * 1000.0
    g = groups.sort_values("group", kind="stable")
    parts = [
        group_spikes(int(n), int(first), nb, offset, rng)
        for first, n in zip(g["first_node_id"], g["n_cells"], strict=True)
    ]
    return SpikeTrains.concat(parts).sorted_by_time()
