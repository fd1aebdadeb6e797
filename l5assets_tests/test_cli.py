"""The `l5assets` console command: argument handling, validation before any write, dispatch
of the lineage subcommands, and (slow) a whole `run --json` on two seeds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_params

from l5assets import cli, paths


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch):
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    monkeypatch.setenv("L5ASSETS_PARAMS_DIR", str(params_dir))
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return tmp_path, params_dir


def test_parser_run_takes_several_seeds():
    args = cli.build_parser().parse_args(
        ["run", "--param-set", "L5_quick", "--seed", "1", "--seed", "2", "--json"]
    )
    assert args.param_set == "L5_quick" and args.seed == ["1", "2"] and args.json
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--param-set", "L5_quick"])  # no seed


@pytest.mark.parametrize(
    ("name", "seed", "content", "message"),
    [
        ("T_bad", "1", {"dL": -1}, "dL"),
        ("T_ok", "-3", {}, "seed"),
        ("T_ok", "x", {}, "seed"),
        ("T_missing", "1", None, "no file"),
    ],
)
def test_run_validates_before_writing(dirs, capsys, name, seed, content, message):
    tmp, params_dir = dirs
    if content is not None:
        (params_dir / f"{name}.json").write_text(json.dumps({**small_params(), **content}))
    rc = cli.main(["run", "--param-set", name, "--seed", seed])
    assert rc == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    # nothing written: no outputs, no Dagster instance, no registered partitions
    assert not (tmp / "out").exists()
    assert not (tmp / "home").exists()


def test_trace_and_diff_read_real_manifests(tmp_path: Path, capsys, params_quick):
    from l5assets.lineage.manifest import write_manifest

    outs = []
    for i, seed in enumerate((1, 2)):
        d = tmp_path / f"o{i}"
        d.mkdir()
        f = d / "x.bin"
        f.write_bytes(b"data")
        write_manifest(
            d,
            asset="exc_raster",
            params=params_quick,
            seed=seed,
            code_version="1",
            outputs=[f],
            inputs={},
            extra={},
        )
        outs.append(f)
    assert cli.main(["trace", str(outs[0]), "--json"]) == cli.EXIT_OK
    traced = json.loads(capsys.readouterr().out)
    assert traced["seed"] == 1
    assert cli.main(["diff", str(outs[0]), str(outs[1]), "--json"]) == cli.EXIT_OK
    d = json.loads(capsys.readouterr().out)
    assert d["identical"] is False and "seed" in d["changed"]


@pytest.mark.slow
def test_run_json_two_seeds(tmp_path: Path):
    """`l5assets run` end to end in a subprocess: two seeds, one JSON object on stdout."""
    params_dir = tmp_path / "params"
    params_dir.mkdir()
    (params_dir / "T_cli.json").write_text(json.dumps(small_params()))
    env = dict(
        os.environ, L5ASSETS_PARAMS_DIR=str(params_dir), L5ASSETS_STORAGE_ROOT=str(tmp_path / "out")
    )
    env.pop("DAGSTER_HOME", None)
    env["L5ASSETS_CACHE_DIR"] = str(paths.cache_dir())  # reuse the compiled mechanisms
    env["L5ASSETS_DATA_DIR"] = str(tmp_path / "data")  # embedded instance goes under here
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "l5assets.cli",
            "run",
            "--param-set",
            "T_cli",
            "--seed",
            "3",
            "--seed",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["seeds"] == [3, 4]
    assert Path(out["dagster_home"]) == tmp_path / "data" / "dagster_home"
    assert [r["job"] for r in out["runs"]] == [
        "observe_sources_job",
        "cell_job",
        "seed_job",
        "seed_job",
    ]
    assert all(r["success"] for r in out["runs"])
    for asset in (
        "network",
        "exc_raster",
        "inh_rasters",
        "simulation_outputs",
        "simulation_summary",
    ):
        recs = out["assets"][asset]
        assert [r["partition_key"] for r in recs] == ["T_cli|3", "T_cli|4"]
        for r in recs:
            assert all(Path(p).exists() for k, p in r["paths"].items())
            assert r["metadata"]["content_hash"]
    assert out["assets"]["segments_table"][0]["partition_key"] == "T_cli"
    # the two seeds differ
    h = [r["metadata"]["content_hash"] for r in out["assets"]["exc_raster"]]
    assert h[0] != h[1]


def test_failed_run_still_prints_one_json_object(dirs, monkeypatch, capsys):
    """A run that fails inside the graph (.mod files that pass the preflight, which only reads
    their SUFFIX names, but do not compile) exits 1 and prints one JSON object naming the
    failure, with the runs done so far."""
    from l5assets.cell.biophysics import load_biophysics

    tmp, params_dir = dirs
    comps = tmp / "components"
    (comps / "cells").mkdir(parents=True)
    (comps / "mechanisms").mkdir()
    for f in paths.cells_dir().glob("*.json"):
        (comps / "cells" / f.name).write_text(f.read_text())
    for mech in load_biophysics(paths.DEFAULT_CELL).mechanism_names():
        text = f"NEURON {{\nSUFFIX {mech}\n}}\nthis is not NMODL\n"
        (comps / "mechanisms" / f"{mech}.mod").write_text(text)
    monkeypatch.setenv("L5ASSETS_COMPONENTS_DIR", str(comps))
    monkeypatch.setenv("L5ASSETS_CACHE_DIR", str(tmp / "cache"))
    (params_dir / "T_fail.json").write_text(json.dumps(small_params()))
    rc = cli.main(["run", "--param-set", "T_fail", "--seed", "1", "--json"])
    captured = capsys.readouterr()
    assert rc == cli.EXIT_FAILED
    out = json.loads(captured.out)
    assert out["ok"] is False and "nrnivmodl failed" in out["error"]
    assert [(r["job"], r["success"]) for r in out["runs"]] == [
        ("observe_sources_job", True),
        ("cell_job", False),
    ]
    assert "compiled_mechanisms" not in out["assets"]
    assert not (tmp / "out" / "T_fail" / "shared" / "compiled_mechanisms").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace", "{tmp}"], "no manifest.json describes"),
        (["diff", "{tmp}", "{tmp}"], "no manifest.json describes"),
        (["trace", "{tmp}/nothing.h5"], "no manifest.json describes"),
        (["validate-cell", "--cell", "nope"], "nope"),
        (["status", "--no-dagster", "--param-set", "bad name"], "bad name"),
    ],
)
def test_bad_input_is_an_error_line_not_a_traceback(dirs, capsys, argv, message):
    tmp, _ = dirs
    rc = cli.main([a.replace("{tmp}", str(tmp)) for a in argv])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_status_is_read_only(dirs, capsys):
    """`status` opens the Dagster instance only if one exists: it never creates a home."""
    tmp, params_dir = dirs
    (params_dir / "T_st.json").write_text(json.dumps(small_params()))
    assert cli.main(["status", "--json"]) == cli.EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert [(r["param_set"], r["state"]) for r in rows] == [("T_st", "missing")]
    assert not (tmp / "home").exists()


def test_status_lists_an_invalid_params_file_as_invalid_with_its_error(dirs, capsys):
    tmp, params_dir = dirs
    (params_dir / "T_ok.json").write_text(json.dumps(small_params()))
    (params_dir / "T_json.json").write_text('{"name": 3')
    bad = small_params()
    bad["no_such_field"] = 1
    (params_dir / "T_key.json").write_text(json.dumps(bad))
    for argv in (["status", "--json"], ["status", "--no-dagster", "--json"]):
        assert cli.main(argv) == cli.EXIT_OK
        rows = {r["param_set"]: r for r in json.loads(capsys.readouterr().out)}
        assert {k: r["state"] for k, r in rows.items()} == {
            "T_ok": "missing",
            "T_json": "invalid",
            "T_key": "invalid",
        }
        assert "no_such_field" in rows["T_key"]["error"]
        assert rows["T_ok"]["error"] is None
    assert cli.main(["status", "--no-dagster"]) == cli.EXIT_OK
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.startswith("T_key"))
    assert "invalid" in line and "params file invalid: params file: unknown top-level key" in line


def test_help_says_what_the_tool_is_and_lists_param_sets(dirs, capsys):
    _, params_dir = dirs
    (params_dir / "T_help.json").write_text(json.dumps(small_params()))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "layer-5b pyramidal cell" in out and "Dagster" in out
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "T_help" in capsys.readouterr().out


def test_a_jobs_child_refuses_params_changed_since_the_run_started(dirs, capsys):
    """`--jobs` children get the parent's params hash: an edit in between stops them before
    anything is written (the param-set level was made from the parent's params)."""
    tmp, params_dir = dirs
    (params_dir / "T_child.json").write_text(json.dumps(small_params()))
    argv = ["run", "--param-set", "T_child", "--seed", "1", "--seed-only"]
    rc = cli.main([*argv, "--expect-params-hash", "0" * 64])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_FAILED and "changed since the run started" in err
    assert not (tmp / "out").exists() and not (tmp / "home").exists()


def test_seed_workers_report_each_seed_and_end(dirs):
    """`--jobs` workers: every seed handed out comes back as one summary (here: refused, the
    params hash is not the file's), a failed seed does not stop the others, and the workers
    end when the seeds are done."""
    tmp, params_dir = dirs
    (params_dir / "T_w.json").write_text(json.dumps(small_params()))
    workers = cli.SeedWorkers("T_w", [1, 2, 3], 2, params_hash="0" * 64)
    summary = {"runs": [], "assets": {}, "notes": []}
    said: list[str] = []
    with pytest.raises(cli.RunFailed) as e:
        workers.run(summary, said.append)
    lines = str(e.value).splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["seed 1", "seed 2", "seed 3"]
    assert all("changed since the run started" in ln for ln in lines)
    assert said.count("== partition T_w|3 started") == 1 and said[-1].startswith("== 3/3 ")
    assert len(workers.workers) == 2 and all(w.proc.poll() == 0 for w in workers.workers)
    assert not (tmp / "out").exists()  # refused before anything was written


def test_a_dead_seed_worker_fails_its_seed_and_is_replaced(dirs):
    """A worker killed while it makes a seed (here: waiting for the partition lock another
    process holds) fails that seed; a new worker takes the next one."""
    import threading
    import time

    tmp, params_dir = dirs
    (params_dir / "T_d.json").write_text(json.dumps(small_params()))
    from l5assets.params import load_param_set

    params = load_param_set("T_d")
    hold = []
    for seed in (1, 2):  # both partitions locked: their workers wait
        hold.append(cli.partition_writer(tmp / "out" / "T_d" / f"seed-{seed}", f"T_d|{seed}"))
        hold[-1].__enter__()
    workers = cli.SeedWorkers("T_d", [1, 2], 1, params_hash=params.params_hash)
    started = list(workers.workers)

    killed: set[int] = set()

    def killer() -> None:
        deadline = time.monotonic() + 240
        while len(killed) < 2 and time.monotonic() < deadline:  # the first, then its successor
            busy = [w for w in workers.workers if w.seed is not None and w.proc.pid not in killed]
            if busy:
                time.sleep(2.0)  # it is waiting for the lock now
                killed.add(busy[0].proc.pid)
                busy[0].kill()
            time.sleep(0.1)

    t = threading.Thread(target=killer)
    t.start()
    summary = {"runs": [], "assets": {}, "notes": []}
    try:
        with pytest.raises(cli.RunFailed) as e:
            workers.run(summary, lambda m: None)
    finally:
        t.join()
        for h in hold:
            h.__exit__(None, None, None)
    assert str(e.value).splitlines() == [
        "seed 1: its worker ended (-9)",
        "seed 2: its worker ended (-9)",
    ]
    assert started[0] not in workers.workers


def test_seed_workers_that_die_at_start_up_fail_the_seeds_without_hanging(dirs):
    """Workers whose start-up fails (here: the param set is not there) take the seeds they
    were handed down with them and are started again while seeds remain; `run` ends with
    every seed failed (their own error went to stderr), never waiting for a dead worker."""
    workers = cli.SeedWorkers("T_absent", [1, 2, 3], 2)
    summary = {"runs": [], "assets": {}, "notes": []}
    with pytest.raises(cli.RunFailed) as e:
        workers.run(summary, lambda m: None)
    lines = str(e.value).splitlines()
    assert len(lines) == 3 and all(
        ln in (f"seed {k}: its worker ended (2)", f"seed {k}: not made (its workers kept dying)")
        for k, ln in zip((1, 2, 3), lines, strict=True)
    ), lines
    assert all(w.proc.poll() is not None for w in workers.workers)


def test_fit_cell_refuses_bad_stage_arguments_in_one_line(capsys):
    """`fit-cell` argument errors, each one line and exit 2 before anything runs; `--stage S
    --export` would ignore S (the export picks the best stage itself)."""
    for argv, message in (
        (["--stage", "soma", "--export"], "--stage soma: only with --generations or --minutes"),
        (["--stage", "bogus", "--minutes", "1"], "--stage bogus: not a stage, allowed: soma"),
        (["--minutes", "1"], "--stage: give one of soma"),
        ([], "give --stage S with --generations N"),
    ):
        assert cli.main(["fit-cell", *argv]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err
    assert cli.main(["fit-cell", "--stage", "soma", "--export"]) == cli.EXIT_USAGE
    assert "the best of the stages" in capsys.readouterr().err


def test_the_command_exits_with_mains_code_and_skips_the_last_collection(monkeypatch):
    """`l5assets` is `cli.entry`: main's exit code, with the objects frozen for the exit (the
    interpreter's last garbage collection cost 1.3 s of every command)."""
    import gc
    import tomllib

    scripts = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert scripts["scripts"]["l5assets"] == "l5assets.cli:entry"
    calls = []
    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as e:
        cli.entry()
    assert e.value.code == 3 and calls == ["freeze"]
