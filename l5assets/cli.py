"""The `l5assets` console command.

    l5assets run --param-set NAME --seed N [--seed M ...] [--json]
    l5assets validate-cell [--cell NAME] [--morphology PATH] [--protocol P ...] [--json]
    l5assets trace PATH [--json]
    l5assets diff A B [--json]
    l5assets status [--param-set NAME ...] [--json]

`run` validates the param set and seeds, registers them as dynamic partitions, records the
params file's content hash (an observation of `params_file`), then materializes the graph on
the local Dagster instance with the in-process executor: one run of `cell_job` for the param
set (compiled mechanisms, segments table), then one run of `seed_job` per seed: with several
seeds, up to `--jobs` (default: one per core) at once, in as many worker processes
(`l5assets run --worker`, started while the param-set level is made; each makes one seed
after another, one NEURON run and one core at a time). The instance is the one of
DAGSTER_HOME, else an embedded SQLite instance in `l5assets.paths.dagster_home()` (under
data/). Subcommands import what they need when they run (so `status` and `trace` never load
NEURON or BMTK).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# How long `run` waits for a partition another process is materializing (then: exit 1).
LOCK_WAIT_S = float(os.environ.get("L5ASSETS_LOCK_WAIT_S", "86400"))
INSTANCE_LOCK = ".l5assets-instance.lock"
# Metadata left out of `run --json`: the whole manifest (its path is listed under "paths").
CLI_OMITTED_METADATA = ("manifest_json", "plot")  # the inline figure: its file is listed


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input (a path without manifest, a bad name, an unknown cell):
    printed as `error: ...` with EXIT_USAGE instead of a traceback."""
    from l5assets.cell.biophysics import BiophysicsError
    from l5assets.cell.morphology import MorphologyError
    from l5assets.cell.validation import ValidationError
    from l5assets.lineage.trace import TraceError
    from l5assets.params import ParamsError

    return (
        ParamsError,
        FileNotFoundError,
        TraceError,
        ValidationError,
        BiophysicsError,
        MorphologyError,
    )


class RunFailed(RuntimeError):
    """A Dagster run of `l5assets run` failed; `summary` holds what was materialized."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


def _print_json(obj: Any) -> None:
    from l5assets.lineage.manifest import canonical_dumps

    print(canonical_dumps(obj), end="")


# --------------------------------------------------------------------------------------------
# instance


def local_instance(create: bool = True):
    """The Dagster instance of DAGSTER_HOME, else an embedded SQLite instance in
    `l5assets.paths.dagster_home()` (under data/). The home folder is created if missing, with
    the project's dagster.yaml (`l5assets.defs.instance`: telemetry off, run queue, the
    `neuron` pool) when it has none; with `create=False`
    (read-only queries) a missing home gives None instead."""
    import dagster as dg

    from l5assets import paths
    from l5assets.defs.instance import instance_yaml
    from l5assets.preflight import check_dagster_home
    from l5assets.storage import atomic_write_text, exclusive_lock

    home = Path(os.environ.get("DAGSTER_HOME") or paths.dagster_home()).resolve()
    if not create and not home.is_dir():
        return None
    check_dagster_home(home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    # Creating (and migrating) the SQLite storages is not safe under concurrency (two
    # processes can stamp two alembic heads): one process at a time opens the instance and
    # touches every storage; later opens find them made.
    with exclusive_lock(home / INSTANCE_LOCK, f"Dagster instance {home}", wait=True):
        if not (home / "dagster.yaml").exists():
            atomic_write_text(home / "dagster.yaml", instance_yaml())
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("param_set")
        instance.all_instigator_state()
    return instance


# --------------------------------------------------------------------------------------------
# run


def _metadata_value(v: Any) -> Any:
    value = getattr(v, "value", v)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str | dict | list) or value is None:
        return value
    return str(value)


def materialization_record(event: Any) -> dict[str, Any]:
    """One materialization event as plain JSON: asset, partition key, paths, metadata."""
    mat = event.event_specific_data.materialization
    pkey = str(mat.partition) if mat.partition is not None else None
    param_set, _, seed = (pkey or "").partition("|")
    out: dict[str, Any] = {
        "asset": mat.asset_key.to_user_string(),
        "partition_key": pkey,
        "param_set": param_set or None,
        "seed": int(seed) if seed else None,
        "paths": {},
        "metadata": {},
    }
    for key, v in mat.metadata.items():
        if key in CLI_OMITTED_METADATA:
            continue
        value = _metadata_value(v)
        if key == "dir" or key.startswith(("path_", "input_")):
            name = key if key == "dir" else key.split("_", 1)[1]
            out["paths"][("input:" if key.startswith("input_") else "") + name] = value
        else:
            out["metadata"][key] = value
    return out


def _root_cause(error: Any) -> str:
    """The innermost cause of a Dagster step error, as 'Type: message'."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    if error is None:
        return "unknown error"
    msg = error.message.strip()
    return msg if msg.startswith(f"{error.cls_name}") else f"{error.cls_name}: {msg}"


def _check_params_hash(params: Any, expected: str | None) -> None:
    """A child of `--jobs` runs on the params its parent made the param-set level from."""
    if expected is not None and params.params_hash != expected:
        raise ValueError(
            f"params file {params.name!r} changed since the run started (params hash "
            f"{params.params_hash[:12]}, the run's {expected[:12]}): run it again"
        )


def run_partitions(
    param_set: str,
    seeds: Sequence[int | str],
    *,
    instance: Any = None,
    defs: Any = None,
    log_level: str | None = None,
    jobs: int = 1,
    seed_only: bool = False,
    expect_params_hash: str | None = None,
) -> dict[str, Any]:
    """Materialize the whole graph for a param set and seeds; returns the JSON summary.

    Validates the params and seeds first (ParamsError before anything is written or
    registered). Raises RunFailed (naming the failed step, carrying the partial summary) if a
    run fails.
    """
    from l5assets import paths
    from l5assets.params import load_param_set, validate_seed

    params = load_param_set(param_set)
    _check_params_hash(params, expect_params_hash)
    seed_list = list(dict.fromkeys(validate_seed(s) for s in seeds))
    if not seed_list:
        raise ValueError("give at least one --seed")

    if defs is None:
        from l5assets.definitions import defs
    from l5assets.defs import common
    from l5assets.defs.cli_logger import CLI_LOGGER
    from l5assets.defs.liveness import fail_dead_runs, run_tags
    from l5assets.defs.partitions import register_partitions, run_partition_key
    from l5assets.storage import describe_holder

    # every step runs in this process: the NWB export's pynwb import overlaps the NEURON run
    common.PREFETCH_MODULES[:] = ["pynwb"]
    instance = instance or local_instance()
    dead = fail_dead_runs(instance)  # runs a killed `l5assets run` left STARTED
    register_partitions(instance, [params.name], seed_list)

    runs: list[dict[str, Any]] = []
    assets: dict[str, list[dict[str, Any]]] = {}
    summary: dict[str, Any] = {
        "ok": True,
        "param_set": params.name,
        "params_hash": params.params_hash,
        "seeds": seed_list,
        "dagster_home": os.environ.get("DAGSTER_HOME"),
        "storage_root": str(paths.storage_root().resolve()),
        "runs": runs,
        "assets": assets,
        "notes": [f"marked failed: run {r} (its process was killed)" for r in dead],
    }
    root = paths.storage_root()
    # terse terminal lines by default; `log_level` adds Dagster's console logger at that level
    loggers: dict[str, Any] = {CLI_LOGGER: {}}
    if log_level is not None:
        loggers["console"] = {"config": {"log_level": log_level}}

    def execute(job_name: str, partition_key: str | None) -> None:
        job = defs.resolve_job_def(job_name)
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            raise_on_error=False,
            run_config={"loggers": loggers},
            tags=run_tags(),
        )
        runs.append(
            {
                "job": job_name,
                "partition_key": partition_key,
                "run_id": result.run_id,
                "success": result.success,
            }
        )
        for ev in result.get_asset_materialization_events():
            rec = materialization_record(ev)
            assets.setdefault(rec.pop("asset"), []).append(rec)
        if not result.success:
            failed = [
                f"{ev.step_key}: {_root_cause(ev.event_specific_data.error)}"
                for ev in result.all_events
                if ev.is_step_failure
            ]
            message = (
                f"{job_name} failed for partition {partition_key!r} (run {result.run_id}):\n"
                + "\n".join(failed)
            )
            summary.update(ok=False, error=message)
            raise RunFailed(message, summary)

    def locked(job_name: str, seed: int | None) -> None:
        """Run a job holding its partition's lock; a partition another `run` was making
        while we waited for it is not made again (recorded as skipped)."""
        pkey = params.name if seed is None else str(run_partition_key(params.name, seed))
        folder = root / params.name / ("shared" if seed is None else f"seed-{seed}")
        with partition_writer(folder, pkey) as state:
            if state.stale:
                summary["notes"].append(
                    f"{pkey}: took over the lock left by {describe_holder(state.stale)} "
                    "(no longer running)"
                )
            if state.waited_for is not None and _made_by_other(
                folder, job_name, params.params_hash, state.since, state.waited_for.get("pid")
            ):
                runs.append(
                    {
                        "job": job_name,
                        "partition_key": pkey,
                        "run_id": None,
                        "success": True,
                        "skipped": "materialized meanwhile by " + describe_holder(state.waited_for),
                    }
                )
                return
            execute(job_name, pkey)

    def say(msg: str) -> None:
        if log_level is None:  # the terse terminal: Dagster's console says it otherwise
            print(msg, file=sys.stderr, flush=True)

    # workers start up while the param-set level is made
    workers = (
        SeedWorkers(
            params.name,
            seed_list,
            jobs,
            verbose=log_level is not None,
            params_hash=params.params_hash,
        )
        if jobs > 1 and len(seed_list) > 1
        else None
    )
    with _killed_on_error(workers):
        if not seed_only:
            execute("observe_sources_job", None)
            locked("cell_job", None)
    if workers is not None:
        workers.run(summary, say)
        return summary
    for k, seed in enumerate(seed_list, 1):
        say(f"== partition {k}/{len(seed_list)}: {params.name}|{seed}")
        locked("seed_job", seed)
        say(f"== {k}/{len(seed_list)} partitions done")

    return summary


WORKER_RESULT = "L5ASSETS-RESULT "  # a worker's stdout line carrying one seed's summary
WORKER_SEED = "\x1eL5ASSETS-SEED "  # a worker's stderr line: the lines after it are this seed's


class _SeedWorker:
    """One `l5assets run --worker` process of `--jobs`: it starts (imports, preflight) while
    the parent makes the param-set level, then makes the seeds it is given on stdin one after
    another, one summary line on stdout per seed. Its stderr lines go to ours with the
    partition in front; its other stdout lines go to our stderr."""

    def __init__(
        self,
        param_set: str,
        seeds: Sequence[int],
        results: Any,
        verbose: bool,
        params_hash: str | None = None,
    ) -> None:
        import subprocess
        import threading

        from l5assets.defs.common import _die_with_parent

        self.param_set = param_set
        self.seed: int | None = None  # the seed it is making, None when idle
        self.gone = False  # its stdin is closed: it takes no more seeds
        cmd = [sys.executable, "-m", "l5assets.cli", "run", "--param-set", param_set, "--worker"]
        for seed in seeds:  # for its preflight: the same checks as the parent's
            cmd += ["--seed", str(seed)]
        cmd += ["--verbose"] if verbose else []
        cmd += ["--expect-params-hash", params_hash] if params_hash else []
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # killed as a group, never left behind
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self.results = results
        self.threads = [
            threading.Thread(target=self._forward_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _forward_stderr(self) -> None:
        prefix = f"[{self.param_set}] "
        for line in self.proc.stderr:
            if line.startswith(WORKER_SEED):
                prefix = f"[{self.param_set}|{line[len(WORKER_SEED) :].strip()}] "
                continue
            print(prefix + line.rstrip(), file=sys.stderr, flush=True)

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(WORKER_RESULT):
                try:
                    result = json.loads(line[len(WORKER_RESULT) :])
                except json.JSONDecodeError:
                    result = {"ok": False, "error": "unreadable summary from its worker"}
                self.results.put((self, result))
            elif line.strip():
                print(line.rstrip(), file=sys.stderr, flush=True)
        self.proc.wait()
        self.results.put((self, None))  # ended (EOF)

    def give(self, seed: int) -> bool:
        """Hand it `seed`; False if it has gone (its end is reported on the results queue)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(f"{seed}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            self.gone = True
            return False
        self.seed = seed
        return True

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class SeedWorkers:
    """Up to `jobs` worker processes for the seeds of one param set (see `_SeedWorker`):
    started when this is made, before the parent makes the param-set level, so that their
    start-up overlaps it; `run` then hands each idle worker the next seed. A worker that dies
    takes its seed down (failed) and is replaced while seeds remain (one that dies before it
    took a seed, at most as many times as there were workers)."""

    def __init__(
        self,
        param_set: str,
        seeds: Sequence[int],
        jobs: int,
        *,
        verbose: bool = False,
        params_hash: str | None = None,
    ) -> None:
        import queue

        self.param_set, self.seeds = param_set, list(seeds)
        self.verbose, self.params_hash = verbose, params_hash
        self.results: Any = queue.Queue()
        self.workers = [self._new() for _ in range(min(jobs, len(self.seeds)))]
        self.max_idle_deaths = len(self.workers)

    def _new(self) -> _SeedWorker:
        return _SeedWorker(self.param_set, self.seeds, self.results, self.verbose, self.params_hash)

    def run(self, summary: dict[str, Any], say: Any) -> None:
        """Make every seed, merging the workers' summaries into `summary`. Raises RunFailed
        once all have ended if any failed; an interrupt kills the workers."""
        pending = list(self.seeds)
        failed: dict[int, str] = {}
        done, idle_deaths = 0, 0
        try:
            while pending or any(w.seed is not None for w in self.workers):
                for w in [w for w in self.workers if w.seed is None and not w.gone]:
                    if pending and w.give(pending[0]):
                        pending.pop(0)
                        say(f"== partition {self.param_set}|{w.seed} started")
                if not self.workers:  # every worker died and none was started again
                    for seed in pending:
                        failed[seed] = f"seed {seed}: not made (its workers kept dying)"
                    break
                w, child = self.results.get()
                if child is None:  # the worker ended
                    self.workers.remove(w)
                    # one that dies with a seed takes only that seed down; one that dies
                    # without (at start-up) may do so again: replaced a bounded number of times
                    idle_deaths += w.seed is None
                    if pending and idle_deaths <= self.max_idle_deaths:
                        self.workers.append(self._new())
                    if w.seed is None:
                        continue
                    child = {"ok": False, "error": f"its worker ended ({w.proc.returncode})"}
                elif w.seed is None:
                    continue
                seed, w.seed = w.seed, None
                done += 1
                _merge(summary, child)
                if not child.get("ok", False):
                    failed[seed] = f"seed {seed}: {child.get('error')}"
                busy = sum(x.seed is not None for x in self.workers)
                say(f"== {done}/{len(self.seeds)} partitions done ({busy} running)")
        finally:
            self.close()
        summary["runs"].sort(key=lambda r: (r["job"] == "seed_job", str(r["partition_key"])))
        if failed:  # in the seeds' order
            summary.update(ok=False, error="\n".join(failed[k] for k in self.seeds if k in failed))
            raise RunFailed(summary["error"], summary)

    def close(self) -> None:
        """End the workers: idle ones are told (stdin closed), busy ones killed."""
        for w in self.workers:
            if w.seed is None:
                w.close()
            else:
                w.kill()
        for w in self.workers:
            try:
                w.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it must not outlive us
                w.kill()

    def kill(self) -> None:
        for w in self.workers:
            w.kill()


@contextlib.contextmanager
def _killed_on_error(workers: SeedWorkers | None) -> Iterator[None]:
    """Kill `workers` (if any) when the block fails."""
    try:
        yield
    except BaseException:
        if workers is not None:
            workers.kill()
        raise


def _merge(summary: dict[str, Any], child: dict[str, Any]) -> None:
    summary["runs"].extend(child.get("runs", []))
    for asset, recs in (child.get("assets") or {}).items():
        summary["assets"].setdefault(asset, []).extend(recs)
    summary["notes"].extend(child.get("notes", []))


def serve_seeds(args: argparse.Namespace, pf: Any) -> int:
    """`run --worker`: make the seeds read from stdin, one at a time, one summary line each on
    stdout (WORKER_RESULT + JSON); ends at EOF. Everything else this process writes to its
    stdout (Python or C) goes to its stderr, so the summaries are the only stdout lines."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    instance = local_instance()
    for line in sys.stdin:
        if not line.strip():
            continue
        seed = int(line)
        print(WORKER_SEED + str(seed), file=sys.stderr, flush=True)
        try:
            child = run_partitions(
                pf.params.name,
                [seed],
                instance=instance,
                log_level="DEBUG" if args.verbose else None,
                seed_only=True,
                expect_params_hash=args.expect_params_hash,
            )
        except RunFailed as e:
            child = e.summary
        except Exception as e:  # noqa: BLE001 - the parent reports it as this seed's failure
            child = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        protocol.write(WORKER_RESULT + json.dumps(child, default=str) + "\n")
        protocol.flush()
    return EXIT_OK


@dataclass
class _WriterState:
    since: float
    waited_for: dict | None = None
    stale: dict | None = None


@contextlib.contextmanager
def partition_writer(folder: Path, pkey: str) -> Iterator[_WriterState]:
    """Hold `<partition folder>/.partition.lock` (pid + host) while a job makes the partition.
    A second `l5assets run` of the same partition waits (printing who holds it), up to
    L5ASSETS_LOCK_WAIT_S (default a day); a lock of a dead holder is taken over."""
    import time

    from l5assets.storage import exclusive_lock

    since = time.time()
    with exclusive_lock(
        Path(folder) / ".partition.lock",
        f"partition {pkey}",
        wait=True,
        timeout_s=LOCK_WAIT_S,
        on_wait=lambda msg: print(f"note: {msg}", file=sys.stderr, flush=True),
    ) as st:
        yield _WriterState(since, st.waited_for, st.stale)


def _made_by_other(
    folder: Path, job_name: str, params_hash: str, since: float, holder_pid: int | None = None
) -> bool:
    """Whether every asset of a job's level was written into `folder` from these params by the
    run we waited for: after `since` (when we began to wait), or by the holder's process
    (`run.pid` of the manifest is `holder_pid`: it may have written some before we came)."""
    import json

    from l5assets import graph as G

    level = "param_set" if job_name == "cell_job" else "seed"
    names = [n.name for n in G.ASSETS if n.level == level]
    for name in names:
        m = Path(folder) / name / "manifest.json"
        try:
            data = json.loads(m.read_text())
        except (OSError, ValueError):
            return False
        by_holder = holder_pid is not None and (data.get("run") or {}).get("pid") == holder_pid
        if not (by_holder or m.stat().st_mtime >= since):
            return False
        if (data.get("params") or {}).get("hash") != params_hash:
            return False
    return bool(names)


def _format_run(summary: dict[str, Any]) -> str:
    lines = [
        f"param set {summary['param_set']} (params hash {summary['params_hash'][:12]}), "
        f"seeds {summary['seeds']}",
        f"dagster home: {summary['dagster_home']}",
        f"storage root: {summary['storage_root']}",
    ]
    for asset, recs in summary["assets"].items():
        for r in recs:
            lines.append(f"{asset} [{r['partition_key']}]")
            for name, p in r["paths"].items():
                if not name.startswith("input:"):
                    lines.append(f"    {name}: {p}")
    summaries = summary["assets"].get("simulation_summary", [])

    def num(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)  # ISI CV is None below 3 spikes

    for r in summaries:
        m = r["metadata"]
        lines.append(
            f"seed {r['seed']}: cell {m.get('n_cell_spikes')} spikes, "
            f"{num(m.get('firing_rate_hz'), '.2f')} Hz, ISI CV {num(m.get('isi_cv'), '.3f')}, "
            f"mean soma V {num(m.get('soma_v_mean_mv'), '.2f')} mV"
            + (
                f", dendritic Ca2+ spikes {m['dend_ca_spikes']} "
                f"({num(m.get('dend_ca_spike_rate_hz'), '.2f')} Hz at "
                f"{num(m.get('dend_ca_site_um'), '.0f')} um)"
                if "dend_ca_spikes" in m
                else ""
            )
        )
    return "\n".join(lines)


def run_preflight(args: argparse.Namespace) -> Any:
    """Every check of `run` before anything is written or recorded (PreflightError); once
    they pass, the morphology NEURON read is recorded in the compile cache."""
    from l5assets import paths
    from l5assets.preflight import check_folder, preflight

    for value, env, what in (
        (args.storage_root, "L5ASSETS_STORAGE_ROOT", "--storage-root"),
        (args.params_dir, "L5ASSETS_PARAMS_DIR", "--params-dir"),
    ):
        if value:
            os.environ[env] = str(check_folder(Path(value), what))
    from l5assets.defs.resources import DEFAULT_ENGINE, ENGINE_ENV
    from l5assets.preflight import check_engine

    if args.engine:
        engine = check_engine(args.engine, "run --engine")
    else:
        engine = check_engine(os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE, ENGINE_ENV)
    from l5assets.definitions import defs

    cell_model = defs.resources.get("cell_model")
    pf = preflight(
        args.param_set,
        args.seed,
        dagster_home=Path(os.environ.get("DAGSTER_HOME") or paths.dagster_home()),
        storage_root=paths.storage_root(),
        cache_dir=cell_model.cache_path() if cell_model is not None else None,
        params_dir=paths.params_dir(),
        mod_dir=cell_model.mod_path() if cell_model is not None else None,
    )
    if args.engine:  # every check passed: children of --jobs and the resources read it there
        os.environ[ENGINE_ENV] = engine
    from l5assets.preflight import record_morphology_ok

    record_morphology_ok(pf)
    return pf


def cmd_run(args: argparse.Namespace) -> int:
    from l5assets.params import ParamsError

    if args.jobs is not None and args.jobs < 1:
        print(f"error: run --jobs: must be an integer >= 1, got {args.jobs}", file=sys.stderr)
        return EXIT_USAGE
    try:
        pf = run_preflight(args)
        if args.worker:
            return serve_seeds(args, pf)
        summary = run_partitions(
            pf.params.name,
            pf.seeds,
            log_level="DEBUG" if args.verbose else None,
            jobs=args.jobs or os.cpu_count() or 1,
            seed_only=args.seed_only,
            expect_params_hash=args.expect_params_hash,
        )
    except ParamsError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        if args.json:
            _print_json(e.summary)  # still one object: what was done, "ok": false, "error"
        return EXIT_FAILED
    if args.json:
        _print_json(summary)
    else:
        print(_format_run(summary))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# validate-cell, trace, diff, status


def cmd_validate_cell(args: argparse.Namespace) -> int:
    from l5assets.cell import validation

    result = validation.validate_cell(
        args.cell,
        args.morphology,
        args.protocol or None,
        workers=args.workers,
        out_dir=args.out,
        dL=args.dL,
    )
    if args.json:
        _print_json(result)
    else:
        print(validation.format_validation(result))
    return EXIT_OK if result.get("passed") else EXIT_FAILED


def cmd_fit_cell(args: argparse.Namespace) -> int:
    from l5assets import paths
    from l5assets.cell import fit
    from l5assets.params import ParamsError

    fits_dir = Path(args.fits_dir) if args.fits_dir else paths.fits_dir()
    running = args.generations is not None or args.minutes is not None
    if not running and not args.export:
        raise ParamsError("give --stage S with --generations N and/or --minutes M (or --export)")
    if args.stage is not None and args.stage not in fit.STAGE_NAMES:
        raise ParamsError(
            f"--stage {args.stage}: not a stage, allowed: {', '.join(fit.STAGE_NAMES)}"
        )
    if args.stage is not None and not running:
        raise ParamsError(
            f"--stage {args.stage}: only with --generations or --minutes (--export writes "
            "the best of the stages that score every objective)"
        )
    if running:
        if args.stage is None:
            raise ParamsError(f"--stage: give one of {', '.join(fit.STAGE_NAMES)}")
        res = fit.run_stage(
            args.stage,
            fits_dir=fits_dir,
            generations=args.generations,
            minutes=args.minutes,
            offspring=args.offspring,
            seed=args.seed,
            workers=args.workers,
            log=lambda m: print(m, flush=True),
        )
        print(
            f"stage {args.stage}: generation {res['generation']}, best total score "
            f"{res['best']['total']:.2f}"
        )
    if args.export:
        cell = paths.cells_dir() / f"{fit.FIT_CELL}.json"
        record = fits_dir / f"{fit.FIT_CELL}.fit.json"
        rec = fit.export_fit(cell, record, seed=args.seed, fits_dir=fits_dir)
        print(f"wrote {cell} and {record} (total score {rec['total_score']:.2f})")
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from l5assets.lineage import trace as mod

    result = mod.trace(args.path)
    if args.json:
        _print_json(result)
    else:
        print(mod.format_trace(result))
    return EXIT_OK if result.get("consistent", True) else EXIT_FAILED


def cmd_diff(args: argparse.Namespace) -> int:
    from l5assets.lineage import diff as mod

    result = mod.diff(args.a, args.b)
    if args.json:
        _print_json(result)
    else:
        print(mod.format_diff(result, verbose=args.verbose))
    return EXIT_OK


def sweep_points(args: argparse.Namespace) -> tuple[list[Any], list[int]]:
    """The sweep's grid points (params files written) and seeds; ParamsError before any write."""
    from l5assets import paths, sweep
    from l5assets.params import load_param_set
    from l5assets.preflight import check_folder

    if args.params_dir:
        os.environ["L5ASSETS_PARAMS_DIR"] = str(check_folder(Path(args.params_dir), "--params-dir"))
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"sweep --jobs: must be an integer >= 1, got {args.jobs}")
    base = load_param_set(args.base)
    points = sweep.grid(base.name, base.raw, args.set or [])
    seeds = sweep.parse_seeds(args.seeds)
    if args.launch in ("local", "daemon"):  # what `run` checks before anything is written
        from l5assets.defs.resources import DEFAULT_ENGINE, ENGINE_ENV
        from l5assets.preflight import check_engine

        check_engine(os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE, ENGINE_ENV)
    sweep.write_grid(points, paths.params_dir())
    return points, seeds


def _launch_backfill(names: Sequence[str], seeds: Sequence[int]) -> str:
    """seed_job over every (param set, seed) as a Dagster backfill (the daemon runs it)."""
    import subprocess

    from l5assets import paths
    from l5assets.defs.partitions import run_partition_key

    keys = [str(run_partition_key(n, s)) for n in names for s in seeds]
    said = []
    # one backfill per chunk of partitions: one command-line argument holds at most 128 KB
    for i in range(0, len(keys), BACKFILL_CHUNK):
        cmd = [sys.executable, "-m", "dagster", "job", "backfill", "-w", "workspace.yaml"]
        cmd += ["-j", "seed_job", "--partitions", ",".join(keys[i : i + BACKFILL_CHUNK])]
        proc = subprocess.run(
            [*cmd, "--noprompt"], cwd=paths.PROJECT_ROOT, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RunFailed(f"dagster job backfill failed: {proc.stderr.strip()[-500:]}", {})
        said += [ln for ln in proc.stdout.splitlines() if "backfill" in ln.lower()]
    return "\n".join(said)


BACKFILL_CHUNK = 500  # partitions per `dagster job backfill` (keys of <= ~230 characters)


def _cross_seed_summaries(defs: Any, instance: Any, names: Sequence[str], out: dict) -> None:
    """Materialize each param set's cross_seed_summary; its key figures into `out`."""
    summaries = out["cross_seed_summary"] = {}
    keep = ("n_seeds", "seeds", "firing_rate_hz_mean", "firing_rate_hz_sd", "path_table")
    for name in names:
        res = defs.resolve_job_def("cross_seed_job").execute_in_process(
            instance=instance, partition_key=name, raise_on_error=False
        )
        if not res.success:
            raise RunFailed(f"cross_seed_summary {name} failed (run {res.run_id})", out)
        mat = res.get_asset_materialization_events()[0].materialization
        summaries[name] = {k: getattr(v, "value", v) for k, v in mat.metadata.items() if k in keep}


def cmd_sweep(args: argparse.Namespace) -> int:
    from l5assets.params import ParamsError

    try:
        points, seeds = sweep_points(args)
    except (ParamsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    names = [p.name for p in points]
    from l5assets.definitions import defs
    from l5assets.defs.partitions import register_partitions

    instance = local_instance()
    register_partitions(instance, names, seeds)
    out: dict[str, Any] = {"ok": True, "param_sets": names, "seeds": seeds, "launch": args.launch}
    try:
        if args.launch == "local":
            for name in names:
                run_partitions(
                    name, seeds, instance=instance, jobs=args.jobs or os.cpu_count() or 1
                )
        if args.launch in ("local", "summary"):
            _cross_seed_summaries(defs, instance, names, out)
        elif args.launch == "daemon":
            for name in names:  # the seed-independent assets first, in process
                res = defs.resolve_job_def("cell_job").execute_in_process(
                    instance=instance, partition_key=name, raise_on_error=False
                )
                if not res.success:
                    raise RunFailed(f"cell_job {name} failed (run {res.run_id})", out)
            out["backfill"] = _launch_backfill(names, seeds)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print_json(out)
    else:
        print(f"{len(names)} param sets x {len(seeds)} seeds: {', '.join(names)}")
        for name, s in out.get("cross_seed_summary", {}).items():
            print(
                f"  {name}: {s['n_seeds']} seeds, firing rate {s['firing_rate_hz_mean']:.2f}"
                f" Hz (sd {s['firing_rate_hz_sd'] or 0:.2f}); table {s['path_table']}"
            )
        if "backfill" in out:
            print(out["backfill"])
    return EXIT_OK


def cmd_instance_init(args: argparse.Namespace) -> int:
    from l5assets.defs.instance import InstanceConfigError, PostgresStorage, init_instance

    try:
        path = init_instance(args.home, postgres=args.postgres, slots=args.slots, force=args.force)
    except InstanceConfigError as e:  # bad input: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}")
    if args.postgres:
        pg = PostgresStorage.from_url(args.postgres if isinstance(args.postgres, str) else None)
        print(f"Dagster's processes need: {', '.join(pg.env_vars())} (DAGSTER_HOME={path.parent})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from l5assets.lineage import status as mod
    from l5assets.params import validate_param_set_name

    param_sets = [validate_param_set_name(p) for p in args.param_set or []] or None
    if args.no_dagster:
        rows = mod.status(param_sets=param_sets, with_dagster_status=False, verify=args.verify)
    else:
        from l5assets.definitions import defs
        from l5assets.defs.lineage.status import status

        instance = local_instance(create=False)  # a query: never creates a Dagster home
        cell_model = defs.resources.get("cell_model")
        mod_dir = cell_model.mod_path() if cell_model is not None else None
        rows = status(
            instance,
            defs,
            param_sets=param_sets,
            mod_dir=mod_dir,
            verify=args.verify,
            cache_dir=cell_model.cache_path() if cell_model is not None else None,
        )
    if args.json:
        _print_json(rows)
    else:
        print(mod.format_status(rows, verbose=args.verbose))
    return EXIT_OK


# --------------------------------------------------------------------------------------------


TOOL_DESCRIPTION = (
    "l5assets: a detailed layer-5b pyramidal cell (Hay et al. 2011 family) driven by ~5,000 "
    "clustered excitatory inputs plus PV+/SOM+ inhibition, built with BMTK and simulated in "
    "NEURON, as Dagster software-defined assets partitioned by param set and seed. Every "
    "output is traceable to the params file and seed that made it (`trace`, `diff`, `status`); "
    "the same pipeline runs from this command or from the Dagster UI (`dagster dev`)."
)


def _param_sets_epilog() -> str:
    """The param sets the params folder holds now (for `run --help`)."""
    from l5assets import paths
    from l5assets.params import is_param_set_name

    try:
        folder = paths.params_dir()
        names = sorted(p.stem for p in folder.glob("*.json") if is_param_set_name(p.stem))
    except OSError:
        return ""
    listed = ", ".join(names) if names else "(none)"
    return f"param sets in {folder}: {listed}"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="l5assets", description=TOOL_DESCRIPTION)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="materialize the whole graph for a param set and seeds",
        description=(
            "Validate the param set and seeds, register them as dynamic partitions, observe the "
            "params file, then materialize with the in-process executor: one `cell_job` run for "
            "the param set, then one `seed_job` run per seed, in order (no backfill daemon "
            "needed). The instance is DAGSTER_HOME's, else an embedded SQLite one under data/."
        ),
        epilog=_param_sets_epilog(),
    )
    run.add_argument("--param-set", required=True, help="name of a JSON file in the params dir")
    run.add_argument(
        "--seed",
        required=True,
        action="append",
        help="integer seed; repeat for several (one run per seed)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="seed partitions simulated at once, each in its own process (default: one per core)",
    )
    # the seed partitions only (a `--jobs` worker's runs): the param-set level exists already
    run.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    # a worker of `--jobs`: makes the seeds it reads from stdin (see SeedWorkers)
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--expect-params-hash", default=None, help=argparse.SUPPRESS)
    run.add_argument(
        "--engine",
        default=None,
        help="simulation engine: coreneuron (the project's driver in CoreNEURON, default), "
        "neuron (the driver in NEURON), bionet (BMTK BioNet) (default: L5ASSETS_ENGINE, else "
        "coreneuron)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    run.add_argument(
        "--storage-root", help="where outputs go (default: L5ASSETS_STORAGE_ROOT or data/outputs)"
    )
    run.add_argument(
        "--params-dir", help="param set folder (default: L5ASSETS_PARAMS_DIR or data/params)"
    )
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate-cell", help="run the cell validation protocols")
    val.add_argument(
        "--cell", default="L5PC_hay_C060114A7", help="biophysics name (default L5PC_hay_C060114A7)"
    )
    val.add_argument("--morphology", default=None, help="morphology file (default: the cell's)")
    val.add_argument("--protocol", action="append", help="protocol to run (repeat; default all)")
    val.add_argument(
        "--workers",
        type=int,
        default=None,
        help="NEURON processes run in parallel (default: one per core)",
    )
    val.add_argument(
        "--dL",
        type=float,
        default=20.0,
        help="segment length rule (um): 20 = Hay's nseg 1 + 2*int(L/40) (default); 5 = the study's",
    )
    val.add_argument("--out", default=None, help="folder for traces, plots, validation.json")
    val.add_argument("--json", action="store_true", help="print the result as JSON")
    val.set_defaults(func=cmd_validate_cell)

    fc = sub.add_parser(
        "fit-cell",
        help="fit the default cell to Hay 2011's targets (resumable, in stages)",
        description="BluePyOpt CMA-ES fit of L5PC_hay_C060114A7 from Hay's biophys3 values, in "
        "stages: 'soma' (the somatic channels, apical ones at Hay's values), then 'apical' (hot "
        "zone, apical and passive parameters, soma at the soma stage's best), 'joint' (all "
        "parameters, from the apical stage's best), then 'polish' (planned steps by linear "
        "programming on finite differences, from the best of those). Each stage "
        "continues from its checkpoint in --fits-dir if there is one; stops after "
        "--generations more generations or once --minutes have passed (checked after each "
        "generation).",
    )
    fc.add_argument("--stage", default=None, help="soma, apical, joint or polish")
    fc.add_argument(
        "--fits-dir",
        default=None,
        help="checkpoints and fit record (default biophys_components/fits/, committed: a "
        "fresh clone resumes them)",
    )
    fc.add_argument(
        "--generations",
        type=int,
        default=None,
        help="CMA-ES generations to run (polish: batches of evaluations, one per core)",
    )
    fc.add_argument("--minutes", type=float, default=None)
    fc.add_argument("--offspring", type=int, default=12, help="CMA-ES lambda (default 12)")
    fc.add_argument("--seed", type=int, default=1)
    fc.add_argument("--workers", type=int, default=None, help="default: one per core")
    fc.add_argument(
        "--export",
        action="store_true",
        help="write the best individual of the stages that score every objective as the "
        "biophysics file + fit record",
    )
    fc.set_defaults(func=cmd_fit_cell)

    tr = sub.add_parser("trace", help="walk an output back to its params file and seed")
    tr.add_argument("path")
    tr.add_argument("--json", action="store_true")
    tr.add_argument("--verbose", action="store_true", help="tracebacks for errors")
    tr.set_defaults(func=cmd_trace)

    df = sub.add_parser("diff", help="what differs between the provenance of two outputs")
    df.add_argument("a")
    df.add_argument("b")
    df.add_argument("--json", action="store_true")
    df.add_argument("--verbose", action="store_true")
    df.set_defaults(func=cmd_diff)

    st = sub.add_parser("status", help="which partitions are missing, fresh or stale")
    st.add_argument("--param-set", action="append", help="restrict to these param sets")
    st.add_argument("--json", action="store_true")
    st.add_argument("--verbose", action="store_true")
    st.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every recorded output against its manifest (sizes are always checked)",
    )
    st.add_argument(
        "--no-dagster",
        action="store_true",
        help="files and manifests only: do not open the Dagster instance",
    )
    st.set_defaults(func=cmd_status)

    sw = sub.add_parser(
        "sweep",
        help="a grid of param sets from a base x seeds: params files, runs, cross-seed summary",
        description="Write one validated params file per grid point (the cartesian product of "
        "the --set values; names <base>__<field>-<value>, see l5assets/sweep.py), register the "
        "partitions and launch them: locally (like `run --jobs`, then each param set's "
        "cross_seed_summary), as a Dagster backfill of seed_job for the daemon, or not at all.",
    )
    sw.add_argument("--base", required=True, help="the param set the grid changes")
    sw.add_argument(
        "--set",
        action="append",
        metavar="FIELD=V1,V2",
        help="a dotted field of the params JSON and its values (repeat for more axes)",
    )
    sw.add_argument("--seeds", required=True, help="e.g. 1-100, 1,2,5 or 1-3,7")
    sw.add_argument(
        "--launch",
        choices=("local", "daemon", "summary", "none"),
        default="local",
        help="local: run here, then the cross-seed summaries (default); daemon: a backfill "
        "for the daemon; summary: only the cross-seed summaries (after a daemon sweep); "
        "none: write and register only",
    )
    sw.add_argument("--jobs", type=int, default=None, help="local: seeds at once (default: cores)")
    sw.add_argument(
        "--params-dir", default=None, help="default: L5ASSETS_PARAMS_DIR or data/params"
    )
    sw.add_argument("--json", action="store_true", help="print one JSON object")
    sw.set_defaults(func=cmd_sweep)

    inst = sub.add_parser("instance", help="the Dagster instance (its dagster.yaml)")
    inst_sub = inst.add_subparsers(dest="instance_command", required=True)
    ini = inst_sub.add_parser(
        "init",
        help="write DAGSTER_HOME/dagster.yaml: telemetry off, run queue, the neuron pool",
        description="Write the instance's dagster.yaml (l5assets/defs/instance.py): telemetry "
        "off, the QueuedRunCoordinator, the `neuron` pool limit; with --postgres, run, "
        "event-log and schedule storage on PostgreSQL, the password (and every connection "
        "field the URL leaves out) read from L5ASSETS_PG_HOST, L5ASSETS_PG_PORT, "
        "L5ASSETS_PG_USER, L5ASSETS_PG_PASSWORD, L5ASSETS_PG_DB when Dagster opens it.",
    )
    ini.add_argument("--home", default=None, help="default: DAGSTER_HOME, else data/dagster_home")
    ini.add_argument(
        "--postgres",
        nargs="?",
        const=True,
        default=False,
        metavar="URL",
        help="storage on PostgreSQL; URL (optional): postgresql+psycopg2://[user@]host[:port]/db",
    )
    ini.add_argument("--slots", default=None, help="neuron pool limit (default: one per core)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing dagster.yaml")
    ini.set_defaults(func=cmd_instance_init)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    usage_errors = _usage_errors()
    # Dagster's beta/preview notices about APIs the project chose are noise on a console.
    warnings.filterwarnings("ignore", message=r".*(beta|preview).*")
    verbose = bool(getattr(args, "verbose", False))
    _terminate_as_interrupt()
    try:
        return args.func(args)
    except usage_errors as e:
        if verbose:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `l5assets diff a b | head`
        sys.stdout = open(os.devnull, "w")  # silence the flush at exit
        return EXIT_OK
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the user; --verbose for the traceback
        if verbose:
            traceback.print_exc()
        print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        if not verbose:
            print("(run again with --verbose for the traceback)", file=sys.stderr)
        return EXIT_FAILED


def _one_line(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _terminate_as_interrupt() -> None:
    """SIGTERM (a cancelled job, `kill`) unwinds like Ctrl-C: the running step ends its
    worker's process group and removes its temp folder, the run is recorded as failed."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, handler)


def entry() -> None:
    """The `l5assets` command: `main`, then exit without the interpreter's last garbage
    collection over Dagster's ~400k objects (1.3 s of every command; atexit handlers and
    open files are handled as usual)."""
    import gc

    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
