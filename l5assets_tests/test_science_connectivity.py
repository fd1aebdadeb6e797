"""Inhibitory divergence draws and excitatory weights."""

from __future__ import annotations

import numpy as np
import pytest

from l5assets.params import NormDivergence
from l5assets.science.connectivity import exc_weights, lognormal_params, norm_divergence


def test_norm_divergence_is_truncated_clipped_normal() -> None:
    div = NormDivergence(m=2.8, s=1.9, min=1, max=5)
    n = norm_divergence(50_000, div, np.random.default_rng(2))
    raw = np.random.default_rng(2).normal(2.8, 1.9, size=50_000)
    expected = np.array([int(min(max(v, 1), 5)) for v in raw[:2000]])
    assert n.dtype == np.int64
    assert np.array_equal(n[:2000], expected)
    assert n.min() == 1 and n.max() == 5
    # int() truncates: 5 only when the draw is >= 5 (P ~ 0.123), never by rounding up 4.5
    assert abs((n == 5).mean() - 0.1230) < 0.01


def test_apical_som_divergence_range() -> None:
    n = norm_divergence(136, NormDivergence(m=12, s=3, min=6, max=18), np.random.default_rng(0))
    assert n.shape == (136,) and n.min() >= 6 and n.max() <= 18
    assert 10.5 < n.mean() < 12.5


def test_exc_weights_mean_sd_and_clip() -> None:
    w = exc_weights(400_000, np.random.default_rng(4))
    assert w.min() >= 0 and w.max() <= 5
    assert abs(w.mean() - 0.45) < 0.005
    assert abs(w.std() - 0.345) < 0.01
    mu, sigma = lognormal_params(0.45, 0.345)
    assert abs(np.exp(mu + sigma**2 / 2) - 0.45) < 1e-12
    heavy = exc_weights(100_000, np.random.default_rng(4), mean=2.0, sd=3.0)
    assert heavy.max() == 5.0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        exc_weights(-1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        lognormal_params(0.0, 1.0)
