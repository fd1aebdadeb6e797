"""Reliability: hostile inputs, concurrent first use, one writer per partition, killed runs,
corrupted outputs and moved trees.

Bad inputs: each gives one or two `error:` lines naming the field or path, exit code 2,
nothing written (no storage root, cache or Dagster home created) and nothing recorded in an
existing instance. The rest run real subprocesses, real SQLite instances and real files; the
cases that need whole NEURON simulations are marked slow (`pytest -m slow`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import copy_compiled_mechanisms, small_params

from l5assets import cli, paths, storage
from l5assets import graph as G

L5 = [sys.executable, "-m", "l5assets.cli"]


@pytest.fixture
def ws(tmp_path: Path, monkeypatch):
    """Empty params dir (with one good param set `T_ok`), storage root, cache and home paths
    (none of the last three created)."""
    pdir = tmp_path / "params"
    pdir.mkdir()
    (pdir / "T_ok.json").write_text(json.dumps(small_params()))
    env = {
        "L5ASSETS_PARAMS_DIR": pdir,
        "L5ASSETS_STORAGE_ROOT": tmp_path / "out",
        "L5ASSETS_CACHE_DIR": tmp_path / "cache",
        "DAGSTER_HOME": tmp_path / "home",
        # `run --engine` sets it for its children: restored (unset) after each test
        "L5ASSETS_ENGINE": "neuron",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    return tmp_path


def _write_params(ws: Path, name: str, change) -> None:
    raw = small_params()
    change(raw)
    (ws / "params" / f"{name}.json").write_text(json.dumps(raw))


def _set(path: str, value):
    def change(raw):
        d = raw
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[k]
        if value is _DELETE:
            del d[keys[-1]]
        else:
            d[keys[-1]] = value

    return change


_DELETE = object()


def _bad_biophysics(ws: Path, monkeypatch) -> None:
    """A components dir whose default cell inserts a mechanism no .mod file defines."""
    comp = ws / "components"
    shutil.copytree(paths.components_dir(), comp, ignore=shutil.ignore_patterns("fits"))
    f = comp / "cells" / f"{paths.DEFAULT_CELL}.json"
    bio = json.loads(f.read_text())
    region = next(iter(bio["regions"].values()))
    region.setdefault("mechanisms", {})["NoSuchChannel"] = {"gbar": 1.0}
    f.write_text(json.dumps(bio))
    monkeypatch.setenv("L5ASSETS_COMPONENTS_DIR", str(comp))


# (case id, setup(ws, monkeypatch) -> extra argv, param set, seeds, expected text in error)
def _p(name, change):
    return lambda ws, mp: (_write_params(ws, name, change), [])[1]


BAD_INPUTS = [
    ("name-with-space", None, "bad name", ["1"], "must match [A-Za-z0-9_-]+"),
    ("name-reserved", None, "_cells", ["1"], "reserved"),
    ("param-set-path", None, "/some/path.json", ["1"], "not a path"),
    ("param-set-missing", None, "T_nope", ["1"], "available"),
    (
        "json-invalid",
        lambda ws, mp: (ws / "params" / "T_b.json").write_text("{"),
        "T_b",
        ["1"],
        "not valid JSON",
    ),
    (
        "json-not-utf8",
        lambda ws, mp: (ws / "params" / "T_b.json").write_bytes(b"\xff\xfe{}"),
        "T_b",
        ["1"],
        "T_b",
    ),
    (
        "json-too-deep",
        lambda ws, mp: (ws / "params" / "T_b.json").write_text("[" * 100000),
        "T_b",
        ["1"],
        "T_b",
    ),
    (
        "json-top-list",
        lambda ws, mp: (ws / "params" / "T_b.json").write_text("[1]"),
        "T_b",
        ["1"],
        "top level must be a JSON object",
    ),
    ("unknown-key", _p("T_b", _set("bogus", 1)), "T_b", ["1"], "bogus"),
    ("missing-dt", _p("T_b", _set("dt", _DELETE)), "T_b", ["1"], "dt"),
    ("dt-negative", _p("T_b", _set("dt", -0.1)), "T_b", ["1"], "dt"),
    ("dt-text", _p("T_b", _set("dt", "fast")), "T_b", ["1"], "dt"),
    ("stop-before-start", _p("T_b", _set("time.stop", 0.0)), "T_b", ["1"], "time.stop"),
    ("lengths-not-object", _p("T_b", _set("lengths", 5)), "T_b", ["1"], "lengths"),
    (
        "som-model-unknown",
        _p("T_b", _set("synapses", {"som_model": "X"})),
        "T_b",
        ["1"],
        "som_model",
    ),
    (
        "record-locs-bad",
        _p("T_b", _set("record_cellvars.locs", ["nowhere"])),
        "T_b",
        ["1"],
        "record_cellvars.locs",
    ),
    ("seed-negative", None, "T_ok", ["-1"], "seed"),
    ("seed-text", None, "T_ok", ["abc"], "seed"),
    ("seed-too-big", None, "T_ok", [str(2**31)], "seed"),
    ("seed-float", None, "T_ok", ["1.5"], "seed"),
    (
        "biophysics-unknown",
        _p("T_b", _set("cell.biophysics", "NoCell")),
        "T_b",
        ["1"],
        "cell.biophysics",
    ),
    (
        "biophysics-unknown-mechanism",
        lambda ws, mp: (_bad_biophysics(ws, mp), [])[1],
        "T_ok",
        ["1"],
        "NoSuchChannel",
    ),
    (
        "morphology-missing",
        _p("T_b", _set("cell.morphology", "/nonexistent/cell.asc")),
        "T_b",
        ["1"],
        "cell.morphology",
    ),
    (
        "morphology-suffix",
        lambda ws, mp: _morph(ws, "m.txt", b"x"),
        "T_b",
        ["1"],
        "cell.morphology",
    ),
    (
        "morphology-garbage",
        lambda ws, mp: _morph(ws, "m.asc", os.urandom(3000)),
        "T_b",
        ["1"],
        "NEURON cannot read",
    ),
    (
        "morphology-text-garbage",
        lambda ws, mp: _morph(ws, "m.asc", b"hello\n(((\n"),
        "T_b",
        ["1"],
        "NEURON cannot read",
    ),
    (
        "morphology-empty-swc",
        lambda ws, mp: _morph(ws, "m.swc", b""),
        "T_b",
        ["1"],
        "NEURON cannot read",
    ),
    (
        "storage-root-is-file",
        lambda ws, mp: _file_env(ws, mp, "L5ASSETS_STORAGE_ROOT"),
        "T_ok",
        ["1"],
        "is a file",
    ),
    (
        "storage-root-under-proc",
        lambda ws, mp: mp.setenv("L5ASSETS_STORAGE_ROOT", "/proc/x"),
        "T_ok",
        ["1"],
        "/proc",
    ),
    (
        "storage-root-parent-file",
        lambda ws, mp: _file_env(ws, mp, "L5ASSETS_STORAGE_ROOT", "sub"),
        "T_ok",
        ["1"],
        "cannot be created",
    ),
    (
        "storage-root-flag-file",
        lambda ws, mp: ["--storage-root", str(_touch(ws / "f"))],
        "T_ok",
        ["1"],
        "--storage-root",
    ),
    (
        "storage-root-name-too-long",
        lambda ws, mp: ["--storage-root", str(ws / ("x" * 300))],
        "T_ok",
        ["1"],
        "longer than 255",
    ),
    (
        "cache-is-file",
        lambda ws, mp: _file_env(ws, mp, "L5ASSETS_CACHE_DIR"),
        "T_ok",
        ["1"],
        "mechanism cache",
    ),
    (
        "dagster-home-is-file",
        lambda ws, mp: _file_env(ws, mp, "DAGSTER_HOME"),
        "T_ok",
        ["1"],
        "DAGSTER_HOME",
    ),
    (
        "dagster-yaml-not-mapping",
        lambda ws, mp: _home_yaml(ws, "- a\n- b\n"),
        "T_ok",
        ["1"],
        "dagster.yaml",
    ),
    (
        "dagster-yaml-invalid",
        lambda ws, mp: _home_yaml(ws, "a: [\n"),
        "T_ok",
        ["1"],
        "dagster.yaml",
    ),
    (
        "engine-unknown",
        lambda ws, mp: ["--engine", "nest"],
        "T_ok",
        ["1"],
        "run --engine: 'nest' is not an engine, allowed: bionet, neuron",
    ),
    (
        "engine-env-unknown",
        lambda ws, mp: mp.setenv("L5ASSETS_ENGINE", "gpu") or [],
        "T_ok",
        ["1"],
        "L5ASSETS_ENGINE: 'gpu' is not an engine, allowed:",
    ),
    (
        "params-dir-missing",
        lambda ws, mp: ["--params-dir", str(ws / "nowhere")],
        "T_ok",
        ["1"],
        "params folder",
    ),
]


def _touch(p: Path) -> Path:
    p.write_text("x")
    return p


def _morph(ws: Path, name: str, data: bytes) -> list[str]:
    m = ws / name
    m.write_bytes(data)
    _write_params(ws, "T_b", _set("cell.morphology", str(m)))
    return []


def _file_env(ws: Path, mp, var: str, below: str | None = None) -> list[str]:
    f = _touch(ws / f"file_{var}")
    mp.setenv(var, str(f / below) if below else str(f))
    return []


def _home_yaml(ws: Path, text: str) -> list[str]:
    (ws / "home").mkdir()
    (ws / "home" / "dagster.yaml").write_text(text)
    return []


def _snapshot(ws: Path) -> set[str]:
    return {str(p.relative_to(ws)) for p in ws.rglob("*")}


@pytest.mark.parametrize(
    ("setup", "param_set", "seeds", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in BAD_INPUTS],
)
def test_bad_input_is_refused_before_anything_is_written(
    ws, monkeypatch, capsys, setup, param_set, seeds, expected
):
    extra = setup(ws, monkeypatch) if setup else None
    extra = extra if isinstance(extra, list) else []
    before = _snapshot(ws)
    argv = ["run", "--param-set", param_set, *sum((["--seed", s] for s in seeds), []), *extra]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE, err
    assert err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    # nothing written: no storage root, cache, Dagster home or any other new file
    assert _snapshot(ws) == before


def test_bad_input_records_nothing_in_an_existing_instance(ws, capsys):
    """With an instance in place, refused runs leave it as it was: no runs, no partitions."""
    inst = cli.local_instance()
    (ws / "params" / "T_b.json").write_text(json.dumps({**small_params(), "dL": -1}))
    for argv in (
        ["run", "--param-set", "T_b", "--seed", "1"],
        ["run", "--param-set", "T_ok", "--seed", "x"],
        ["run", "--param-set", str(ws / "params" / "T_ok.json"), "--seed", "1"],
    ):
        assert cli.main(argv) == cli.EXIT_USAGE
    capsys.readouterr()
    assert inst.get_runs() == []
    assert inst.get_dynamic_partitions("param_set") == []
    assert inst.get_dynamic_partitions("seed") == []
    assert not (ws / "out").exists()


def test_bad_input_in_a_real_process_is_one_line(ws, tmp_path):
    """The console command itself: exit code 2, one line, no traceback; --verbose adds it."""
    m = tmp_path / "g.asc"
    m.write_bytes(os.urandom(2000))
    _write_params(ws, "T_b", _set("cell.morphology", str(m)))
    p = subprocess.run(
        [*L5, "run", "--param-set", "T_b", "--seed", "1"], capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "cell.morphology" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(
        [*L5, "run", "--param-set", "T_b", "--seed", "1", "--verbose"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "Traceback" in p.stderr
    assert not (ws / "out").exists() and not (ws / "home").exists()


def test_a_readable_morphology_is_read_by_neuron_once(ws, monkeypatch):
    """A morphology NEURON read in a run's preflight is recorded by its bytes and suffix: the
    next preflight skips the NEURON subprocess; other bytes or another suffix are read again;
    `l5assets run` writes the record."""
    from l5assets import preflight as P

    def pf(name: str) -> P.Preflight:
        return P.preflight(
            name,
            [1],
            dagster_home=ws / "home",
            storage_root=ws / "out",
            cache_dir=ws / "cache",
            params_dir=ws / "params",
        )

    first = pf("T_ok")
    assert first.morphology is not None and first.morphology_checked
    assert not (ws / "cache").exists()  # the preflight itself writes nothing
    P.record_morphology_ok(first)

    def no_neuron(path: Path, python: str | None = None) -> None:
        raise AssertionError(f"NEURON asked to read {path} again")

    monkeypatch.setattr(P, "check_morphology", no_neuron)
    assert not pf("T_ok").morphology_checked
    same = ws / "same.asc"  # the same bytes under another name: known
    same.write_bytes(first.morphology.read_bytes())
    _write_params(ws, "T_s", _set("cell.morphology", str(same)))
    assert not pf("T_s").morphology_checked
    # other bytes, or the same bytes with a suffix that picks another Import3d reader
    other = ws / "copy.asc"
    other.write_bytes(first.morphology.read_bytes() + b"\n; a copy\n")
    swc = ws / "same.swc"
    swc.write_bytes(first.morphology.read_bytes())
    for i, path in enumerate((other, swc)):
        _write_params(ws, f"T_c{i}", _set("cell.morphology", str(path)))
        with pytest.raises(AssertionError, match="again"):
            pf(f"T_c{i}")


# --------------------------------------------------------------------------------------------
# concurrency


_OPEN_AND_USE = """
import sys
from l5assets import cli
from l5assets.defs.partitions import register_partitions
inst = cli.local_instance()
register_partitions(inst, ["T_ok"], [int(sys.argv[1])])
print(sorted(inst.get_dynamic_partitions("seed")))
"""


def test_concurrent_first_use_of_a_fresh_home(ws):
    """Four processes open (create) the same fresh SQLite instance at once and record
    partitions: all succeed, and the instance works afterwards (one alembic head)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN_AND_USE, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1][-2000:] for o in outs]
    p = subprocess.run(
        [sys.executable, "-c", _OPEN_AND_USE, "9"], capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "['0', '1', '2', '3', '9']"
    import sqlite3

    for db in (ws / "home").rglob("*.db"):
        with sqlite3.connect(db) as c:
            tables = {r[0] for r in c.execute("select name from sqlite_master")}
            if "alembic_version" in tables:
                assert len(c.execute("select * from alembic_version").fetchall()) == 1, db


_HOLD = """
import sys, time
from pathlib import Path
from l5assets.storage import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), "partition T|1"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_lock_refuses_a_second_writer_and_takes_over_a_dead_ones(tmp_path):
    lock = tmp_path / "p" / ".x.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(lock), "60"], stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(storage.LockBusy, match=f"pid {holder.pid} on host"):
        with storage.exclusive_lock(lock, "partition T|1"):
            pass
    assert storage.lock_held(lock)
    holder.kill()  # like kill -9: the kernel drops the flock, the file keeps its pid
    holder.wait()
    assert not storage.lock_held(lock)
    with storage.exclusive_lock(lock, "partition T|1") as st:
        assert st.stale is not None and st.stale["pid"] == holder.pid
    assert not lock.exists()  # released cleanly: removed


def test_second_run_waits_for_the_partition_and_does_not_redo_it(ws, monkeypatch):
    """`run` on a partition another process holds waits (printing who) and, when the holder
    has made the partition meanwhile, does not make it again."""
    from l5assets import graph as G

    folder = ws / "out" / "T_ok" / "shared"
    with storage.exclusive_lock(folder / ".partition.lock", "x"):
        pass  # the folder exists, lock free
    started = time.time()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _HOLD + "\nimport json\n",
            str(folder / ".partition.lock"),
            "4",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == b"held"
    # what the holder "made" while we wait: manifests of every shared asset, these params
    from l5assets.params import load_param_set

    h = load_param_set("T_ok").params_hash
    for n in G.SHARED_ASSETS:
        (folder / n).mkdir(parents=True, exist_ok=True)
    msgs = []

    def later():
        time.sleep(1.0)
        for n in G.SHARED_ASSETS:
            (folder / n / "manifest.json").write_text(json.dumps({"params": {"hash": h}}))

    import threading

    t = threading.Thread(target=later)
    t.start()
    with cli.partition_writer(folder, "T_ok") as state:
        msgs.append(state)
    t.join()
    proc.wait()
    assert state.waited_for and state.waited_for["pid"] == proc.pid
    assert cli._made_by_other(folder, "cell_job", h, started)
    assert not cli._made_by_other(folder, "cell_job", "other-hash", started)
    # written by the holder before we began to wait: its pid in the manifests tells
    for n in G.SHARED_ASSETS:
        m = {"params": {"hash": h}, "run": {"pid": proc.pid}}
        (folder / n / "manifest.json").write_text(json.dumps(m))
    later_start = time.time() + 100
    assert cli._made_by_other(folder, "cell_job", h, later_start, holder_pid=proc.pid)
    assert not cli._made_by_other(folder, "cell_job", h, later_start, holder_pid=proc.pid + 1)


def _step_context(asset: str):
    """What `asset_step` reads of a Dagster context: partition key, asset key, log."""
    import logging
    import types

    import dagster as dg

    return types.SimpleNamespace(
        partition_key=dg.MultiPartitionKey({"param_set": "T_ok", "seed": "1"}),
        asset_key=dg.AssetKey(asset),
        log=logging.getLogger("test"),
    )


def test_asset_step_refuses_a_second_writer(ws, monkeypatch):
    """In Dagster (any executor): a step whose asset partition is held by another live
    process fails at once, naming the holder; nothing of it is written."""

    from l5assets.defs.common import PartitionBusyError, asset_step
    from l5assets.defs.resources import StorageResource

    lock = ws / "out" / "T_ok" / "seed-1" / ".exc_raster.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(lock), "60"], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        ctx = _step_context("exc_raster")
        monkeypatch.setattr("l5assets.defs.common._LOCK_PATIENCE_S", 0.5)
        with pytest.raises(PartitionBusyError, match=f"pid {holder.pid}"):
            with asset_step(ctx, StorageResource()):
                raise AssertionError("must not run")
        assert not (ws / "out" / "T_ok" / "seed-1" / "exc_raster").exists()
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------------------
# killed runs: stale STARTED runs, leftover temp folders, the worker dies with its parent


def test_a_run_left_started_by_a_dead_process_is_marked_failed(ws):
    import dagster as dg

    from l5assets.defs.liveness import PID_START_TAG, PID_TAG, fail_dead_runs, run_tags

    inst = cli.local_instance()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    from l5assets.definitions import defs

    job = defs.resolve_job_def("observe_sources_job")
    tags_dead = {**run_tags(), PID_TAG: str(dead.pid), PID_START_TAG: "1"}
    runs = []
    for tags in (tags_dead, run_tags()):
        r = inst.create_run_for_job(job, tags=tags, status=dg.DagsterRunStatus.STARTED)
        runs.append(r.run_id)
    # each holds a slot of the neuron pool (the project's instance: one slot per core)
    storage = inst.event_log_storage
    assert storage.initialize_concurrency_limit_to_default("neuron")
    for run_id in runs:
        assert storage.claim_concurrency_slot("neuron", run_id, "simulation_outputs").is_claimed
    assert fail_dead_runs(inst) == [runs[0]]
    assert inst.get_run_by_id(runs[0]).status == dg.DagsterRunStatus.FAILURE
    assert inst.get_run_by_id(runs[1]).status == dg.DagsterRunStatus.STARTED  # we are alive
    # the dead run's slot is free again, the live one's kept
    held = {s.run_id for s in storage.get_concurrency_info("neuron").claimed_slots}
    assert held == {runs[1]}


def test_leftover_temps_are_listed_and_removed_by_the_next_step(ws, capsys):

    from l5assets.defs.common import asset_step
    from l5assets.defs.resources import StorageResource

    seed_dir = ws / "out" / "T_ok" / "seed-1"
    left = seed_dir / ".exc_raster.abc123.tmp"
    (left / "sub").mkdir(parents=True)
    other = seed_dir / ".network.xyz.tmp"
    other.mkdir()
    cache_left = ws / "cache" / ".mechanisms-0123456789abcdef.q1w2"
    cache_left.mkdir(parents=True)
    assert cli.main(["status", "--no-dagster", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(r for r in rows if r["seed"] == 1)
    assert {str(left), str(other), str(cache_left)} <= set(row["leftovers"])
    ctx = _step_context("exc_raster")
    with asset_step(ctx, StorageResource()) as step:
        (step.tmp / "x.txt").write_text("x")
    assert not left.exists() and other.exists()  # only its own asset's temp folders
    assert storage.clean_cache_temps(ws / "cache") == [cache_left]


_PARENT = """
import os, subprocess, sys, time
from l5assets.defs.common import _die_with_parent
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(120)"],
    start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
)
print(child.pid, flush=True)
time.sleep(120)
"""

_WATCHER = """
import os, subprocess, sys, time
env = dict(os.environ, L5ASSETS_PARENT_PID=str(os.getpid()))
child = subprocess.Popen(
    [sys.executable, "-c",
     "from l5assets.simulation.runner import watch_parent; import time; "
     "watch_parent(interval_s=0.2); time.sleep(120)"],
    start_new_session=True, env=env,
)
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if not storage.process_alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("script", [_PARENT, _WATCHER], ids=["pdeathsig", "runner-watch"])
def test_worker_in_its_own_session_dies_with_a_killed_parent(script):
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    assert storage.process_alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _gone(child), f"worker {child} survived its parent"


# --------------------------------------------------------------------------------------------
# verification: flipped byte, deleted file, folder trace, moved tree


def _chain(root: Path, params) -> tuple[Path, Path]:
    """Two real manifests: an upstream asset folder and a downstream one that reads it."""
    from l5assets.lineage.manifest import write_manifest

    up = storage.partition_dir(root, "functional_groups", params.name, 1)
    up.mkdir(parents=True)
    (up / "groups.parquet").write_bytes(b"u" * 1000)
    write_manifest(
        up,
        asset="functional_groups",
        params=params,
        seed=1,
        code_version="1",
        outputs=[up / "groups.parquet"],
        inputs={},
    )
    down = storage.partition_dir(root, "exc_raster", params.name, 1)
    down.mkdir(parents=True)
    (down / "exc.h5").write_bytes(b"d" * 1000)
    write_manifest(
        down,
        asset="exc_raster",
        params=params,
        seed=1,
        code_version="1",
        outputs=[down / "exc.h5"],
        inputs={"functional_groups": up / "groups.parquet"},
    )
    return up, down


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[10] ^= 0xFF
    p.write_bytes(bytes(b))


@pytest.fixture
def chain(ws):
    from l5assets.params import load_param_set

    return _chain(ws / "out", load_param_set("T_ok"))


def _status_of(capsys, *extra) -> dict:
    assert cli.main(["status", "--no-dagster", "--json", *extra]) == 0
    rows = json.loads(capsys.readouterr().out)
    return next(r for r in rows if r["seed"] == 1)


def test_flipped_byte_is_found_by_verify_and_trace(chain, capsys):
    up, down = chain
    assert not [r for r in _status_of(capsys, "--verify")["reasons"] if r["kind"] == "outputs"]
    _flip(down / "exc.h5")  # same size: only the hash tells
    assert not [r for r in _status_of(capsys)["reasons"] if r["kind"] == "outputs"]
    row = _status_of(capsys, "--verify")
    assert row["state"] == "stale"
    assert any(r["kind"] == "outputs" and "exc.h5" in r["detail"] for r in row["reasons"])
    # trace on the asset folder itself checks that folder's own outputs
    assert cli.main(["trace", str(down), "--json"]) == cli.EXIT_FAILED
    t = json.loads(capsys.readouterr().out)
    assert any("exc.h5" in p and "changed" in p for p in t["problems"])


def test_flipped_byte_upstream_is_found_by_trace(chain, capsys):
    up, down = chain
    _flip(up / "groups.parquet")
    assert cli.main(["trace", str(down / "exc.h5"), "--json"]) == cli.EXIT_FAILED
    t = json.loads(capsys.readouterr().out)
    assert any("groups.parquet" in p and "functional_groups" in p for p in t["problems"])


@pytest.mark.parametrize("how", ["deleted", "resized"])
def test_deleted_or_resized_output_is_found_without_verify(chain, capsys, how):
    up, down = chain
    if how == "deleted":
        (down / "exc.h5").unlink()
    else:
        (down / "exc.h5").write_bytes(b"d" * 999)
    row = _status_of(capsys)
    assert row["state"] == "stale" and row["assets"]["exc_raster"] == "stale"
    assert any(r["kind"] == "outputs" for r in row["reasons"])
    assert cli.main(["trace", str(down)]) == cli.EXIT_FAILED
    assert "exc.h5" in capsys.readouterr().out


def test_moved_tree_is_traced_inside_the_copy_without_fallback(chain, ws, capsys):
    up, down = chain
    copy = ws / "moved"
    shutil.copytree(ws / "out", copy)
    moved_down = copy / down.relative_to(ws / "out")
    assert cli.main(["trace", str(moved_down / "exc.h5"), "--json"]) == cli.EXIT_OK
    t = json.loads(capsys.readouterr().out)
    assert t["fallbacks"] == [] and t["consistent"]
    every = [n["manifest"] for n in t["chain"]] + [
        i["path"] for n in t["chain"] for i in n["inputs"]
    ]
    assert all(str(copy) in p for p in every), every
    # the copy lost its upstream folder: the original tree's file is used, and it is said
    shutil.rmtree(copy / up.relative_to(ws / "out"))
    cli.main(["trace", str(moved_down / "exc.h5"), "--json"])
    t = json.loads(capsys.readouterr().out)
    assert t["fallbacks"] and any("path fallback" in n for n in t["notes"])


# --------------------------------------------------------------------------------------------
# end to end: real `l5assets run` processes on the small param set (stop 0.15 s). One clean
# run (module fixture) is the reference the others are compared with, byte for byte.

_E2E_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> Path:
    """A params folder with `T_ok` and a compile cache holding the already compiled
    mechanisms (copied from the project's cache when it has them: no nrnivmodl per test)."""
    base = tmp_path_factory.mktemp("e2e")
    (base / "params").mkdir()
    (base / "params" / "T_ok.json").write_text(json.dumps(small_params()))
    copy_compiled_mechanisms(base / "cache")
    return base


def _e2e_env(base: Path, name: str) -> dict[str, str]:
    """Environment of one `l5assets run`: its own storage root and DAGSTER_HOME (`name`)."""
    return dict(
        os.environ,
        L5ASSETS_PARAMS_DIR=str(base / "params"),
        L5ASSETS_STORAGE_ROOT=str(base / name / "out"),
        L5ASSETS_CACHE_DIR=str(base / "cache"),
        DAGSTER_HOME=str(base / name / "home"),
    )


def _start(base: Path, name: str, seed: int, tag: str = "") -> subprocess.Popen:
    (base / name).mkdir(exist_ok=True)
    log = base / name / f"run-{seed}{tag}"
    return subprocess.Popen(
        [*L5, "run", "--param-set", "T_ok", "--seed", str(seed), "--json"],
        stdout=open(f"{log}.json", "w"),  # noqa: SIM115 - closed with the process
        stderr=open(f"{log}.err", "w"),  # noqa: SIM115
        env=_e2e_env(base, name),
    )


def _finish(base: Path, name: str, proc: subprocess.Popen, seed: int, tag: str = "") -> dict:
    rc = proc.wait(timeout=_E2E_TIMEOUT_S)
    log = base / name / f"run-{seed}{tag}"
    assert rc == 0, Path(f"{log}.err").read_text()[-3000:]
    return json.loads(Path(f"{log}.json").read_text())


def _run(base: Path, name: str, seed: int, tag: str = "") -> dict:
    return _finish(base, name, _start(base, name, seed, tag), seed, tag)


def _data_files(root: Path) -> dict[str, str]:
    """sha256 of every data file below a storage root (manifests, hidden files and the
    runner's volatile `result.json` / `log.txt` aside)."""
    from l5assets.layout import VOLATILE_OUTPUTS

    return {
        str(p.relative_to(root)): storage.file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != "manifest.json"
        and p.name not in VOLATILE_OUTPUTS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _manifests(root: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(root)): json.loads(p.read_text())
        for p in sorted(root.rglob("manifest.json"))
    }


@pytest.fixture(scope="module")
def clean_run(e2e) -> tuple[dict[str, str], dict[str, dict]]:
    """One clean run of T_ok seed 1 (root `A`): its data files and manifests."""
    _run(e2e, "A", 1)
    root = e2e / "A" / "out"
    return _data_files(root), _manifests(root)


def _without_run(manifests: dict[str, dict]) -> dict[str, dict]:
    return {k: {kk: vv for kk, vv in m.items() if kk != "run"} for k, m in manifests.items()}


def test_cli_run_reports_each_asset_and_the_neuron_progress(e2e, clean_run):
    """What a user sees on the terminal: one line as each asset starts and ends, the NEURON
    run's stages and progress; no subprocess command lines, no telemetry banner."""
    err = (e2e / "A" / "run-1.err").read_text()
    lines = err.splitlines()
    for asset in ("segments_table [T_ok]", "exc_raster [T_ok|1]", "simulation_outputs [T_ok|1]"):
        assert f"- {asset}: started" in lines, err
        assert any(x.startswith(f"- {asset}: done in ") for x in lines), err
    progress = [x for x in lines if "NEURON run:" in x and " ms simulated (" in x]
    assert len(progress) >= 10 and "(100%)" in progress[-1], err
    assert any("placing its synapses" in x for x in lines), err
    assert "== partition 1/1: T_ok|1" in lines and "== 1/1 partitions done" in lines
    assert "running: " not in err and "-m l5assets" not in err
    assert "telemetry" not in err.lower()
    home = e2e / "A" / "home" / "dagster.yaml"
    assert "enabled: false" in home.read_text()


def test_a_run_records_the_morphology_neuron_read(e2e, clean_run):
    """`l5assets run` records its morphology once its checks pass: one record, keyed by the
    file's bytes, suffix and NEURON version (later runs skip the NEURON check)."""
    from importlib.metadata import version

    from l5assets import preflight as P
    from l5assets.params import load_param_set

    morph = P.morphology_path(load_param_set("T_ok", e2e / "params"))
    records = sorted((e2e / "cache" / P.MORPHOLOGY_RECORDS).iterdir())
    assert [r.name for r in records] == [
        f"{P.morphology_digest(morph)}-{morph.suffix.lower().lstrip('.')}"
        f"-check{P.MORPHOLOGY_CHECK_VERSION}-neuron-{version('neuron')}"
    ]


def test_jobs_run_seeds_in_parallel_processes_with_the_same_files(e2e, clean_run):
    """`run --seed 1 --seed 2 --jobs 2`: both partitions at once in worker processes, their
    terminal lines prefixed, one merged JSON summary; seed 1's files byte-identical to the
    clean sequential run's."""
    (e2e / "J").mkdir(exist_ok=True)
    p = subprocess.run(
        [*L5, "run", "--param-set", "T_ok", "--seed", "1", "--seed", "2", "--jobs", "2", "--json"],
        capture_output=True,
        text=True,
        env=_e2e_env(e2e, "J"),
        timeout=_E2E_TIMEOUT_S,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout)
    assert summary["ok"] and summary["seeds"] == [1, 2]
    seed_runs = [r for r in summary["runs"] if r["job"] == "seed_job"]
    assert sorted(r["partition_key"] for r in seed_runs) == ["T_ok|1", "T_ok|2"]
    assert all(r["success"] for r in summary["runs"])
    keys = sorted(r["partition_key"] for r in summary["assets"]["simulation_summary"])
    assert keys == ["T_ok|1", "T_ok|2"]
    assert "[T_ok|1] - simulation_outputs [T_ok|1]: started" in p.stderr
    assert "[T_ok|2] - simulation_outputs [T_ok|2]: started" in p.stderr
    assert "== 2/2 partitions done" in p.stderr
    data, _ = clean_run
    mine = _data_files(e2e / "J" / "out")
    seed1 = {k: v for k, v in mine.items() if "/seed-1/" in k or "/shared/" in k}
    assert seed1 == data
    assert any("/seed-2/" in k for k in mine)


def test_jobs_must_be_positive(capsys):
    assert cli.main(["run", "--param-set", "L5_quick", "--seed", "1", "--jobs", "0"]) == 2
    assert "--jobs: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_identical_runs_give_identical_files_and_manifests_but_run(e2e, clean_run):
    """Same param set + seed into two storage roots (two homes), and again into the first:
    byte-identical data files, manifests equal once `run` (and only it) is removed."""
    data_a, man_a = clean_run
    # one manifest per asset of the graph
    assert len(data_a) > 20 and len(man_a) == len(G.SHARED_ASSETS) + len(G.SEED_ASSETS)
    _run(e2e, "B", 1)
    data_b, man_b = _data_files(e2e / "B" / "out"), _manifests(e2e / "B" / "out")
    assert data_b == data_a
    assert _without_run(man_b) == _without_run(man_a)
    for k, m in man_b.items():  # `run` is where they differ (run id, times, folder)
        assert m["run"]["run_id"] != man_a[k]["run"]["run_id"]
        assert m["run"]["dir"] != man_a[k]["run"]["dir"]
    # nothing under the storage roots' names outside `run`
    text = json.dumps(_without_run(man_b))
    assert str(e2e / "B") not in text and str(e2e / "A") not in text
    # again into the first root and home
    _run(e2e, "A", 1, tag="-again")
    again = e2e / "A" / "out"
    assert _data_files(again) == data_a
    assert _without_run(_manifests(again)) == _without_run(man_a)


def _descendants(pid: int) -> dict[int, int | None]:
    """Every live process below `pid` (pid -> start ticks), from /proc."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = storage.process_start_ticks(c)
            todo.append(c)
    return out


def _using(path: Path) -> dict[int, int | None]:
    """Live processes whose command line names `path` (the run's workers name its root)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmd:
                out[int(d.name)] = storage.process_start_ticks(int(d.name))
    return out


def _poll(what: str, cond, proc: subprocess.Popen, timeout_s: float = 300.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        found = cond()
        if found:
            return found
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def _kill9_and_check_nothing_remains(proc: subprocess.Popen, root: Path) -> None:
    procs = {**_descendants(proc.pid), **_using(root)}
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    end = time.monotonic() + 15
    left = procs
    while left and time.monotonic() < end:
        left = {p: t for p, t in procs.items() if storage.process_alive(p, t)}
        time.sleep(0.1)
    assert not left, f"processes of the killed run survived: {left}"
    assert not _using(root), "a process still works on the killed run's storage root"


def test_kill9_at_start_build_and_simulation_leaves_nothing_and_reruns_clean(e2e, clean_run):
    """`kill -9` of `l5assets run` right after start-up, during the build (segments worker
    alive) and during the simulation (runner alive): nothing of it keeps running, and a re-run
    marks its runs left STARTED failed, removes its temp folders and gives the clean run's
    bytes. A killed compile's work folder in the cache goes; one whose compile runs stays."""
    import dagster as dg

    root, home = e2e / "K" / "out", e2e / "K" / "home"
    cache = e2e / "cache"
    dead = cache / ".mechanisms-0123456789abcdef.k1ll3d"
    (dead / "mod").mkdir(parents=True)
    busy = cache / ".mechanisms-fedcba9876543210.wr1t1n"
    busy.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(cache / ".mechanisms-fedcba9876543210.lock"), "600"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        # start-up: the instance is being opened
        p = _start(e2e, "K", 1, "-start")
        _poll("the Dagster home", lambda: home.is_dir(), p)
        _kill9_and_check_nothing_remains(p, root)
        # build: the segments worker (a NEURON subprocess) is alive; without the segments
        # cache the earlier runs filled, the worker must run
        shutil.rmtree(cache / "segments", ignore_errors=True)
        p = _start(e2e, "K", 1, "-build")
        _poll(
            "the segments worker",
            lambda: any("segments_worker" in _cmdline(q) for q in _using(root)),
            p,
        )
        assert list((root / "T_ok" / "shared").glob(".segments_table.*.tmp"))
        _kill9_and_check_nothing_remains(p, root)
        left_started = _started_runs(home)
        assert len(left_started) == 1  # the build's (cell_job); the next start marks it
        # simulation: the runner is alive
        p = _start(e2e, "K", 1, "-sim")
        _poll(
            "the simulation runner",
            lambda: any("simulation.runner" in _cmdline(q) for q in _using(root)),
            p,
        )
        _kill9_and_check_nothing_remains(p, root)
        assert list((root / "T_ok" / "seed-1").glob(".simulation_outputs.*.tmp"))
        started = _started_runs(home)
        assert len(started) == 1 and started != left_started  # the simulation's (seed_job)
        out = _run(e2e, "K", 1, "-rerun")
        assert all(r["success"] and not r.get("skipped") for r in out["runs"])
        assert f"marked failed: run {started[0]} (its process was killed)" in out["notes"]
        with dg.DagsterInstance.from_config(str(home)) as inst:
            for r in left_started + started:
                assert inst.get_run_by_id(r).status == dg.DagsterRunStatus.FAILURE
        assert _data_files(root) == clean_run[0]
        assert not storage.scan_leftover_temps(root)
        assert not dead.exists() and busy.exists()
    finally:
        holder.kill()
        holder.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _started_runs(home: Path) -> list[str]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as inst:
        return [r.run_id for r in inst.get_runs() if r.status == dg.DagsterRunStatus.STARTED]


def test_concurrent_runs_on_a_fresh_home_share_the_work(e2e, clean_run):
    """Three `l5assets run` at once on a fresh home and storage root: seeds 1 and 2, and seed 1
    again. All succeed; the param set's cell_job is made once (the others wait and skip it),
    seed 1 is made once (its second run waits and skips it), and seed 1's bytes are the clean
    run's."""
    # The test holds the param set's partition lock until all three runs wait for it, so they
    # are truly concurrent however slowly each starts up on a loaded machine.
    lock = e2e / "C" / "out" / "T_ok" / "shared" / ".partition.lock"
    with storage.exclusive_lock(lock, "the test's hold"):
        procs = [
            (seed, tag, _start(e2e, "C", seed, tag))
            for seed, tag in ((1, "-x"), (2, ""), (1, "-y"))
        ]
        end = time.monotonic() + 300
        while True:
            errs = [(e2e / "C" / f"run-{seed}{tag}.err").read_text() for seed, tag, _ in procs]
            if all("partition T_ok is being materialized" in e for e in errs):
                break
            assert all(p.poll() is None for _, _, p in procs), errs
            assert time.monotonic() < end, f"the runs never waited for the lock: {errs}"
            time.sleep(0.1)
    outs = {(seed, tag): _finish(e2e, "C", p, seed, tag) for seed, tag, p in procs}
    runs = [r for out in outs.values() for r in out["runs"]]
    assert all(r["success"] for r in runs)
    made = [r for r in runs if not r.get("skipped")]
    skipped = [r for r in runs if r.get("skipped")]
    assert sorted(r["partition_key"] for r in made if r["job"] != "observe_sources_job") == [
        "T_ok",
        "T_ok|1",
        "T_ok|2",
    ]
    assert sorted(r["partition_key"] for r in skipped) == ["T_ok", "T_ok", "T_ok|1"]
    assert all("materialized meanwhile by pid" in r["skipped"] for r in skipped)
    root = e2e / "C" / "out"
    seed1 = {k: v for k, v in _data_files(root).items() if "seed-2" not in k}
    assert seed1 == clean_run[0]
    # one run made each asset partition: one run id across seed 1's manifests
    ids = {m["run"]["run_id"] for k, m in _manifests(root).items() if k.startswith("T_ok/seed-1")}
    assert len(ids) == 1
    assert not storage.scan_leftover_temps(root)


def test_sigterm_during_simulation_ends_the_worker_group_and_records_failure(e2e, clean_run):
    """A cancelled run (SIGTERM to `l5assets run`, what a job scheduler or `kill` sends) while
    the NEURON runner works: the CLI exits, its runner's process group is ended, the temp
    folder is removed, the run is recorded as failed (not left STARTED), and a re-run gives
    the clean run's bytes."""
    import dagster as dg

    root, home = e2e / "T" / "out", e2e / "T" / "home"
    p = _start(e2e, "T", 1, "-term")
    runner = _poll(
        "the simulation runner",
        lambda: [q for q in _using(root) if "simulation.runner" in _cmdline(q)],
        p,
    )
    procs = {**_descendants(p.pid), **_using(root)}
    os.kill(p.pid, signal.SIGTERM)
    rc = p.wait(timeout=120)
    assert rc != 0
    end = time.monotonic() + 15
    left = procs
    while left and time.monotonic() < end:
        left = {q: t for q, t in procs.items() if storage.process_alive(q, t)}
        time.sleep(0.1)
    assert not left, f"processes of the cancelled run survived (runner {runner}): {left}"
    assert not list((root / "T_ok" / "seed-1").glob(".simulation_outputs.*.tmp"))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        statuses = {r.status for r in inst.get_runs()}
    assert dg.DagsterRunStatus.STARTED not in statuses
    assert dg.DagsterRunStatus.FAILURE in statuses or dg.DagsterRunStatus.CANCELED in statuses
    out = _run(e2e, "T", 1, "-rerun")
    assert all(r["success"] for r in out["runs"])
    assert _data_files(root) == clean_run[0]
