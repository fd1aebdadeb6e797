"""Sweeps (issue 9 item 4): the grid, its names and params files, and `l5assets sweep` end to
end (a 3-point grid x 2 seeds: real runs, then each param set's cross-seed summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_compiled_mechanisms, small_params

from l5assets import cli, sweep
from l5assets.params import ParamsError, load_param_set


def test_seeds_and_sets_parse() -> None:
    assert sweep.parse_seeds("1-3,7,2") == [1, 2, 3, 7]
    assert sweep.parse_set("inh_frs.proximal.m=10,16.9,25") == (
        "inh_frs.proximal.m",
        [10, 16.9, 25],
    )
    assert sweep.parse_set("cell.biophysics=L5PC_bbp")[1] == ["L5PC_bbp"]
    for bad, msg in (("5-1", "backwards"), ("x", "seed"), ("-3", "seed")):
        with pytest.raises(ParamsError, match=msg):
            sweep.parse_seeds(bad)
    with pytest.raises(ParamsError, match="FIELD=V1"):
        sweep.parse_set("dL")
    with pytest.raises(ParamsError, match="values repeat"):
        sweep.parse_set("dL=5,5")
    with pytest.raises(ParamsError, match="values repeat"):
        sweep.parse_set("dL=1,1.0")  # the same number
    with pytest.raises(ParamsError, match="dL: Infinity is not a finite number"):
        sweep.parse_set("dL=5,Infinity")
    with pytest.raises(ParamsError, match="at most 200"):
        sweep.point_name("B" * 190, [("time.stop", 0.5)])


def test_grid_names_and_validation() -> None:
    raw = small_params()
    pts = sweep.grid("B", raw, ["inh_frs.proximal.m=10,16.9", "dL=5,10"])
    assert [p.name for p in pts] == [
        "B__inh_frs_proximal_m-10__dL-5",
        "B__inh_frs_proximal_m-10__dL-10",
        "B__inh_frs_proximal_m-16p9__dL-5",
        "B__inh_frs_proximal_m-16p9__dL-10",
    ]
    assert pts[2].raw["inh_frs"]["proximal"]["m"] == 16.9 and pts[2].raw["dL"] == 5
    assert raw["dL"] == 5 and "sweep of B" in pts[0].raw["description"]
    assert sweep.point_name("B", [("x.y", -0.5)]) == "B__x_y-m0p5"
    # a field the base lacks, a section, an invalid value: named, before anything is written
    with pytest.raises(ParamsError, match="has no field 'q' at inh_frs.proximal"):
        sweep.grid("B", raw, ["inh_frs.proximal.q=1"])
    with pytest.raises(ParamsError, match="a section"):
        sweep.grid("B", raw, ["inh_frs=1"])
    with pytest.raises(ParamsError, match=r"sweep point B__dL-m1: .*dL"):
        sweep.grid("B", raw, ["dL=5,-1"])
    with pytest.raises(ParamsError, match="cannot be part of a param set name"):
        sweep.grid("B", raw, ["cell.biophysics=a b"])


def test_write_grid_keeps_identical_and_refuses_different(tmp_path: Path) -> None:
    pts = sweep.grid("B", small_params(), ["dL=5,10"])
    files = sweep.write_grid(pts, tmp_path)
    before = [f.read_bytes() for f in files]
    assert sweep.write_grid(pts, tmp_path) == files  # the same grid again: kept
    assert [f.read_bytes() for f in files] == before
    other = sweep.grid("B", small_params(stop=0.2), ["dL=5,10"])
    with pytest.raises(ParamsError, match="exists with other params"):
        sweep.write_grid(other, tmp_path)
    assert [f.read_bytes() for f in files] == before


@pytest.fixture
def sweep_ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "T_sw.json").write_text(json.dumps(small_params(stop=0.1)))
    cache = tmp_path / "cache"
    copy_compiled_mechanisms(cache)
    for k, v in {
        "L5ASSETS_PARAMS_DIR": tmp_path / "params",
        "L5ASSETS_STORAGE_ROOT": tmp_path / "out",
        "L5ASSETS_CACHE_DIR": cache,
        "DAGSTER_HOME": tmp_path / "home",
    }.items():
        monkeypatch.setenv(k, str(v))
    return tmp_path


def test_bad_sweep_is_one_line_and_writes_nothing(sweep_ws: Path, capsys) -> None:
    code = cli.main(["sweep", "--base", "T_sw", "--set", "dL=5,0", "--seeds", "1-2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_USAGE and len(err) == 1 and "dL" in err[0], err
    assert sorted(p.name for p in (sweep_ws / "params").iterdir()) == ["T_sw.json"]
    assert not (sweep_ws / "out").exists() and not (sweep_ws / "home").exists()


def test_sweep_three_points_two_seeds_end_to_end(sweep_ws: Path, capsys) -> None:
    code = cli.main(
        [
            "sweep",
            "--base",
            "T_sw",
            "--set",
            "inh_frs.proximal.m=5,16.9,40",
            "--seeds",
            "1-2",
            "--jobs",
            "2",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK and out["ok"], out
    names = [
        "T_sw__inh_frs_proximal_m-5",
        "T_sw__inh_frs_proximal_m-16p9",
        "T_sw__inh_frs_proximal_m-40",
    ]
    assert out["param_sets"] == names and out["seeds"] == [1, 2]
    pv_rates = []
    for name in names:
        assert load_param_set(name).proximal.m in (5, 16.9, 40)  # a valid params file
        s = out["cross_seed_summary"][name]
        assert s["n_seeds"] == 2 and s["seeds"] == [1, 2]
        table = pd.read_csv(s["path_table"])
        assert table["seed"].tolist() == [1, 2] and table["firing_rate_hz"].notna().all()
        rates = []
        for seed in (1, 2):
            summ = sweep_ws / "out" / name / f"seed-{seed}" / "simulation_summary"
            rec = json.loads((summ / "summary.json").read_text())
            assert rec["firing_rate_hz"] == pytest.approx(
                float(table.loc[table["seed"] == seed, "firing_rate_hz"].iloc[0]), rel=1e-5
            )
            rates.append(rec["input_spikes"]["prox_inh_stim"]["mean_rate_per_active_node_hz"])
        pv_rates.append(sum(rates) / 2)
    # the swept field reaches the inputs: PV+ rates grow with their mean
    assert pv_rates[0] < pv_rates[1] < pv_rates[2], pv_rates


def test_sweep_launch_daemon_queues_a_backfill(sweep_ws: Path, capsys) -> None:
    """--launch daemon: the seed-independent assets in process, then seed_job over every
    (param set, seed) as one Dagster backfill whose runs wait in the daemon's queue."""
    import dagster as dg

    code = cli.main(
        ["sweep", "--base", "T_sw", "--set", "dL=5,10", "--seeds", "3-4", "--launch", "daemon"]
    )
    assert code == cli.EXIT_OK, capsys.readouterr().err
    inst = dg.DagsterInstance.get()
    queued = inst.get_runs(dg.RunsFilter(job_name="seed_job"))
    assert {r.status for r in queued} == {dg.DagsterRunStatus.QUEUED}
    assert {r.tags["dagster/partition"] for r in queued} == {
        f"T_sw__dL-{d}|{s}" for d in (5, 10) for s in (3, 4)
    }
    assert len({r.tags["dagster/backfill"] for r in queued}) == 1
    cells = inst.get_runs(dg.RunsFilter(job_name="cell_job"))
    assert len(cells) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in cells)
    inst.dispose()
