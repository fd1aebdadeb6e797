"""Inhibitory profile (lagged excitation) and PV+/SOM+ rasters, plain and rhythmic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import truncnorm

from l5assets.params import InhRates, ParamSet, Rhythm
from l5assets.science.exc_raster import bernoulli_spikes
from l5assets.science.inh_raster import (
    draw_inh_rates,
    inh_profile,
    inh_raster,
    inh_rasters,
    rhythmic_rates,
)
from l5assets.science.noise import pink_noise
from l5assets.science.spikes import SpikeTrains


def test_profile_bins_shift_and_wrap() -> None:
    exc = SpikeTrains([0, 1, 2, 0, 3], [10.0, 10.4, 10.9, 98.0, 250.0])
    p = inh_profile(exc, 100, 3)  # 250 ms is outside [0, 100) and ignored
    assert p.shape == (100,)
    assert p[13] == 1.5 and p.min() == 0.5  # 3 spikes in bin 10 -> bin 13
    assert p[1] == 0.5 + 1 / 3  # bin 98 wraps round to bin 1
    assert np.count_nonzero(p > 0.5) == 2
    flat = inh_profile(SpikeTrains.empty(), 50, 2)
    assert np.array_equal(flat, np.ones(50))
    with pytest.raises(ValueError):
        inh_profile(exc, 100, 100)


def _driven_exc(n_bins: int, n_cells: int, seed: int) -> SpikeTrains:
    """A toy excitatory population sharing one 1/f trace (strong common fluctuations)."""
    rng = np.random.default_rng(seed)
    trace = pink_noise(n_bins, 1, rng)[0]
    return bernoulli_spikes(np.tile(trace * 20.0, (n_cells, 1)), rng)


@pytest.mark.parametrize("shift", [2, 7])
def test_inhibition_lags_excitation_by_inh_shift(shift: int) -> None:
    exc = _driven_exc(5000, 400, 0)
    prof = inh_profile(exc, 5000, shift)
    inh = inh_raster(400, InhRates(16.9, 14.3, None), prof, 5.0, np.random.default_rng(1))
    e = np.bincount(exc.timestamps.astype(int), minlength=5000).astype(float)
    i = np.bincount(inh.timestamps.astype(int), minlength=5000).astype(float)
    e, i = e - e.mean(), i - i.mean()
    lags = np.arange(-10, 11)
    xc = [np.dot(np.roll(e, k), i) for k in lags]
    assert lags[int(np.argmax(xc))] == shift


def test_truncated_normal_rates() -> None:
    r = draw_inh_rates(100_000, InhRates(3.9, 4.9, None), np.random.default_rng(0))
    assert r.min() >= 0 and r.max() <= 100
    a, b = (0 - 3.9) / 4.9, (100 - 3.9) / 4.9
    assert abs(r.mean() - truncnorm.mean(a, b, loc=3.9, scale=4.9)) < 0.05


def test_population_rates(params_quick: ParamSet) -> None:
    prof = np.ones(1000)
    c = params_quick.counts
    pv = inh_raster(c.pv_total, params_quick.proximal, prof, 1.0, np.random.default_rng(2))
    som = inh_raster(c.som_total, params_quick.distal, prof, 1.0, np.random.default_rng(3))
    assert pv.node_ids.max() < 90 and som.node_ids.max() < 514
    # truncated-normal means 20.2 and 6.4 Hz, a little less after one-spike-per-bin
    assert 15 < len(pv) / 90 < 25 and 5 < len(som) / 514 < 8
    assert np.all(np.diff(pv.timestamps) >= 0) and pv.timestamps.max() <= 999


def test_rhythmic(params_rhythmic: ParamSet) -> None:
    rates = params_rhythmic.proximal
    assert rates.rhythm == Rhythm(16.0, 0.5)
    t = inh_raster(2000, rates, None, 2.0, np.random.default_rng(4))
    counts = np.bincount(t.timestamps.astype(int), minlength=2000).astype(float)
    spec = np.abs(np.fft.rfft(counts - counts.mean()))
    freqs = np.fft.rfftfreq(2000, d=0.001)
    assert freqs[np.argmax(spec)] == 16.0
    # mod 0.5: A = offset, so the rate swings 0 .. 2 * offset
    r = rhythmic_rates(np.array([10.0]), 16.0, 0.5, 1000)[0]
    np.testing.assert_allclose([r.min(), r.max(), r.mean()], [0.0, 20.0, 10.0], atol=0.05)
    deep = rhythmic_rates(np.array([10.0]), 4.0, 0.8, 1000)[0]  # A = 40: clipped at 0
    assert deep.min() == 0.0 and abs(deep.max() - 50.0) < 0.01
    assert (deep == 0).mean() > 0.3


def test_profile_required_and_shape() -> None:
    with pytest.raises(ValueError, match="profile is required"):
        inh_raster(5, InhRates(1, 1, None), None, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        inh_raster(5, InhRates(1, 1, None), np.ones(999), 1.0, np.random.default_rng(0))


def test_deterministic() -> None:
    prof = pink_noise(500, 1, np.random.default_rng(0))[0]
    a = inh_raster(50, InhRates(16.9, 14.3, None), prof, 0.5, np.random.default_rng(5))
    b = inh_raster(50, InhRates(16.9, 14.3, None), prof, 0.5, np.random.default_rng(5))
    assert np.array_equal(a.node_ids, b.node_ids) and np.array_equal(a.timestamps, b.timestamps)


def test_inh_rasters_for_param_sets(params_quick: ParamSet, params_rhythmic: ParamSet) -> None:
    exc = _driven_exc(1000, 200, 3)
    pv, som = inh_rasters(exc, params_quick, np.random.default_rng(1), np.random.default_rng(2))
    assert pv.node_ids.max() < 90 and som.node_ids.max() < 514
    assert np.unique(pv.node_ids).size > 80  # ~20 Hz for 1 s: nearly every PV+ cell fires
    prof = inh_profile(exc, 1000, params_quick.inh_shift)
    same = inh_raster(90, params_quick.proximal, prof, 1.0, np.random.default_rng(1))
    assert np.array_equal(same.timestamps, pv.timestamps)
    rpv, _ = inh_rasters(exc, params_rhythmic, np.random.default_rng(1), np.random.default_rng(2))
    assert not np.array_equal(rpv.timestamps, pv.timestamps)
