"""`l5assets instance init` (issue 9 item 3): the dagster.yaml it writes, on SQLite and on a
real PostgreSQL server, and its one-line refusals of bad input."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from postgres_server import PostgresServer
from postgres_server import postgres_server_fixture as postgres_server_fixture  # noqa: F401

from l5assets import cli
from l5assets.defs.instance import NEURON_POOL, PG_DRIVER, PG_ENV


def _init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main(["instance", "init", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_init_sqlite_defaults_and_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    rc, out, _ = _init(capsys, "--home", str(home), "--slots", "3")
    assert rc == cli.EXIT_OK and str(home / "dagster.yaml") in out
    cfg = yaml.safe_load((home / "dagster.yaml").read_text())
    assert cfg["telemetry"] == {"enabled": False}
    assert cfg["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert cfg["concurrency"]["pools"] == {"granularity": "op", "default_limit": 3}
    assert "storage" not in cfg  # Dagster's SQLite default in the home

    # an existing file is kept without --force: one line naming it
    rc, _, err = _init(capsys, "--home", str(home), "--slots", "1")
    assert rc == cli.EXIT_USAGE
    assert err == f"error: {home / 'dagster.yaml'} exists: give --force to overwrite it\n"
    assert "default_limit: 3" in (home / "dagster.yaml").read_text()
    rc, _, _ = _init(capsys, "--home", str(home), "--slots", "1", "--force")
    assert rc == cli.EXIT_OK and "default_limit: 1" in (home / "dagster.yaml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slots", "0"], "error: --slots: '0', allowed: an integer >= 1"),
        (["--slots", "two"], "error: --slots: 'two', allowed: an integer >= 1"),
        (
            ["--postgres", "postgresql://lab@db/l5"],
            "error: --postgres: postgresql:// names no driver (SQLAlchemy 2.1 would use "
            f"psycopg 3, not installed, and the daemon fails): write {PG_DRIVER}:// instead",
        ),
        (
            ["--postgres", "postgresql+psycopg://db/l5"],
            f"error: --postgres: driver 'postgresql+psycopg', allowed: {PG_DRIVER}",
        ),
        (
            ["--postgres", f"{PG_DRIVER}://lab:secret@db/l5"],
            "error: --postgres: the URL holds a password; leave it out and set "
            f"{PG_ENV['password']}",
        ),
        (
            ["--postgres", f"{PG_DRIVER}://db:99999/l5"],
            "error: --postgres: port, allowed: an integer 1-65535",
        ),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    rc, out, err = _init(capsys, "--home", str(tmp_path / "home"), *args)
    assert (rc, out, err) == (cli.EXIT_USAGE, "", message + "\n")
    assert "secret" not in err
    assert not (tmp_path / "home").exists()  # checked before anything is written


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["instance", "init", "--bogus"])
    assert e.value.code == 2
    assert "error: unrecognized arguments: --bogus" in capsys.readouterr().err


def test_url_parts_are_written_the_password_is_not(tmp_path: Path, capsys) -> None:
    rc, out, _ = _init(
        capsys, "--home", str(tmp_path), "--postgres", f"{PG_DRIVER}://lab@db:6543/l5"
    )
    assert rc == cli.EXIT_OK and PG_ENV["password"] in out
    db = yaml.safe_load((tmp_path / "dagster.yaml").read_text())["storage"]["postgres"]
    assert db["postgres_db"] == {
        "hostname": "db",
        "port": 6543,
        "username": "lab",
        "password": {"env": PG_ENV["password"]},
        "db_name": "l5",
        "scheme": PG_DRIVER,
    }


def test_postgres_instance_loads_on_a_real_server(
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    postgres_server: PostgresServer,
) -> None:
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    rc, out, _ = _init(capsys, "--home", str(tmp_path), "--postgres", "--slots", "2")
    assert rc == cli.EXIT_OK
    assert all(var in out for var in PG_ENV.values())  # the variables it needs, named
    for k, v in postgres_server.new_database("l5_init").items():
        monkeypatch.setenv(k, v)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_storage.postgres_url.startswith(f"{PG_DRIVER}://l5_init:")
        assert instance.get_runs(limit=1) == []  # tables made on the server
        assert instance.event_log_storage.get_concurrency_info(NEURON_POOL).limit == 2
    finally:
        instance.dispose()
