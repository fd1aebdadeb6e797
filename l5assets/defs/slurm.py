"""Running the simulation step as a SLURM job, through Dagster Pipes: `SlurmResource`.

The executor is chosen per instance: `SlurmResource.executor` ("local" | "slurm"), unset: the
environment variable L5ASSETS_SIMULATION_EXECUTOR, else "local" (the runner in a subprocess of
the step, `defs.common.run_logged`). On "slurm" the step

1. opens a Pipes session (`dg.open_pipes_session`) whose context file and message file lie in
   a per-job folder of the shared scratch folder (`dg.PipesFileContextInjector`,
   `dg.PipesFileMessageReader`),
2. writes a batch script that runs `python -m l5assets.simulation.pipes_report RUNNER-ARGS`
   (the unchanged runner, reporting through `dagster_pipes`) in the asset's temp folder, and
   submits it with `sbatch --parsable`,
3. polls `scontrol show job` (then `squeue -t all`) until the job ends, touching a heartbeat
   file the job watches (a job whose Dagster step vanished without a word ends itself),
4. `scancel`s the job if the step is interrupted (run terminated: DagsterExecutionInterruptedError,
   KeyboardInterrupt) or fails while it runs, and waits until SLURM says it ended, so nothing
   writes into the temp folder after the step.

The job's log lines, progress and result come back as Pipes messages; its job id goes into the
materialization's metadata (`slurm_job_id`) and the manifest. The scratch folder and the storage
root (and the interpreter, the checkout and the mechanism cache) must be on a filesystem the
compute nodes see at the same paths.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

EXECUTOR_ENV = "L5ASSETS_SIMULATION_EXECUTOR"
SCRATCH_ENV = "L5ASSETS_SLURM_SCRATCH"
EXECUTORS = ("local", "slurm")
DEFAULT_SCRATCH = ".slurm"  # under the storage root (a dot folder: no param set, never scanned)
HEARTBEAT_FILE = "heartbeat"
# https://slurm.schedmd.com/job_state_codes.html: the states a job does not leave
ENDED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
CANCEL_WAIT_S = 120.0  # scancel -> ended: SIGTERM, KillWait (30 s by default), SIGKILL


class SlurmError(RuntimeError):
    """sbatch refused the job, or the job did not complete (failed, cancelled, timed out)."""


@dataclass
class SlurmJob:
    """A finished SLURM job: id, final state, exit code, and what it reported through Pipes."""

    job_id: str
    state: str
    exit_code: int | None
    node: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    output: Path | None = None


class SlurmResource(dg.ConfigurableResource):
    """Where and how the simulation step runs: locally (default) or as a SLURM job.

    `executor`: "local" | "slurm"; unset: env L5ASSETS_SIMULATION_EXECUTOR, else "local".
    The sbatch options: `partition`, `account`, `time_limit` (`--time`, e.g. "02:00:00"),
    `cpus_per_task`, `memory` (`--mem`, e.g. "4G"), `extra_sbatch` (more options, one per item,
    e.g. "--qos=short"). `scratch_dir`: the shared folder of the jobs' Pipes files, scripts
    and output files; unset: env L5ASSETS_SLURM_SCRATCH, else `<storage root>/.slurm`.
    """

    executor: str | None = None
    partition: str | None = None
    account: str | None = None
    time_limit: str | None = None
    cpus_per_task: int = 1
    memory: str | None = None
    extra_sbatch: list[str] = []
    scratch_dir: str | None = None
    poll_interval_s: float = 2.0
    heartbeat_timeout_s: float = 300.0
    keep_job_files: bool = False

    def resolved_executor(self) -> str:
        """ "local" or "slurm" (the resource's field, else the environment variable)."""
        value = self.executor or os.environ.get(EXECUTOR_ENV) or "local"
        if value not in EXECUTORS:
            where = "SlurmResource.executor" if self.executor else EXECUTOR_ENV
            raise ValueError(f"{where}: {value!r}, allowed: {', '.join(EXECUTORS)}")
        return value

    @property
    def enabled(self) -> bool:
        """Whether the simulation runs on SLURM."""
        return self.resolved_executor() == "slurm"

    def scratch_path(self, storage_root: Path) -> Path:
        """The shared scratch folder (created)."""
        d = self.scratch_dir or os.environ.get(SCRATCH_ENV) or str(storage_root / DEFAULT_SCRATCH)
        path = Path(d)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sbatch_options(self, job_name: str, job_dir: Path, cwd: Path) -> list[str]:
        """The `#SBATCH` options of a job (the resource's, then `extra_sbatch`)."""
        opts = [
            f"--job-name={job_name}",
            f"--output={job_dir / 'slurm-%j.out'}",
            f"--chdir={cwd}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={self.cpus_per_task}",
        ]
        for flag, value in (
            ("--partition", self.partition),
            ("--account", self.account),
            ("--time", self.time_limit),
            ("--mem", self.memory),
        ):
            if value:
                opts.append(f"{flag}={value}")
        return opts + list(self.extra_sbatch)

    def batch_script(self, options: Sequence[str], command: Sequence[str]) -> str:
        """A bash batch script running `command` (exec'd: scancel's SIGTERM reaches it)."""
        lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in options)]
        lines += [
            "# written by l5assets (defs/slurm.py); the Pipes variables come from sbatch's env",
            "set -e",
            "unset L5ASSETS_PARENT_PID  # the submitting process is no parent here",
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1",
            "exec " + shlex.join(command),
            "",
        ]
        return "\n".join(lines)

    def run(
        self,
        context: dg.AssetExecutionContext,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        storage_root: Path,
        timeout_s: float,
    ) -> SlurmJob:
        """Run `command` (`python -m l5assets.simulation.pipes_report ...`) as one SLURM job
        under a Pipes session; returns the completed job, raises SlurmError otherwise."""
        job_dir = self.scratch_path(storage_root) / _job_folder_name(context)
        job_dir.mkdir(parents=True)
        with dg.open_pipes_session(
            context=context,
            context_injector=dg.PipesFileContextInjector(str(job_dir / "pipes_context.json")),
            message_reader=dg.PipesFileMessageReader(str(job_dir / "pipes_messages.jsonl")),
        ) as session:
            job_env = {
                **env,
                **session.get_bootstrap_env_vars(),
                "L5ASSETS_SLURM_HEARTBEAT": str(job_dir / HEARTBEAT_FILE),
                "L5ASSETS_SLURM_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout_s),
            }
            script = job_dir / "job.sh"
            name = f"l5-{context.asset_key.to_user_string()}"
            script.write_text(self.batch_script(self.sbatch_options(name, job_dir, cwd), command))
            with _heartbeat(job_dir / HEARTBEAT_FILE, self.poll_interval_s):
                job_id = submit(script, job_env)
                context.log.info(f"SLURM job {job_id} submitted ({script})")
                state, code = self._wait_or_cancel(context, job_id, timeout_s)
        job = _finished_job(job_id, state, code, session.get_custom_messages(), job_dir)
        if state != "COMPLETED" or job.exit_code not in (0, None):
            raise SlurmError(_failure_text(job))
        if not self.keep_job_files:
            shutil.rmtree(job_dir, ignore_errors=True)
        return job

    def _wait_or_cancel(
        self, context: dg.AssetExecutionContext, job_id: str, timeout_s: float
    ) -> tuple[str, int | None]:
        """Poll until the job ends; on any exit before that (the run terminated, a timeout)
        cancel it and wait until SLURM says it ended."""
        ended = False
        try:
            state, code = wait_for_job(job_id, self.poll_interval_s, timeout_s)
            ended = True
            return state, code
        finally:
            if not ended:
                context.log.warning(f"cancelling SLURM job {job_id} (scancel)")
                cancel_job(job_id)


def _job_folder_name(context: dg.AssetExecutionContext) -> str:
    run = str(getattr(context.run, "run_id", "norun"))[:8]
    partition = re.sub(r"[^A-Za-z0-9_-]+", "-", str(context.partition_key))
    return f"{run}-{partition}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _heartbeat(path: Path, interval_s: float) -> Iterator[None]:
    """Touch `path` every `interval_s` while the block runs (the job ends itself when the
    file stops changing: a step killed outright cannot scancel)."""
    stop = threading.Event()
    path.touch()

    def beat() -> None:
        while not stop.wait(interval_s):
            with contextlib.suppress(OSError):
                path.touch()

    thread = threading.Thread(target=beat, name="slurm-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s + 1)


def _slurm(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a SLURM client command; a hung one (controller unreachable) counts as failed."""
    try:
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=60, env=dict(env or os.environ)
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(cmd), 1, "", f"{cmd[0]}: timed out after 60 s")


PURGED = "PURGED"  # neither scontrol nor squeue knows the job id any more


def submit(script: Path, env: Mapping[str, str]) -> str:
    """`sbatch --parsable --export=ALL SCRIPT` with `env`; the job id."""
    out = _slurm(["sbatch", "--parsable", "--export=ALL", str(script)], env)
    if out.returncode != 0:
        raise SlurmError(f"sbatch {script}: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip().split(";")[0]  # "<id>[;<cluster>]"


def job_state(job_id: str) -> tuple[str, int | None]:
    """(JobState, exit code) of a job: `scontrol show job`, or `squeue -t all` once scontrol
    has forgotten it; (PURGED, None) if neither knows the id, ("", None) if SLURM did not
    answer (e.g. the controller is briefly unreachable)."""
    out = _slurm(["scontrol", "show", "job", "-o", job_id])
    if out.returncode == 0:
        fields = dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)
        code = fields.get("ExitCode", "")
        return fields.get("JobState", ""), int(code.split(":")[0]) if code[:1].isdigit() else None
    forgotten = "invalid job id" in (out.stderr + out.stdout).lower()
    sq = _slurm(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"])
    state = (sq.stdout.strip().split() or [""])[0] if sq.returncode == 0 else ""
    return (state or (PURGED if forgotten else "")), None


def wait_for_job(job_id: str, poll_s: float, timeout_s: float) -> tuple[str, int | None]:
    """Poll until the job is in an ended state; (state, exit code). Raises TimeoutError once
    the job has run for `timeout_s` (time PENDING in the queue does not count; the caller
    cancels). A job SLURM has forgotten (MinJobAge passed) counts as ended: the Pipes messages
    tell the outcome. No answer from SLURM (a controller outage) is polled through."""
    deadline: float | None = None
    purged = 0
    while True:
        state, code = job_state(job_id)
        base = state.split()[0] if state else ""
        if base in ENDED_STATES:
            return base, code
        purged = purged + 1 if base == PURGED else 0
        if purged >= 5:
            return "UNKNOWN", None
        if deadline is None and base not in ("", PURGED, "PENDING"):
            deadline = time.monotonic() + timeout_s  # the run limit starts when it runs
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"SLURM job {job_id} still {base or 'unknown'} after {timeout_s} s")
        time.sleep(poll_s)


def cancel_job(job_id: str, wait_s: float = CANCEL_WAIT_S) -> str:
    """`scancel` a job and wait until it ended (or `wait_s` passed); its last state."""
    _slurm(["scancel", job_id])
    deadline = time.monotonic() + wait_s
    state = ""
    while time.monotonic() < deadline:
        state, _ = job_state(job_id)
        if state == PURGED or (state and state.split()[0] in ENDED_STATES):
            break
        time.sleep(0.5)
    return state


def _finished_job(
    job_id: str, state: str, code: int | None, messages: Sequence[Any], job_dir: Path
) -> SlurmJob:
    """The job's record from SLURM's answer and the job's own result message."""
    msg = next(
        (m for m in messages if isinstance(m, dict) and m.get("kind", "").endswith("_result")),
        {},
    )
    if code is None and "returncode" in msg:
        code = int(msg["returncode"])
    if state == "UNKNOWN" and code == 0:
        state = "COMPLETED"  # purged from SLURM, but the job said it succeeded
    outputs = sorted(job_dir.glob(f"slurm-{job_id}.out"))
    return SlurmJob(
        job_id=job_id,
        state=state,
        exit_code=code,
        node=msg.get("slurm", {}).get("node"),
        result=dict(msg.get("result", {})),
        output=outputs[0] if outputs else None,
    )


def _failure_text(job: SlurmJob, lines: int = 30) -> str:
    tail = ""
    if job.output is not None and job.output.exists():
        tail = "\n".join(job.output.read_text(errors="replace").splitlines()[-lines:])
    return f"SLURM job {job.job_id}: {job.state}, exit code {job.exit_code}\n{tail}".rstrip()


def job_metadata(job: SlurmJob | None) -> dict[str, Any]:
    """Materialization metadata of the executor (the SLURM job id and node, if any); the
    manifest keeps them in its volatile "run" section (`lineage.manifest.RUN_KEYS`)."""
    if job is None:
        return {"executor": "local"}
    return {"executor": "slurm", "slurm_job_id": job.job_id, "slurm_node": job.node or ""}
