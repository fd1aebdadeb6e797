"""1/f ("pink") noise rate profiles (SPEC section 6).

White noise ~ normal(1, 0.5) is passed through a 3-pole IIR filter whose response falls as
1/f over the band of interest; the first `BURN_IN` filtered samples are dropped (the filter's
start-up transient), and each trace is min-max normalised to [0, 1] and shifted by +0.5, giving
a multiplicative rate profile in [0.5, 1.5] at one sample per ms.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

# Filter coefficients of the reference (an approximate 1/f filter).
PINK_B = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
PINK_A = np.array([1.0, -2.494956002, 2.017265875, -0.522189400])
BURN_IN = 2000
WHITE_MEAN = 1.0
WHITE_SD = 0.5


def minmax_plus_half(x: np.ndarray) -> np.ndarray:
    """Min-max normalise each row of `x` to [0, 1] and add 0.5.

    A constant row (zero range, e.g. a single sample or no spikes) maps to 1.0, the centre of
    [0.5, 1.5], instead of the NaN a plain division would give.
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    flat = span[:, 0] == 0
    out = (x - lo) / np.where(span == 0, 1.0, span) + 0.5
    out[flat] = 1.0
    return out


def pink_noise(n_samples: int, n_traces: int, rng: np.random.Generator) -> np.ndarray:
    """`n_traces` independent 1/f noise traces of `n_samples` samples, each in [0.5, 1.5].

    Draw order: one block of normal(1, 0.5) of shape (n_traces, n_samples + BURN_IN), row-major
    (trace 0's burn-in and samples first).
    """
    if n_samples < 0 or n_traces < 0:
        raise ValueError(
            f"pink_noise: n_samples and n_traces must be >= 0, got {n_samples}, {n_traces}"
        )
    if n_samples == 0 or n_traces == 0:
        return np.zeros((n_traces, n_samples))
    white = rng.normal(WHITE_MEAN, WHITE_SD, size=(n_traces, n_samples + BURN_IN))
    filtered = lfilter(PINK_B, PINK_A, white, axis=1)[:, BURN_IN:]
    return minmax_plus_half(filtered)
