"""The `l5assets run` terminal logger: one line as each asset starts and ends, progress
messages of long steps (mechanism compile, NEURON run), errors; nothing else.

Used only when a run's config names it (the CLI does); runs launched from the UI keep
Dagster's own console logger.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import dagster as dg

CLI_LOGGER = "l5assets_cli"
_PROGRESS_MARKS = ("NEURON run:", "compiling", "compiled mechanisms")


class _TerminalHandler(logging.Handler):
    """Turns Dagster's log records into short terminal lines."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.started: dict[str, float] = {}

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict):
            return
        step = meta.get("step_key") or ""
        part = (meta.get("job_tags") or {}).get("dagster/partition")
        where = f"{step} [{part}]" if part else step
        event = meta.get("dagster_event")
        kind = getattr(event, "event_type_value", None)
        if kind == "STEP_START":
            self.started[step] = time.monotonic()
            self._say(f"- {where}: started")
        elif kind == "STEP_SUCCESS":
            secs = time.monotonic() - self.started.pop(step, time.monotonic())
            self._say(f"- {where}: done in {secs:.1f} s")
        elif kind == "STEP_FAILURE":
            self._say(f"- {where}: FAILED")
        elif event is None:
            msg = str(meta.get("orig_message") or "")
            if msg.startswith(_PROGRESS_MARKS):
                self._say(f"  {where}: {msg}")
            elif record.levelno >= logging.WARNING:
                self._say(f"  {where}: {record.levelname.lower()}: {msg.splitlines()[0]}")


@dg.logger(description="Short terminal lines for `l5assets run` (asset start/end, progress).")
def cli_logger(init_context: Any) -> logging.Logger:
    """A logger writing to stderr: stdout stays free for `--json`."""
    log = logging.Logger(CLI_LOGGER, level=logging.DEBUG)
    log.addHandler(_TerminalHandler(sys.stderr))
    return log
