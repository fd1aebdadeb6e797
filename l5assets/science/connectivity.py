"""Synapse counts of inhibitory input cells and excitatory synapse weights (SPEC 1, 5, 7).

Random draws: `norm_divergence` draws n_cells normals (one per cell, in node order);
`exc_weights` draws n lognormals (one per synapse, in the order given).
"""

from __future__ import annotations

import math

import numpy as np

from l5assets.params import NormDivergence

EXC_WEIGHT_MEAN = 0.45
EXC_WEIGHT_SD = 0.345
EXC_WEIGHT_MAX = 5.0


def norm_divergence(n_cells: int, div: NormDivergence, rng: np.random.Generator) -> np.ndarray:
    """Synapses per inhibitory input cell: int(clip(normal(m, s), min, max)) (int64 array).

    `int` truncates toward zero, as the reference does; values are >= min >= 1.
    """
    if n_cells < 0:
        raise ValueError(f"norm_divergence: n_cells must be >= 0, got {n_cells}")
    draws = rng.normal(div.m, div.s, size=n_cells)
    return np.trunc(np.clip(draws, div.min, div.max)).astype(np.int64)


def lognormal_params(mean: float, sd: float) -> tuple[float, float]:
    """(mu, sigma) of the underlying normal of a lognormal with the given mean and SD."""
    if mean <= 0 or sd < 0:
        raise ValueError(f"lognormal_params: need mean > 0 and sd >= 0, got {mean}, {sd}")
    s2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - 0.5 * s2, math.sqrt(s2)


def exc_weights(
    n: int,
    rng: np.random.Generator,
    mean: float = EXC_WEIGHT_MEAN,
    sd: float = EXC_WEIGHT_SD,
    w_max: float = EXC_WEIGHT_MAX,
) -> np.ndarray:
    """Excitatory synapse weights: lognormal with the given mean and SD, clipped to [0, w_max]."""
    if n < 0:
        raise ValueError(f"exc_weights: n must be >= 0, got {n}")
    mu, sigma = lognormal_params(mean, sd)
    return np.clip(rng.lognormal(mu, sigma, size=n), 0.0, w_max)
