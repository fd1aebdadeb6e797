"""The run's figure: drawn from arrays, deterministic bytes, small inline copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l5assets.science.spikes import SpikeTrains
from l5assets.simulation import figures as F


def _trains(pop_n: dict[str, int], tstop: float, seed: int = 1) -> dict[str, SpikeTrains]:
    rng = np.random.default_rng(seed)
    out = {}
    for pop, n in pop_n.items():
        ts = np.sort(rng.uniform(0, tstop, n * 10))
        ids = rng.integers(0, n, ts.size)
        out[pop] = SpikeTrains(node_ids=ids, timestamps=ts)
    return out


def test_summary_figure_renders_deterministic_small_png(tmp_path: Path) -> None:
    tstop = 500.0
    trains = _trains({"exc_stim": 300, "prox_inh_stim": 20, "dist_inh_stim": 20}, tstop)
    t = np.arange(0, tstop, 0.1)
    soma = (t, -65 + 5 * np.sin(t / 10))
    dend = (t, -55 + 10 * np.sin(t / 30))
    summary = {
        "param_set": "T",
        "seed": 1,
        "spike_count": 3,
        "firing_rate_hz": 6.0,
        "isi_cv": 0.5,
        "input_spikes": {"exc_stim": {"mean_rate_per_active_node_hz": 20.0}},
        "dend_ca_spikes": {"count": 1, "times_ms": [250.0], "site": {"distance_um": 400.0}},
    }
    pngs = []
    for k in range(2):
        fig = F.summary_figure(summary, trains, np.array([10.0, 200.0, 400.0]), tstop, soma, dend)
        pngs.append((F.render(fig, tmp_path / f"f{k}.png"), (tmp_path / f"f{k}.png").read_bytes()))
    (small_a, full_a), (small_b, full_b) = pngs
    assert small_a == small_b and full_a == full_b  # same inputs, same bytes
    assert small_a[:8] == b"\x89PNG\r\n\x1a\n" and len(small_a) <= F.INLINE_MAX_BYTES
    assert len(full_a) > len(small_a)
    # without traces: two panels only, still renders
    fig = F.summary_figure(summary, trains, np.array([]), tstop)
    assert len(fig.axes) == 2
    F.render(fig, tmp_path / "g.png")


def test_histogram_counts_equal_numpys_histogram() -> None:
    """The rates panel's counts without numpy's sort: equal to np.histogram, the last bin
    with its right edge, values outside the edges dropped."""
    rng = np.random.default_rng(3)
    for edges in (np.arange(0.0, 30020.0, 20.0), np.array([0.0, 1.0, 5.0, 5.5])):
        top = float(edges[-1])
        values = np.concatenate(
            [rng.uniform(-3.0, top + 3.0, 50_000), np.round(rng.uniform(0, top, 5000)), edges]
        )
        np.testing.assert_array_equal(
            F.histogram_counts(values, edges), np.histogram(values, bins=edges)[0]
        )
