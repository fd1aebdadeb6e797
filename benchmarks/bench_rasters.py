"""Input rasters: one random draw per 1-ms bin vs thinning, on the same rates, in one run.

    python benchmarks/bench_rasters.py [--param-set L5_reference] [--seed 123] [--repeat 3]

Builds the excitatory rates of the param set's real functional groups (noise trace x
exp(Levy) per cell, as `exc_raster` does; segments from the reference cell's table are not
needed: group sizes come from the param set) and draws the spikes twice: `bernoulli_spikes`
(one exponential per bin, what the rasters did before) and `thinned_spikes` (what they do
now). Prints the best wall time of each over --repeat runs, the ratio, the random numbers
drawn and the spike counts (equal in law: they differ by sampling noise only).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from l5assets.params import load_param_set
from l5assets.rng import stage_rng
from l5assets.science.exc_raster import (
    bernoulli_spikes,
    bin_probability,
    candidate_bins,
    levy_exponents,
    n_bins,
    thinned_spikes,
)
from l5assets.science.functional_groups import group_sizes
from l5assets.science.noise import pink_noise


def _rates(param_set: str, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    p = load_param_set(param_set)
    nb = n_bins(p.start, p.stop)
    rng = stage_rng(seed, "exc_raster")
    sizes = np.concatenate(
        [
            group_sizes(p.counts.exc_basal, p.cells_per_group),
            group_sizes(p.counts.exc_apic, p.cells_per_group),
        ]
    )
    traces = [pink_noise(nb, 1, rng)[0] for _ in sizes]
    scales = [np.exp(levy_exponents(int(n), rng)) for n in sizes]
    return traces, scales, nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--param-set", default="L5_reference")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    traces, scales, nb = _rates(args.param_set, args.seed)
    n_cells = int(sum(len(s) for s in scales))

    def per_bin() -> int:
        rng = np.random.default_rng(args.seed)
        n = 0
        for tr, sc in zip(traces, scales, strict=True):
            rows = sc[:, None] * tr[None, :]
            n += len(bernoulli_spikes(rows, rng))
        return n

    def thinned() -> int:
        rng = np.random.default_rng(args.seed)
        n = 0
        for tr, sc in zip(traces, scales, strict=True):
            n += len(
                thinned_spikes(sc * tr.max(), lambda r, b, sc=sc, tr=tr: sc[r] * tr[b], nb, rng)
            )
        return n

    results = {}
    for name, fn in (("one draw per bin", per_bin), ("thinning", thinned)):
        best, count = float("inf"), 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            count = fn()
            best = min(best, time.perf_counter() - t0)
        results[name] = (best, count)
    cand = sum(
        candidate_bins(bin_probability(sc * tr.max()), nb, np.random.default_rng(0))[0].size
        for tr, sc in zip(traces, scales, strict=True)
    )
    print(f"{args.param_set}: {n_cells} excitatory cells x {nb} bins = {n_cells * nb:,} bins")
    for name, (best, count) in results.items():
        print(f"  {name:18s} {best:7.3f} s (best of {args.repeat})   {count:,} spikes")
    print(
        f"  random numbers: {n_cells * nb:,} (one per bin) vs ~{2 * cand:,} (thinning: "
        f"{cand:,} candidates, a gap and a uniform each)"
    )
    ratio = results["one draw per bin"][0] / results["thinning"][0]
    print(f"  thinning is {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
