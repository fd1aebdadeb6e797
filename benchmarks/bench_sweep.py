"""Sweep throughput: simulated seconds per wall second for N seeds at --jobs 1 and --jobs J.

    python benchmarks/bench_sweep.py [--param-set L5_quick] [--seeds 4] [--jobs <cores>]

Runs `l5assets run --param-set P --seed 1 ... --seed N` twice, each into a fresh storage root
and Dagster home (mechanism and segments caches warm, so both runs do the same work): once
with --jobs 1, once with --jobs J. Prints wall time, simulated seconds per wall second and the
throughput ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(param_set: str, seeds: int, jobs: int, tmp: Path) -> float:
    """Wall seconds of one `l5assets run` over seeds 1..N with --jobs."""
    env = dict(os.environ, DAGSTER_HOME=str(tmp / f"home-{jobs}"))
    env.setdefault("L5ASSETS_CACHE_DIR", str(ROOT / "data" / "cache"))
    cmd = [sys.executable, "-m", "l5assets.cli", "run", "--param-set", param_set]
    cmd += [a for s in range(1, seeds + 1) for a in ("--seed", str(s))]
    cmd += ["--jobs", str(jobs), "--storage-root", str(tmp / f"out-{jobs}")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"l5assets run --jobs {jobs} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    from l5assets.params import load_param_set

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--param-set", default="L5_quick")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    p = load_param_set(args.param_set)
    simulated = args.seeds * (p.stop - p.start)
    with tempfile.TemporaryDirectory() as tmp:
        walls = {j: sweep(args.param_set, args.seeds, j, Path(tmp)) for j in (1, args.jobs)}
    print(f"{args.param_set}: {args.seeds} seeds, {simulated:.1f} simulated s in all")
    for j, w in walls.items():
        print(f"  --jobs {j}: {w:6.1f} s wall, {simulated / w:.3f} simulated s per wall s")
    print(f"  --jobs {args.jobs} / --jobs 1 throughput: {walls[1] / walls[args.jobs]:.2f}x")


if __name__ == "__main__":
    main()
