"""Subprocess entry point: build the cell in a fresh NEURON and write its segments table.

Run as `python -m l5assets.cell.segments_worker MECH_JSON BIOPHYSICS MORPHOLOGY DL OUT`
(MORPHOLOGY "-" for the cell's default). NEURON can hold one mechanism library per process
and keeps global state, so the Dagster process never builds cells itself.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    mech_json, biophysics, morphology, dl, out = argv if argv is not None else sys.argv[1:]
    from l5assets.cell.mechanisms import CompiledMechanisms, load_mechanisms
    from l5assets.cell.segments import build_segments_table

    load_mechanisms(CompiledMechanisms.from_record(Path(mech_json)))
    table = build_segments_table(biophysics, None if morphology == "-" else morphology, float(dl))
    table.to_parquet(out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
