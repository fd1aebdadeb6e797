"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

from l5assets import paths


def test_ci_runs_the_readme_test_command() -> None:
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    lines = (paths.PROJECT_ROOT / "scripts" / "test-command").read_text().splitlines()
    cmd = next(line for line in lines if line and not line.startswith("#"))
    assert f"\n{cmd}\n" in readme
    assert "scripts/test-command" in (paths.PROJECT_ROOT / ".ci" / "run").read_text()


def test_readme_main_command_runs_the_quick_param_set() -> None:
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    assert "l5assets run --param-set L5_quick --seed 123\n" in readme
    assert (paths.params_dir() / "L5_quick.json").is_file()
