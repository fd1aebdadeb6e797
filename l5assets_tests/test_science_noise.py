"""1/f noise traces: range, burn-in and draw order, spectrum slope, determinism."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter, welch

from l5assets.science.noise import minmax_plus_half, pink_noise

# SPEC 6, hard-coded (not the module's constants): the reference's 1/f filter and its burn-in.
SPEC_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
SPEC_A = [1.0, -2.494956002, 2.017265875, -0.522189400]
SPEC_BURN_IN = 2000


def test_range_and_shape() -> None:
    z = pink_noise(3000, 4, np.random.default_rng(1))
    assert z.shape == (4, 3000)
    np.testing.assert_allclose(z.min(axis=1), 0.5)
    np.testing.assert_allclose(z.max(axis=1), 1.5)


def test_burn_in_and_draw_order() -> None:
    """One (n_traces, n + 2000) normal(1, 0.5) block, filtered, burn-in dropped, min-max+0.5."""
    n = 500
    z = pink_noise(n, 2, np.random.default_rng(7))
    white = np.random.default_rng(7).normal(1.0, 0.5, size=(2, n + SPEC_BURN_IN))
    for i in range(2):
        f = lfilter(SPEC_B, SPEC_A, white[i])[SPEC_BURN_IN:]
        np.testing.assert_allclose(z[i], (f - f.min()) / (f.max() - f.min()) + 0.5)


def test_spectrum_is_one_over_f() -> None:
    """Power falls ~1/f between 2 and 100 Hz (1 kHz sampling); white noise would be flat."""
    z = pink_noise(60_000, 4, np.random.default_rng(3))
    f, pxx = welch(z - z.mean(axis=1, keepdims=True), fs=1000.0, nperseg=4096, axis=1)
    band = (f >= 2) & (f <= 100)
    slope = np.polyfit(np.log(f[band]), np.log(pxx.mean(axis=0)[band]), 1)[0]
    assert -1.4 < slope < -0.6, slope


def test_deterministic_per_seed() -> None:
    a = pink_noise(1000, 2, np.random.default_rng(5))
    b = pink_noise(1000, 2, np.random.default_rng(5))
    c = pink_noise(1000, 2, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_flat_and_empty() -> None:
    assert np.array_equal(minmax_plus_half(np.full(5, 3.0)), np.ones((1, 5)))
    assert np.array_equal(pink_noise(1, 2, np.random.default_rng(0)), np.ones((2, 1)))
    assert pink_noise(0, 3, np.random.default_rng(0)).shape == (3, 0)
