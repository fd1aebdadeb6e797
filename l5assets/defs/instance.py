"""The Dagster instance the project creates: its dagster.yaml and the `neuron` pool.

NEURON runs (the simulation and the cell validations) take a slot of the concurrency pool
`neuron`, so that a backfill of many seeds, from the UI or the daemon, never runs more
simulations at once than the machine has cores. The instance `l5assets run` creates (and
`instance_yaml` writes) has:

- telemetry off;
- the QueuedRunCoordinator (runs launched from the UI, schedules and backfills wait in the
  daemon's queue; `l5assets run` executes in process and does not pass through it);
- op-granularity pools with a default limit of one slot per core: `neuron` is the only pool.

Change the limit by editing `concurrency.pools.default_limit` in DAGSTER_HOME/dagster.yaml,
or for `neuron` alone with `dagster instance concurrency set neuron N` (an explicit limit
wins over the default).

A shared instance (`l5assets instance init --postgres`, `init_instance`) keeps its run,
event-log and schedule storage on PostgreSQL. The file holds no secret: the password (and,
unless given in a `--postgres URL`, the host, port, user and database) come from the
environment variables in `PG_ENV` when Dagster loads the file (`{env: VAR}`). The driver is
written into the file (`scheme: postgresql+psycopg2`): SQLAlchemy 2.1 reads a bare
`postgresql://` as psycopg 3, which is not installed, and the daemon then fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

NEURON_POOL = "neuron"
PG_DRIVER = "postgresql+psycopg2"  # psycopg2-binary comes with dagster-postgres
# Dagster's `postgres_db` field -> the environment variable it is read from
PG_ENV = {
    "hostname": "L5ASSETS_PG_HOST",
    "port": "L5ASSETS_PG_PORT",
    "username": "L5ASSETS_PG_USER",
    "password": "L5ASSETS_PG_PASSWORD",
    "db_name": "L5ASSETS_PG_DB",
}


class InstanceConfigError(ValueError):
    """Bad input for the instance's dagster.yaml (printed as one line, no traceback)."""


def neuron_slots() -> int:
    """Default size of the `neuron` pool: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def parse_slots(value: int | str | None) -> int:
    """The `neuron` pool limit from user input (None: one per core); InstanceConfigError
    unless an integer >= 1."""
    if value is None:
        return neuron_slots()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1 or str(n) != str(value).strip():
        raise InstanceConfigError(f"--slots: {value!r}, allowed: an integer >= 1")
    return n


@dataclass(frozen=True)
class PostgresStorage:
    """Where the shared instance's storages live: each `postgres_db` field (see `PG_ENV`) is
    either written into the file (`fixed`, from a `--postgres URL`) or read from its
    environment variable when Dagster loads the file. The password is always the latter."""

    fixed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_url(cls, url: str | None) -> PostgresStorage:
        """From `--postgres [URL]`: no URL, every field from the environment; else
        `postgresql+psycopg2://[user@]host[:port]/db` (parts left out: from the environment).
        A bare `postgresql://` URL, another driver or a password in the URL is refused."""
        if not url:
            return cls()
        scheme, sep, _ = url.partition("://")
        if not sep:
            raise InstanceConfigError(
                f"--postgres: not a URL (allowed: {PG_DRIVER}://[user@]host[:port]/db)"
            )
        if scheme in ("postgresql", "postgres"):
            raise InstanceConfigError(
                f"--postgres: {scheme}:// names no driver (SQLAlchemy 2.1 would use psycopg 3, "
                f"not installed, and the daemon fails): write {PG_DRIVER}:// instead"
            )
        if scheme != PG_DRIVER:
            raise InstanceConfigError(f"--postgres: driver {scheme!r}, allowed: {PG_DRIVER}")
        parts = urlsplit(url)
        if parts.password is not None:
            # the file would hold the secret: it stays in the environment
            raise InstanceConfigError(
                f"--postgres: the URL holds a password; leave it out and set {PG_ENV['password']}"
            )
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise InstanceConfigError("--postgres: port, allowed: an integer 1-65535")
        fixed = {
            "hostname": parts.hostname or "",
            "port": str(port or ""),
            "username": unquote(parts.username or ""),
            "db_name": unquote(parts.path.lstrip("/")),
        }
        if parts.query or parts.fragment or "/" in fixed["db_name"]:
            raise InstanceConfigError(
                f"--postgres: only {PG_DRIVER}://[user@]host[:port]/db is allowed "
                "(no query, no path after the database)"
            )
        return cls({k: v for k, v in fixed.items() if v})

    def env_vars(self) -> list[str]:
        """The environment variables Dagster's processes need to open the instance."""
        return [var for key, var in PG_ENV.items() if key not in self.fixed]

    def yaml(self) -> str:
        """The `storage:` section: run, event-log and schedule storage on PostgreSQL."""
        lines = ["storage:", "  postgres:", "    postgres_db:"]
        for key, var in PG_ENV.items():
            if key in self.fixed:
                value = self.fixed[key]
                lines.append(f"      {key}: {value if key == 'port' else _yaml_str(value)}")
            else:
                lines.append(f"      {key}: {{env: {var}}}")
        lines.append(f"      scheme: {PG_DRIVER}  # a bare postgresql:// would mean psycopg 3")
        return "\n".join(lines) + "\n"


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON's quoting is valid YAML)."""
    import json

    return json.dumps(value)


def instance_yaml(slots: int | None = None, postgres: PostgresStorage | None = None) -> str:
    """dagster.yaml of the instance the project creates (`slots`: the pool limit, default
    one per core; `postgres`: run, event-log and schedule storage on PostgreSQL, else
    Dagster's SQLite default in DAGSTER_HOME)."""
    n = parse_slots(slots)
    return (
        "# written by l5assets (l5assets/defs/instance.py)\n"
        "telemetry:\n"
        "  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "concurrency:\n"
        "  pools:\n"
        "    granularity: op\n"
        f"    default_limit: {n}  # the `{NEURON_POOL}` pool: NEURON runs at once\n"
        + (postgres.yaml() if postgres is not None else "")
    )


def init_instance(
    home: str | Path | None = None,
    *,
    postgres: bool | str = False,
    slots: int | str | None = None,
    force: bool = False,
) -> Path:
    """Write HOME/dagster.yaml (`home`: default DAGSTER_HOME, else the home `l5assets run`
    uses); `postgres`: True (every connection field from the environment) or a
    `postgresql+psycopg2://` URL. Refuses to replace an existing file unless `force`.
    Returns the file's path; InstanceConfigError (or PreflightError) on bad input."""
    from l5assets import paths
    from l5assets.preflight import check_folder
    from l5assets.storage import atomic_write_text

    # validated before anything is touched on disk
    pg = PostgresStorage.from_url(postgres if isinstance(postgres, str) else None)
    text = instance_yaml(parse_slots(slots), pg if postgres else None)
    folder = check_folder(Path(home) if home else paths.dagster_home(), "--home")
    target = folder / "dagster.yaml"
    if (target.exists() or target.is_symlink()) and not force:
        raise InstanceConfigError(f"{target} exists: give --force to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, text)
