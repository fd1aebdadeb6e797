"""The repository passes `ruff check` (with complexity <= 15) and `ruff format --check`: CI
runs the README's test command, so this is where both are enforced."""

import subprocess
import sys

import pytest

from l5assets import paths


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=paths.PROJECT_ROOT,
    )


@pytest.mark.parametrize("command", [("check",), ("format", "--check")], ids=" ".join)
def test_ruff(command: tuple[str, ...]) -> None:
    out = _ruff(*command)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
