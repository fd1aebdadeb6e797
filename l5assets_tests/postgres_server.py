"""A real PostgreSQL 15 server for the shared-instance tests (Debian's, from
scripts/install-system-packages).

`postgres_server` (session scope) runs `initdb` and `pg_ctl` as the `postgres` OS user (the
server refuses to run as root) on a data folder in a fresh temp folder that user owns,
listening on a free loopback port only (its socket in that folder too), and stops it after
the session. The superuser `postgres` connects over the socket without a password (trust);
`new_database` makes a database owned by a user with a password, reached over TCP, and
returns the `L5ASSETS_PG_*` environment a Dagster process needs to open it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster_server import free_port

from l5assets.defs.instance import PG_ENV

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # the OS user Debian's package creates
START_S = 60


def _as_postgres(cmd: list[str]) -> list[str]:
    """`cmd` as the postgres OS user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PostgresServer:
    """A running server: its port, socket folder and log."""

    port: int
    socket_dir: Path
    log: Path

    def sql(self, statement: str, db: str = "postgres") -> None:
        """Run one statement as the superuser (autocommit: CREATE DATABASE needs it)."""
        import psycopg2

        conn = psycopg2.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=db
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def new_database(self, name: str) -> dict[str, str]:
        """A database `name` owned by a new user `name` with a random password; the
        environment (`PG_ENV`'s variables) that reaches it over TCP on 127.0.0.1."""
        password = secrets.token_urlsafe(12)
        self.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        self.sql(f"CREATE DATABASE {name} OWNER {name}")
        values = {
            "hostname": "127.0.0.1",
            "port": str(self.port),
            "username": name,
            "password": password,
            "db_name": name,
        }
        return {PG_ENV[k]: v for k, v in values.items()}


def _run(cmd: list[str], what: str) -> None:
    res = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=START_S)
    if res.returncode != 0:
        raise RuntimeError(f"{what} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """PostgreSQL 15 on a free loopback port for the test session (stopped after)."""
    if not (PG_BIN / "initdb").is_file():
        raise RuntimeError(f"no {PG_BIN}/initdb: run scripts/install-system-packages")
    # /tmp itself, not pytest's tmp folders: those are root-only (0700), postgres can't enter
    root = Path(tempfile.mkdtemp(prefix="l5assets-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    data, log = root / "data", root / "server.log"
    _run(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        + ["--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"],
        "initdb",
    )
    port = free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
    pg_ctl = str(PG_BIN / "pg_ctl")
    _run(
        [pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", str(START_S), "start"],
        "pg_ctl start",
    )
    try:
        yield PostgresServer(port, root, log)
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=START_S,
        )
        shutil.rmtree(root, ignore_errors=True)
