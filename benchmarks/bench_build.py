"""Wall time and peak memory of each build stage (asset) for one param set and seed.

    python benchmarks/bench_build.py [--param-set L5_reference] [--seed 123] [--simulate]
        [--storage-root DIR] [--json]

Cold (default) and warm rows, in one run:

Each stage runs in a fresh Python process (the real asset function, invoked directly with
`dg.build_asset_context`), so its peak resident memory is its own: "peak RSS" is the larger of
that process's and of its own subprocesses (nrnivmodl, the NEURON segments worker, the
simulation runner). Wall time covers the asset call only (not interpreter start or imports).
Stages run in graph order into a temporary storage root (or --storage-root); the simulation
stages are skipped unless --simulate (L5_reference simulates 30 s: ~15 min on 2 cores).

Warm: the per-seed stages in one process, first for another seed (seed - 1: the imports are
then warm), then timed for the seed and the next ones (WARM_REPEATS seeds in all), as a
`run --jobs` worker meets its later seeds (the shared stages, made by the cold rows, are only
read); per stage the median, and the median of the per-seed sums (the machines are noisy).
Its peak RSS is that process's, over every seed. With --storage-root the other seeds' outputs
stay there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD_STAGES = (
    "compiled_mechanisms",
    "segments_table",
    "functional_groups",
    "exc_raster",
    "inh_rasters",
    "network",
    "simulation_config",
)
SIM_STAGES = ("simulation_outputs", "simulation_summary")


def _maxrss_mb(who: int) -> float:
    import resource

    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports kB


def run_one(stage: str, param_set: str, seed: int) -> dict:
    """Materialize one stage in this process; returns its wall time and peak memory."""
    import resource
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    from l5assets.definitions import defs
    from l5assets.defs.partitions import register_partitions, run_partition_key

    assets_def = defs.resolve_assets_def(stage)  # resources of the code location bound
    shared = stage in ("compiled_mechanisms", "segments_table")
    key = param_set if shared else str(run_partition_key(param_set, seed))
    rss_before = _maxrss_mb(resource.RUSAGE_SELF)
    with dg.instance_for_test() as instance:
        register_partitions(instance, [param_set], [seed])
        ctx = dg.build_asset_context(partition_key=key, instance=instance)
        t0 = time.perf_counter()
        result = assets_def(ctx)
        wall = time.perf_counter() - t0
    md = {k: getattr(v, "value", v) for k, v in (result.metadata or {}).items()}
    counts = {k: v for k, v in md.items() if k.startswith("n_") and isinstance(v, int)}
    return {
        "stage": stage,
        "partition_key": key,
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(
            max(_maxrss_mb(resource.RUSAGE_SELF), _maxrss_mb(resource.RUSAGE_CHILDREN)), 1
        ),
        "baseline_rss_mb": round(rss_before, 1),
        "subprocess_peak_rss_mb": round(_maxrss_mb(resource.RUSAGE_CHILDREN), 1),
        "content_hash": md.get("content_hash"),
        "counts": counts,
    }


def _child_json(
    mode: list[str], param_set: str, seed: int, env: dict[str, str], what: str
) -> dict | None:
    """This script in a child `mode`; the JSON of its last line, or None (told) if it failed."""
    cmd = [sys.executable, __file__, *mode, "--param-set", param_set, "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        print(f"{what} failed", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


PER_SEED_STAGES = tuple(
    s for s in BUILD_STAGES if s not in ("compiled_mechanisms", "segments_table")
)


WARM_REPEATS = 5  # timed seeds in the warm process (the machines are noisy: medians)


def run_warm(param_set: str, seed: int, repeats: int = WARM_REPEATS) -> dict:
    """The per-seed stages for another seed, then timed for `seed` and `repeats - 1` more
    seeds after it, in one process (the shared stages are already made by the cold rows, as a
    worker finds them); per stage the median over the timed seeds, and the median of the
    seeds' sums."""
    import resource
    import statistics

    from l5assets.params import MAX_SEED

    other = seed - 1 if seed > 0 else MAX_SEED
    for stage in PER_SEED_STAGES:
        run_one(stage, param_set, other)
    timed = [seed + k if seed + k <= MAX_SEED else seed - k - 1 for k in range(repeats)]
    walls = {s: [] for s in PER_SEED_STAGES}
    for sd in timed:
        for stage in PER_SEED_STAGES:
            walls[stage].append(run_one(stage, param_set, sd)["wall_s"])
    sums = [sum(walls[s][k] for s in PER_SEED_STAGES) for k in range(len(timed))]
    return {
        "warm_up_seed": other,
        "timed_seeds": timed,
        "stages": {s: round(statistics.median(w), 3) for s, w in walls.items()},
        "per_seed_sums_s": [round(x, 3) for x in sums],
        "per_seed_median_s": round(statistics.median(sums), 3),
        "peak_rss_mb": round(_maxrss_mb(resource.RUSAGE_SELF), 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--param-set", default="L5_reference")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--simulate", action="store_true", help="also run the simulation stages")
    ap.add_argument("--storage-root", default=None, help="default: a temporary folder")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode: one stage
    ap.add_argument("--warm-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(args.one, args.param_set, args.seed)))
        return 0
    if args.warm_child:
        print(json.dumps(run_warm(args.param_set, args.seed)))
        return 0

    from l5assets.params import load_param_set

    params = load_param_set(args.param_set)  # fail early on bad params
    stages = BUILD_STAGES + (SIM_STAGES if args.simulate else ())
    with tempfile.TemporaryDirectory(prefix="l5bench-") as tmp:
        env = dict(os.environ)
        env["L5ASSETS_STORAGE_ROOT"] = str(Path(args.storage_root or tmp).resolve())
        rows = []
        for stage in stages:
            t0 = time.perf_counter()
            row = _child_json(["--one", stage], params.name, args.seed, env, f"stage {stage}")
            if row is None:
                return 1
            row["process_wall_s"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
            if not args.json:
                print(
                    f"{stage:22s} {row['wall_s']:9.2f} s   peak RSS {row['peak_rss_mb']:8.1f} MB"
                    f" (imports alone {row['baseline_rss_mb']:.0f} MB)",
                    flush=True,
                )
        warm = _child_json(["--warm-child"], params.name, args.seed, env, "warm stages")
        if warm is None:
            return 1
    total = sum(r["wall_s"] for r in rows)
    cold_seed = sum(r["wall_s"] for r in rows if r["stage"] in PER_SEED_STAGES)
    warm_seed = warm["per_seed_median_s"]
    if not args.json:
        print()
        n = len(warm["timed_seeds"])
        print(f"warm process (as a --jobs worker; median of {n} seeds after a first one):")
        for stage, wall in warm["stages"].items():
            print(f"{stage:22s} {wall:9.2f} s")
        print(
            f"{'per-seed stages':22s} {warm_seed:9.2f} s   (per seed: "
            + ", ".join(f"{x:.2f}" for x in warm["per_seed_sums_s"])
            + f"; cold, one process each: {cold_seed:.2f} s; warm/cold {warm_seed / cold_seed:.2f})"
        )
        print(f"{'warm process peak RSS':22s} {warm['peak_rss_mb']:9.1f} MB")
    if args.json:
        print(
            json.dumps(
                {
                    "param_set": params.name,
                    "seed": args.seed,
                    "stages": rows,
                    "total_wall_s": round(total, 3),
                    "per_seed_cold_s": round(cold_seed, 3),
                    "warm": warm,
                    "per_seed_warm_s": round(warm_seed, 3),
                },
                indent=2,
            )
        )
    else:
        print(
            f"{'total':22s} {total:9.2f} s   max peak RSS "
            f"{max(r['peak_rss_mb'] for r in rows):.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
