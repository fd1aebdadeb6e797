"""Progress of long work: the runner's progress/stage lines, the meter that throttles them,
`run_logged` turning them into Dagster log messages, and the CLI's terminal logger."""

from __future__ import annotations

import io
import logging
import sys
from types import SimpleNamespace

from l5assets.defs.cli_logger import _TerminalHandler
from l5assets.defs.common import run_logged
from l5assets.simulation import progress as P


def test_parse_progress_and_stage_lines():
    assert P.parse_progress("L5PROGRESS 250.000 1000.000\n") == (250.0, 1000.0)
    assert P.parse_progress("L5PROGRESS x 1000") is None
    assert P.parse_progress("L5PROGRESS 1 0") is None
    assert P.parse_progress("NEURON -- VERSION 9") is None
    assert P.parse_stage("L5STAGE placing synapses\n") == "placing synapses"
    assert P.parse_stage("L5PROGRESS 1 2") is None


def test_meter_says_every_tenth_or_30_s_and_something_every_5_s():
    now = [0.0]
    meter = P.ProgressMeter(clock=lambda: now[0])
    said = []
    for k in range(1, 101):  # 100 points, 1 s apart: 10% every 10 s
        now[0] = float(k)
        said.append(meter.update(10.0 * k, 1000.0))
    mains = [m for m in said if m and m[0] == "main"]
    frequent = [m for m in said if m and m[0] == "frequent"]
    assert len(mains) == 10  # every 10% up to 100%
    assert "1000/1000 ms simulated (100%)" in mains[-1][1] and "ETA" not in mains[-1][1]
    assert frequent and all("ETA" in m[1] for m in frequent)
    # never more than 5 s without a message
    times = [k + 1 for k, m in enumerate(said) if m]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= 5

    # a slow run: 1% per 10 s -> a main message every 30 s even without 10% progress
    now[0] = 0.0
    slow = P.ProgressMeter(clock=lambda: now[0])
    kinds = []
    for k in range(1, 8):
        now[0] = 10.0 * k
        kinds.append((slow.update(10.0 * k, 1000.0) or ("-",))[0])
    assert kinds.count("main") >= 2


def test_progress_message_eta():
    msg = P.progress_message("NEURON run", 250.0, 1000.0, 10.0)
    assert msg == "NEURON run: 250/1000 ms simulated (25%), 10 s elapsed, ETA 30 s"


class _Log:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def info(self, m: str) -> None:
        self.records.append(("info", m))

    def debug(self, m: str) -> None:
        self.records.append(("debug", m))


def test_run_logged_turns_progress_lines_into_messages_and_hides_the_command():
    script = (
        "print('L5STAGE building the cell', flush=True)\n"
        "print('some NEURON chatter', flush=True)\n"
        "for k in range(1, 21): print(f'L5PROGRESS {50.0 * k} 1000.0', flush=True)\n"
    )
    ctx = SimpleNamespace(log=_Log())
    tail = run_logged(ctx, [sys.executable, "-c", script], timeout_s=60)
    infos = [m for lvl, m in ctx.log.records if lvl == "info"]
    debugs = [m for lvl, m in ctx.log.records if lvl == "debug"]
    assert infos[0] == "NEURON run: building the cell"
    assert any("(100%)" in m for m in infos) and any("(50%)" in m for m in infos)
    assert not any(m.startswith("running: ") for m in infos)
    assert any(m.startswith("running: ") for m in debugs) and "some NEURON chatter" in debugs
    assert tail == ["some NEURON chatter"]  # progress lines are not kept as output


def _record(msg: str, event: object = None, step: str = "simulation_outputs") -> logging.LogRecord:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, msg, None, None)
    rec.dagster_meta = {
        "step_key": step,
        "job_tags": {"dagster/partition": "L5_quick|1"},
        "dagster_event": event,
        "orig_message": msg,
    }
    return rec


def test_terminal_logger_prints_asset_start_end_and_progress_only():
    out = io.StringIO()
    handler = _TerminalHandler(out)
    handler.emit(_record("", SimpleNamespace(event_type_value="STEP_START")))
    handler.emit(_record("Loaded input ...", SimpleNamespace(event_type_value="LOADED_INPUT")))
    handler.emit(_record("running: python -m l5assets.simulation.runner /tmp/x"))
    handler.emit(_record("NEURON run: 100/1000 ms simulated (10%), 1 s elapsed, ETA 9 s"))
    handler.emit(_record("", SimpleNamespace(event_type_value="STEP_SUCCESS")))
    lines = out.getvalue().splitlines()
    assert lines[0] == "- simulation_outputs [L5_quick|1]: started"
    assert lines[1] == (
        "  simulation_outputs [L5_quick|1]: NEURON run: 100/1000 ms simulated (10%), "
        "1 s elapsed, ETA 9 s"
    )
    assert lines[2].startswith("- simulation_outputs [L5_quick|1]: done in ")
    assert len(lines) == 3
