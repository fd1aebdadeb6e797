"""The reference study on the reference cell with the user's own Hay morphology (`cell1.asc`).

Runs only where a copy of Hay's cell1.asc is at hand: `L5ASSETS_REFERENCE_MORPHOLOGY`, or the
verification copy `../shared/reference/cell1.asc` beside the checkout; skips otherwise (the
file is not redistributable and never shipped). A short `L5_quick` (0.3 s) with the cell swapped
to `L5PC_reference`, through `l5assets run` on a throwaway instance: the documented recipe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from l5assets import cli, paths


def _cell1() -> Path | None:
    env = os.environ.get("L5ASSETS_REFERENCE_MORPHOLOGY")
    cands = [Path(env)] if env else []
    cands.append(paths.PROJECT_ROOT.parent / "shared" / "reference" / "cell1.asc")
    return next((p for p in cands if p.is_file()), None)


CELL1 = _cell1()


@pytest.mark.skipif(
    CELL1 is None, reason="no copy of Hay's cell1.asc (set L5ASSETS_REFERENCE_MORPHOLOGY)"
)
def test_reference_study_on_reference_cell(tmp_path: Path, monkeypatch, capsys) -> None:
    raw = json.loads((paths.PROJECT_ROOT / "data" / "params" / "L5_quick.json").read_text())
    raw["description"] = "L5_quick on the reference cell (test)"
    raw["cell"] = {"prefix": "L5", "biophysics": "L5PC_reference", "morphology": str(CELL1)}
    raw["time"]["stop"] = 0.3
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "T_refcell.json").write_text(json.dumps(raw, indent=1))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    # `run --params-dir/--storage-root` set these for the process: keep them to this test
    monkeypatch.setenv("L5ASSETS_PARAMS_DIR", str(params_dir))
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(tmp_path / "out"))
    rc = cli.main(
        [
            "run",
            "--param-set",
            "T_refcell",
            "--seed",
            "123",
            "--json",
            "--params-dir",
            str(params_dir),
            "--storage-root",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == cli.EXIT_OK, out
    summary = json.loads(out)
    seg = next(
        p
        for k, p in summary["assets"]["segments_table"][0]["paths"].items()
        if str(p).endswith(".parquet")
    )
    # Hay's cell1 at dL 5 um: the reference segments table's 2,526 rows
    assert len(pd.read_parquet(seg)) == 2526
    md = summary["assets"]["simulation_summary"][0]["metadata"]
    assert md["n_cell_spikes"] >= 0 and md["firing_rate_hz"] >= 0
    # the hot-zone recording sits on the trunk at Hay's 620 um (absolute sites for this cell)
    assert abs(md["dend_ca_site_um"] - 620.0) < 5.0
