"""The Dagster UI in a real browser (issue 8 item 4).

Starts `dagster dev` in its own process group on a temporary instance, storage root and params
folder (a small param set: the simulation takes seconds), then drives Debian's headless
Chromium with Playwright: opens `seed_job`'s asset graph, launches one `param_set|seed`
partition from the Materialize dialog, waits for the run, opens `simulation_summary`'s latest
materialization and checks that its inline plot is a rendered image.

The browser is required, not optional: without /usr/bin/chromium the test fails (the README's
test command and `.ci/run` install it). Screenshots go to `l5assets_tests/artifacts/` (or
`L5ASSETS_UI_ARTIFACTS`), also on failure.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from conftest import small_params
from playwright.sync_api import Page, sync_playwright

from l5assets import paths
from l5assets.cli import INSTANCE_YAML
from l5assets.definitions import defs
from l5assets.defs.partitions import register_partitions, run_partition_key
from l5assets.layout import SUMMARY_FIGURE

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own builds are not used
PS, SEED = "T_ui", 7
SERVER_START_S = 180  # code location import + webserver + daemon on a loaded 2-core machine
RUN_TIMEOUT_S = 600
UI_TIMEOUT_MS = 90_000  # React pages behind GraphQL polls: generous, the machine may be busy


def artifacts_dir() -> Path:
    """Where the screenshots and the server log go (created)."""
    d = Path(os.environ.get("L5ASSETS_UI_ARTIFACTS", Path(__file__).parent / "artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def clear_screenshots(d: Path) -> None:
    """Remove an earlier run's screenshots: a stale failure shot would mislead."""
    for f in d.glob("ui-*.png"):
        f.unlink()


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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`dagster dev` on a fresh instance whose param-set-level assets are already made.

    The UI launches `seed_job` only (one partitions definition per launch), so the
    seed-independent assets (compiled mechanisms from the shared cache, segments table) are
    materialized here first, in process, as `l5assets run` does before its seeds."""
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: `apt-get install -y chromium` (the README's test command "
        "and .ci/run install it)"
    )
    root = tmp_path_factory.mktemp("ui")
    home, params_dir, storage = root / "dagster_home", root / "params", root / "outputs"
    home.mkdir()
    params_dir.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    (params_dir / f"{PS}.json").write_text(json.dumps(small_params(), indent=1))
    env = {
        "DAGSTER_HOME": str(home),
        "L5ASSETS_PARAMS_DIR": str(params_dir),
        "L5ASSETS_STORAGE_ROOT": str(storage),
        "L5ASSETS_CACHE_DIR": str(paths.cache_dir()),  # reuse the compiled mechanisms
    }
    log = artifacts_dir() / "dagster-dev.log"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        instance = dg.DagsterInstance.from_config(str(home))
        # registered before the UI opens: the Materialize dialog lists only known partitions
        register_partitions(instance, [PS], [SEED])
        cell = defs.resolve_job_def("cell_job").execute_in_process(
            instance=instance, partition_key=PS
        )
        assert cell.success
        with log.open("w") as out:
            port = free_port()
            # own session: kill the whole group at the end; started from a non-interactive
            # shell dagster dev would otherwise ignore SIGTERM
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
                yield Server(url, instance, log, storage)
            finally:
                stop_group(proc)
                instance.dispose()


def launch_partition(page: Page, url: str, shots: Path) -> None:
    """seed_job's asset graph -> Materialize all -> pick PS and SEED -> Launch 1 run."""
    page.goto(f"{url}/locations/l5assets/jobs/seed_job")
    # the asset graph of the job: its groups are drawn as nodes (the first one is in view)
    page.get_by_text("inputs", exact=True).first.wait_for()
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Launch runs to materialize").wait_for()
    # one selector per dimension (param_set first, then seed); a picked one shows a tag
    # instead of its placeholder, so the first placeholder left is the next dimension's
    for key in (PS, str(SEED)):
        dialog.get_by_text("Select a partition or create one").first.click()
        page.get_by_role("menuitem").filter(has=page.get_by_text(key, exact=True)).first.click()
        page.keyboard.press("Escape")  # close the menu, keep the dialog
        page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    dialog.get_by_text("1 partition", exact=True).wait_for()
    page.screenshot(path=shots / "ui-1-materialize-dialog.png")
    dialog.get_by_role("button", name="Launch 1 run").click()
    dialog.wait_for(state="hidden")


def wait_for_run(server: Server, partition: str) -> dg.DagsterRun:
    """The UI-launched seed_job run of the partition, once finished (polls the instance)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    filters = dg.RunsFilter(job_name="seed_job", tags={"dagster/partition": partition})
    while time.monotonic() < deadline:
        runs = server.instance.get_runs(filters, limit=1)
        if runs and runs[0].is_finished:
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"seed_job {partition} not finished in {RUN_TIMEOUT_S} s")


def run_failure(server: Server, run: dg.DagsterRun) -> str:
    """The run's step failures and the server log's end, for the assertion message."""
    events = server.instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    failures = [
        f"{e.step_key}: {e.dagster_event.event_specific_data.error.message}" for e in events
    ]
    return "\n".join([*failures, server.log_tail()])


def open_plot(page: Page, url: str, run_id: str, shots: Path) -> dict:
    """simulation_summary -> Events (latest materialization) -> the `plot` entry's
    Markdown; returns the rendered image's properties."""
    page.goto(f"{url}/assets/simulation_summary")
    page.get_by_role("tab", name="Events").click()
    # the latest event is selected: it must be the UI's run
    page.get_by_text(f"materialized in run {run_id[:8]}").wait_for()
    row = page.get_by_role("row").filter(has=page.get_by_text("plot", exact=True))
    row.get_by_text("Show Markdown").click()
    img = page.get_by_role("dialog").locator("img").first
    img.wait_for()
    # wait for the decode: naturalWidth is 0 until the data URL is decoded
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=img.element_handle())
    page.screenshot(path=shots / "ui-2-simulation-summary-plot.png")
    return img.evaluate(
        "e => ({src: e.getAttribute('src').slice(0, 22), width: e.naturalWidth,"
        " height: e.naturalHeight, shown: e.getBoundingClientRect().width})"
    )


def test_ui_materialize_partition_and_see_the_plot(server: Server) -> None:
    shots = artifacts_dir()
    clear_screenshots(shots)
    print(f"UI test screenshots: {shots}")
    partition = str(run_partition_key(PS, SEED))
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(UI_TIMEOUT_MS)
        # Dagster's one-time "join the community" modal can cover any page: skip it whenever
        page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda b: b.click())
        try:
            launch_partition(page, server.url, shots)
            run = wait_for_run(server, partition)
            assert run.status == dg.DagsterRunStatus.SUCCESS, run_failure(server, run)
            assert run.tags.get("dagster/from_ui") == "true"
            img = open_plot(page, server.url, run.run_id, shots)
        except Exception:
            page.screenshot(path=shots / "ui-failure.png", full_page=True)
            print(f"failure screenshot: {shots / 'ui-failure.png'}\n{server.log_tail()}")
            raise
        finally:
            browser.close()
    assert img["src"] == "data:image/png;base64,", img
    assert img["width"] > 100 and img["height"] > 100 and img["shown"] > 0, img
    # the run wrote the full-size figure into the test's storage root
    folder = server.storage_root / PS / f"seed-{SEED}" / "simulation_summary"
    assert (folder / SUMMARY_FIGURE).stat().st_size > 0
    print(f"UI flow: {time.monotonic() - t0:.0f} s")
