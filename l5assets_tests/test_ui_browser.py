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

import os
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_server import Server, dagster_dev, prepared_instance
from playwright.sync_api import Page, sync_playwright

from l5assets.defs.partitions import run_partition_key
from l5assets.layout import SUMMARY_FIGURE

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright's own builds are not used
PS, SEED = "T_ui", 7
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`dagster dev` on a fresh instance whose param-set-level assets are already made.

    The UI launches `seed_job` only (one partitions definition per launch), so the
    seed-independent assets (compiled mechanisms from the shared cache, segments table) are
    materialized first, in process, as `l5assets run` does before its seeds."""
    assert CHROMIUM.is_file(), (
        f"{CHROMIUM} is missing: `apt-get install -y chromium` (the README's test command "
        "and .ci/run install it)"
    )
    instance, env = prepared_instance(tmp_path_factory.mktemp("ui"), PS, [SEED])
    with dagster_dev(instance, env, artifacts_dir() / "dagster-dev.log") as srv:
        yield srv


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
        page.add_locator_handler(
            page.get_by_role("button", name="Skip"),
            lambda b: b.dispatch_event("click"),  # the modal's own overlay can take a real click
        )
        try:
            launch_partition(page, server.url, shots)
            run = wait_for_run(server, partition)
            assert run.status == dg.DagsterRunStatus.SUCCESS, server.run_failure(run)
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
