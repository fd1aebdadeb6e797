"""Excitatory raster: rates, bins, per-group shared noise, start offset, determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import levy_stable

from l5assets.params import ParamSet
from l5assets.rng import stage_rng
from l5assets.science.exc_raster import (
    bernoulli_spikes,
    bin_probability,
    exc_raster,
    group_spikes,
    levy_exponents,
    spikes_from_bins,
    thinned_spikes,
)
from l5assets.science.functional_groups import build_functional_groups
from l5assets.science.noise import pink_noise
from l5assets.science.spikes import SpikeTrains


@pytest.fixture(scope="module")
def groups(toy_segments: pd.DataFrame, params_quick: ParamSet) -> pd.DataFrame:
    return build_functional_groups(
        toy_segments, params_quick, stage_rng(123, "functional_groups")
    ).groups


@pytest.fixture(scope="module")
def quick(groups: pd.DataFrame, params_quick: ParamSet) -> SpikeTrains:
    return exc_raster(groups, params_quick, stage_rng(123, "exc_raster"))


def test_rate_and_bins(quick: SpikeTrains) -> None:
    rate = len(quick) / 5222 / 1.0
    assert 9.0 <= rate <= 14.0, rate  # reference ~11.4 Hz
    ts = quick.timestamps
    assert np.array_equal(ts, np.round(ts)) and ts.min() >= 0 and ts.max() <= 999
    assert (ts == 999).any()  # the last ms is covered (the reference leaves it silent)
    assert quick.node_ids.min() >= 0 and quick.node_ids.max() < 5222
    pairs = quick.node_ids * 1000 + ts.astype(np.int64)
    assert np.unique(pairs).size == len(quick)  # at most one spike per cell per bin
    order = np.lexsort((quick.node_ids, ts))
    assert np.array_equal(order, np.arange(len(quick)))  # sorted by time, then node


def test_group_shares_its_noise_trace() -> None:
    """A group's population rate follows its own 1/f trace (the group's first draws)."""
    n = 3000
    trace = pink_noise(n, 1, np.random.default_rng(0))[0]
    other = pink_noise(n, 1, np.random.default_rng(100))[0]
    s = group_spikes(300, 0, n, 0.0, np.random.default_rng(0))
    k = np.ones(50) / 50
    pop = np.convolve(np.bincount(s.timestamps.astype(int), minlength=n), k, "valid")
    own = np.corrcoef(pop, np.convolve(trace, k, "valid"))[0, 1]
    foreign = np.corrcoef(pop, np.convolve(other, k, "valid"))[0, 1]
    assert own > 0.5 and own > foreign + 0.3, (own, foreign)


def test_raster_is_groups_in_order(quick: SpikeTrains, groups: pd.DataFrame) -> None:
    """Draw order: group 0's spikes come first from the stage stream, then group 1's."""
    rng = stage_rng(123, "exc_raster")
    for _, g in groups.iloc[:2].iterrows():
        part = group_spikes(int(g.n_cells), int(g.first_node_id), 1000, 0.0, rng)
        m = (quick.node_ids >= g.first_node_id) & (quick.node_ids < g.first_node_id + g.n_cells)
        mine = SpikeTrains(quick.node_ids[m], quick.timestamps[m])
        ref = part.sorted_by_time()
        assert np.array_equal(mine.node_ids, ref.node_ids)
        assert np.array_equal(mine.timestamps, ref.timestamps)


@pytest.mark.parametrize("in_node_order", [True, False])
def test_spikes_from_bins_is_the_time_sorted_train(in_node_order: bool) -> None:
    """The raster's compact sort: the train `sorted_by_time` gives, from int32 (node, bin)
    arrays in node order (as drawn) or in any order; bins past 65535 too."""
    rng = np.random.default_rng(4)
    nodes = np.sort(rng.integers(0, 300, 20_000)).astype(np.int32)
    bins = rng.integers(0, 70_000, nodes.size).astype(np.int32)
    if not in_node_order:
        perm = rng.permutation(nodes.size)
        nodes, bins = nodes[perm], bins[perm]
    got = spikes_from_bins(nodes, bins, 250.0)
    ref = SpikeTrains(nodes, bins.astype(np.float64) + 250.0).sorted_by_time()
    assert got.node_ids.dtype == np.int64 and got.timestamps.dtype == np.float64
    assert np.array_equal(got.node_ids, ref.node_ids)
    assert np.array_equal(got.timestamps, ref.timestamps)
    small = spikes_from_bins(nodes, bins % 1000, 0.0)  # the uint16 radix path
    ref = SpikeTrains(nodes, (bins % 1000).astype(np.float64)).sorted_by_time()
    assert np.array_equal(small.node_ids, ref.node_ids)
    assert np.array_equal(small.timestamps, ref.timestamps)


def test_deterministic_and_seeded(
    quick: SpikeTrains, groups: pd.DataFrame, params_quick: ParamSet
) -> None:
    again = exc_raster(groups, params_quick, stage_rng(123, "exc_raster"))
    assert np.array_equal(again.node_ids, quick.node_ids)
    assert np.array_equal(again.timestamps, quick.timestamps)
    other = exc_raster(groups.iloc[:3], params_quick, stage_rng(9, "exc_raster"))
    assert len(other) != len(quick)


def test_start_offset(groups: pd.DataFrame, params_quick: ParamSet) -> None:
    p = dataclasses.replace(params_quick, start=0.5, stop=0.8)
    t = exc_raster(groups.iloc[:4], p, stage_rng(1, "exc_raster"))
    assert t.timestamps.min() >= 500 and t.timestamps.max() <= 799
    assert (t.timestamps == 799).any() or len(t) < 200


def test_bernoulli_is_poisson_clipped_to_one() -> None:
    """P(spike in bin) = 1 - exp(-rate/1000): 0.1813 at 200 Hz (not 0.2)."""
    t = bernoulli_spikes(np.full((20, 50_000), 200.0), np.random.default_rng(0))
    frac = len(t) / 1_000_000
    assert abs(frac - (1 - np.exp(-0.2))) < 0.0015, frac
    every = bernoulli_spikes(np.full((2, 100), 1e6), np.random.default_rng(0), 5, 10.0)
    assert len(every) == 200 and every.node_ids.min() == 5 and every.timestamps.max() == 109
    assert len(bernoulli_spikes(np.full((3, 100), -5.0), np.random.default_rng(0))) == 0


def test_levy_exponents_quantiles() -> None:
    r = levy_exponents(100_000, np.random.default_rng(1))
    q = levy_stable.ppf([0.1, 0.5, 0.9], 1.37, -1.0, loc=1.84, scale=0.44)
    np.testing.assert_allclose(np.quantile(r, [0.1, 0.5, 0.9]), q, atol=0.03)


def test_thinning_has_the_law_of_one_bernoulli_draw_per_bin() -> None:
    """Thinned spikes: P(spike in bin) = 1 - exp(-rate/1000) bin by bin, for rates that vary
    over time and cells, the same as the per-bin draw (`bernoulli_spikes`)."""
    n_cells, n = 4000, 200
    wave = 60.0 + 50.0 * np.sin(np.arange(n) / 7.0)  # 10..110 Hz
    scale = np.linspace(0.5, 2.0, n_cells)
    rates = scale[:, None] * wave[None, :]
    t = thinned_spikes(
        scale * wave.max(), lambda r, b: scale[r] * wave[b], n, np.random.default_rng(3)
    )
    ref = bernoulli_spikes(rates, np.random.default_rng(4))
    p = bin_probability(rates).sum(axis=0)  # expected spikes per bin
    for s in (t, ref):
        per_bin = np.bincount(s.timestamps.astype(int), minlength=n)
        z = (per_bin - p) / np.sqrt(p)
        assert np.abs(z).max() < 5.0 and abs(z.mean()) < 0.3, (z.max(), z.mean())
    assert abs(len(t) - len(ref)) < 5 * np.sqrt(p.sum())
    # and cell by cell (rows scale 0.5 .. 2): counts of 40 blocks of 100 cells
    per_cell = bin_probability(rates).sum(axis=1).reshape(40, 100).sum(axis=1)
    got = np.bincount(t.node_ids, minlength=n_cells).reshape(40, 100).sum(axis=1)
    assert np.abs((got - per_cell) / np.sqrt(per_cell)).max() < 5.0
    pairs = t.node_ids * n + t.timestamps.astype(np.int64)
    assert np.unique(pairs).size == len(t) and np.all(np.diff(pairs) > 0)  # (node, time) order


def test_candidate_rounds_and_extreme_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows whose first gaps end before the last bin draw more rounds (forced here with one gap
    per round): counts stay Binomial(n, p); p = 1 gives every bin, p ~ 0 none, and a tiny p
    does not overflow."""
    from l5assets.science import exc_raster as er

    monkeypatch.setattr(er, "_gap_budget", lambda p, n: np.ones(p.size, dtype=np.int64))
    p = np.array([0.3, 1.0, 0.0, 1e-300, 0.05])
    rows, bins = er.candidate_bins(np.repeat(p, 400), 500, np.random.default_rng(5))
    assert bins.min() >= 0 and bins.max() < 500
    counts = np.bincount(rows, minlength=2000).reshape(5, 400)
    assert (counts[1] == 500).all() and (counts[2] == 0).all() and (counts[3] == 0).all()
    for i in (0, 4):
        mean, sd = 500 * p[i], np.sqrt(500 * p[i] * (1 - p[i]) / 400)
        assert abs(counts[i].mean() - mean) < 5 * sd, (i, counts[i].mean())
    with pytest.raises(ValueError, match="exceeds its row's bound"):
        thinned_spikes(
            np.array([1.0]), lambda r, b: np.full(r.size, 500.0), 1000, np.random.default_rng(0)
        )
