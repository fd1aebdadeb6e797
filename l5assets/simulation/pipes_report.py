"""The simulation runner under Dagster Pipes: what a SLURM job runs.

    python -m l5assets.simulation.pipes_report RUNNER-ARGS...
    python -m l5assets.simulation.pipes_report --module MODULE ARGS...

starts `python -m l5assets.simulation.runner RUNNER-ARGS...` (unchanged: same process, same
outputs as a local run; or `python -m MODULE ARGS...`, e.g. the cell validation's
`l5assets.cell.validation.job`) and reports to the Dagster step that launched it through
`dagster_pipes.open_dagster_pipes()` (context and message files on the shared filesystem, named
by the DAGSTER_PIPES_* environment variables): the runner's stage lines and the main points of
its progress lines (`l5assets.simulation.progress`) as log messages, its other lines at debug
level, and at the end its result summary as a custom message (`result_message`). Every line is
also echoed to this process's stdout (the SLURM job's output file).

Only `dagster_pipes` is imported (the small protocol package, no Dagster): this module belongs to
the models layer. A SIGTERM (`scancel`) ends the runner too and closes the Pipes session with the
error, so the Dagster side sees why.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from l5assets.simulation.progress import ProgressMeter, log_line

RESULT_FILE = "result.json"
RUNNER = "l5assets.simulation.runner"
MESSAGE_KIND = "l5assets.simulation_result"
TAIL_LINES = 40
# result.json fields sent back (the counts the asset's metadata shows; the files stay on disk)
RESULT_FIELDS = (
    "engine",
    "seed",
    "spike_count",
    "n_synapses",
    "n_point_processes",
    "tstop_ms",
    "wall_seconds",
)
HEARTBEAT_ENV = "L5ASSETS_SLURM_HEARTBEAT"  # a file the step touches while it waits
SLURM_ENV = {"job_id": "SLURM_JOB_ID", "node": "SLURMD_NODENAME", "cpus": "SLURM_CPUS_ON_NODE"}


def _output_dir(argv: Sequence[str]) -> Path | None:
    args = list(argv)
    if "--output-dir" in args and args.index("--output-dir") + 1 < len(args):
        return Path(args[args.index("--output-dir") + 1])
    return None


def result_message(output_dir: Path | None, returncode: int) -> dict[str, Any]:
    """The custom message the job sends at the end: kind, the runner's exit code, the SLURM
    facts of the job (from its environment) and the result summary (if result.json exists)."""
    msg: dict[str, Any] = {
        "kind": MESSAGE_KIND,
        "returncode": int(returncode),
        "slurm": {k: os.environ[v] for k, v in SLURM_ENV.items() if v in os.environ},
    }
    path = output_dir / RESULT_FILE if output_dir is not None else None
    if returncode == 0 and path is not None and path.exists():
        result = json.loads(path.read_text())
        msg["result"] = {k: result[k] for k in RESULT_FIELDS if k in result}
    return msg


def stop_process(proc: subprocess.Popen, wait_s: float = 10.0) -> None:
    """SIGTERM a child, SIGKILL it if it is still there after `wait_s`, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def watch_heartbeat(path: Path, timeout_s: float, on_stale: Any, poll_s: float = 5.0) -> None:
    """Call `on_stale()` once `path` (touched by the Dagster step while it waits for us) has
    not changed for `timeout_s` seconds: the step is gone without having cancelled the job.
    Changes are timed with this host's clock only (the file's host may be another)."""
    import threading
    import time

    def mtime() -> float | None:
        try:
            return path.stat().st_mtime
        except OSError:
            return None

    def loop() -> None:
        last, since = mtime(), time.monotonic()
        while True:
            time.sleep(poll_s)
            now = mtime()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > timeout_s:
                on_stale()
                return

    threading.Thread(target=loop, name="watch-heartbeat", daemon=True).start()


def _terminate(signum: int, _frame: Any) -> None:
    # scancel's SIGTERM: unwind, so the finally ends the runner and Pipes closes with the error
    raise SystemExit(128 + signum)


def run_runner(pipes: Any, argv: Sequence[str]) -> int:
    """Run the runner with `argv`, forwarding its output; returns its exit code (the runner is
    ended if this process is asked to stop)."""
    env = dict(os.environ)
    env["L5ASSETS_PARENT_PID"] = str(os.getpid())  # the runner exits if we die
    module, argv = RUNNER, list(argv)
    if argv[:1] == ["--module"]:  # another NEURON program of ours (e.g. a cell validation)
        module, argv = argv[1], argv[2:]
    cmd = [sys.executable, "-m", module, *argv]
    meter = ProgressMeter(label="NEURON run (SLURM)")
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    beat = os.environ.get(HEARTBEAT_ENV)
    if beat:

        def orphaned() -> None:
            print("the Dagster step stopped its heartbeat: ending the runner", flush=True)
            proc.kill()

        timeout = float(os.environ.get(HEARTBEAT_ENV + "_TIMEOUT") or 300.0)
        watch_heartbeat(Path(beat), timeout, orphaned)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)  # the job's output file keeps every line
            sys.stdout.flush()
            log_line(pipes.log, line, meter, tail)
        rc = proc.wait()
    finally:
        stop_process(proc)  # interrupted while reading: do not leave the runner behind
    if rc != 0:
        pipes.log.error(f"runner failed with exit code {rc}:\n" + "\n".join(tail))
    return rc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the runner under Pipes; the exit code is the runner's."""
    from dagster_pipes import open_dagster_pipes

    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    with open_dagster_pipes() as pipes:
        rc = run_runner(pipes, args)
        pipes.report_custom_message(result_message(_output_dir(args), rc))
    return rc


if __name__ == "__main__":
    sys.exit(main())
