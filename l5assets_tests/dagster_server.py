"""`dagster dev` (webserver + daemon) on a temporary instance, for the UI and daemon tests.

`prepared_instance` writes the project's dagster.yaml, a params folder with one small param
set, registers its partitions and materializes its seed-independent assets in process (the UI
launches one partitions definition at a time); `dagster_dev` starts the server in its own
process group (started from a non-interactive shell it would ignore SIGTERM otherwise) and
ends the whole group afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from conftest import small_params

from l5assets import paths
from l5assets.defs.instance import PostgresStorage, instance_yaml
from l5assets.defs.partitions import register_partitions

SERVER_START_S = 180  # code location import + webserver + daemon on a loaded 2-core machine


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `dagster dev` and the instance it serves."""

    url: str
    instance: dg.DagsterInstance
    log: Path
    storage_root: Path

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST one GraphQL request to the webserver (what the UI does); its `data`."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.loads(r.read())
        if out.get("errors"):
            raise AssertionError(f"GraphQL errors: {out['errors']}")
        return out["data"]

    def run_failure(self, run: dg.DagsterRun) -> str:
        """The run's step failures and the server log's end, for an assertion message."""
        events = self.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        failures = [
            f"{e.step_key}: {e.dagster_event.event_specific_data.error.message}" for e in events
        ]
        return "\n".join([*failures, self.log_tail()])


def wait_for_server(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Poll the webserver's /server_info until it answers; fail early if it exited."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not answer in {SERVER_START_S} s:\n{log.read_text()}")


def stop_group(proc: subprocess.Popen) -> None:
    """End dagster dev and everything it started (webserver, daemon, code servers, runs)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # dagster dev stops its children on SIGTERM
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        return
    proc.wait(timeout=10)


def prepared_instance(
    root: Path,
    param_set: str,
    seeds: Sequence[int],
    *,
    slots: int | None = None,
    postgres_env: dict[str, str] | None = None,
    **params: Any,
) -> tuple[dg.DagsterInstance, dict[str, str]]:
    """A fresh home under `root` with the project's dagster.yaml (`slots`: the neuron pool;
    `postgres_env`: storage on PostgreSQL, its `L5ASSETS_PG_*` variables), one small param
    set (`small_params(**params)`), its partitions registered and its seed-independent assets
    materialized; returns the instance and the environment (the credentials included)."""
    from l5assets.definitions import defs

    home, params_dir, storage = root / "dagster_home", root / "params", root / "outputs"
    home.mkdir()
    params_dir.mkdir()
    pg = PostgresStorage() if postgres_env is not None else None
    (home / "dagster.yaml").write_text(instance_yaml(slots, pg))
    (params_dir / f"{param_set}.json").write_text(json.dumps(small_params(**params), indent=1))
    env = {
        "DAGSTER_HOME": str(home),
        "L5ASSETS_PARAMS_DIR": str(params_dir),
        "L5ASSETS_STORAGE_ROOT": str(storage),
        "L5ASSETS_CACHE_DIR": str(paths.cache_dir()),  # reuse the compiled mechanisms
        **(postgres_env or {}),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        instance = dg.DagsterInstance.from_config(str(home))
        # registered before the UI opens: the Materialize dialog lists only known partitions
        register_partitions(instance, [param_set], seeds)
        cell = defs.resolve_job_def("cell_job").execute_in_process(
            instance=instance, partition_key=param_set
        )
        assert cell.success
    return instance, env


@contextmanager
def dagster_dev(instance: dg.DagsterInstance, env: dict[str, str], log: Path) -> Iterator[Server]:
    """`dagster dev -w workspace.yaml` on `instance` (environment `env`), its output in `log`."""
    with log.open("w") as out:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
            + ["-h", "127.0.0.1", "-p", str(port)],
            cwd=paths.PROJECT_ROOT,
            env=os.environ | env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_server(proc, url, log)
            yield Server(url, instance, log, Path(env["L5ASSETS_STORAGE_ROOT"]))
        finally:
            stop_group(proc)
            instance.dispose()
