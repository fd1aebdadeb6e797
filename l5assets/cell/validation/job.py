"""One validation protocol as a batch job: `python -m l5assets.cell.validation.job ...`.

    python -m l5assets.cell.validation.job --cell C --protocol P --output-dir DIR
        [--morphology PATH] [--mod-dir DIR] [--cache-root DIR]

Simulates the protocol exactly as the validation asset does in process (`run_protocols`) and
saves its traces into DIR (`ProtocolTraces.save`), for the asset to evaluate: what a SLURM job
of a `validation_*` asset runs (under `l5assets.simulation.pipes_report --module`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from l5assets.cell.validation.runner import run_protocols
from l5assets.simulation.progress import say_stage


def main(argv: Sequence[str] | None = None) -> int:
    """Run one protocol and save its traces; exit code 0 on success."""
    ap = argparse.ArgumentParser(prog="python -m l5assets.cell.validation.job")
    ap.add_argument("--cell", required=True)
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--output-dir", type=Path, required=True)
    ap.add_argument("--morphology", default=None)
    ap.add_argument("--mod-dir", type=Path, default=None)
    ap.add_argument("--cache-root", type=Path, default=None)
    args = ap.parse_args(argv)
    say_stage(f"validation {args.protocol} of {args.cell}")
    traces = run_protocols(
        args.cell,
        args.morphology,
        [args.protocol],
        mod_dir=args.mod_dir,
        cache_root=args.cache_root,
    )[args.protocol]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    traces.save(args.output_dir)
    say_stage(f"validation {args.protocol}: traces saved ({traces.runtime_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
