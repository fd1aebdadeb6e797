"""Progress of a NEURON run, from the `L5PROGRESS <t_ms> <tstop_ms>` and `L5STAGE <text>` lines
the runner prints.

The parent process turns them into messages: a main one at every 10% of the run or every 30 s
(for the Dagster run log), and a frequent one at least every 5 s (for a terminal, which must
never stay silent long).
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import Any

PROGRESS_PREFIX = "L5PROGRESS"
STAGE_PREFIX = "L5STAGE"  # `L5STAGE <what the process does now>`
MAIN_EVERY_FRACTION = 0.1
MAIN_EVERY_S = 30.0
FREQUENT_EVERY_S = 5.0


def parse_progress(line: str) -> tuple[float, float] | None:
    """(t_ms, tstop_ms) of a progress line, else None."""
    if not line.startswith(PROGRESS_PREFIX + " "):
        return None
    parts = line.split()
    if len(parts) != 3:
        return None
    try:
        t, tstop = float(parts[1]), float(parts[2])
    except ValueError:
        return None
    return (t, tstop) if tstop > 0 else None


def parse_stage(line: str) -> str | None:
    """The text of a stage line, else None."""
    if not line.startswith(STAGE_PREFIX + " "):
        return None
    return line[len(STAGE_PREFIX) + 1 :].strip() or None


def log_line(log: Any, line: str, meter: ProgressMeter, tail: MutableSequence[str]) -> None:
    """Log one runner output line on `log` (a logger: `.info`, `.debug`): stage lines and the
    main progress points (every 10% or 30 s) at info, a terminal's extra points at debug, a
    quiet point not at all; any other line is appended to `tail` and logged at debug."""
    stage = parse_stage(line)
    if stage is not None:
        log.info(f"{meter.label}: {stage}")
        return
    point = parse_progress(line)
    if point is None:
        tail.append(line.rstrip())
        if tail[-1].strip():
            log.debug(tail[-1])
        return
    said = meter.update(*point)
    if said is not None:
        (log.info if said[0] == "main" else log.debug)(said[1])


def say_stage(text: str) -> None:
    """Print a stage line (from the simulation process)."""
    print(f"{STAGE_PREFIX} {text}", flush=True)


def progress_message(label: str, t: float, tstop: float, elapsed_s: float) -> str:
    """'<label>: 250/1000 ms simulated (25%), 12 s elapsed, ETA 36 s'."""
    frac = min(max(t / tstop, 0.0), 1.0)
    eta = elapsed_s * (1.0 - frac) / frac if frac > 0 else float("nan")
    eta_txt = f", ETA {eta:.0f} s" if frac < 1.0 and eta == eta else ""
    return (
        f"{label}: {t:.0f}/{tstop:.0f} ms simulated ({100.0 * frac:.0f}%), "
        f"{elapsed_s:.0f} s elapsed{eta_txt}"
    )


@dataclass
class ProgressMeter:
    """Decides which progress lines become messages (main or frequent) and formats them."""

    label: str = "NEURON run"
    clock: Callable[[], float] = time.monotonic
    start: float = field(default=-1.0)
    _last_main_frac: float = -1.0
    _last_main_t: float = -1.0
    _last_any_t: float = -1.0

    def update(self, t: float, tstop: float) -> tuple[str, str] | None:
        """('main' | 'frequent', message) for this progress point, or None (stay quiet)."""
        now = self.clock()
        if self.start < 0:
            self.start = self._last_main_t = self._last_any_t = now
        frac = t / tstop
        msg = progress_message(self.label, t, tstop, now - self.start)
        main = (
            frac >= 1.0
            or frac - max(self._last_main_frac, 0.0) >= MAIN_EVERY_FRACTION - 1e-9
            or now - self._last_main_t >= MAIN_EVERY_S
        )
        if main:
            self._last_main_frac, self._last_main_t, self._last_any_t = frac, now, now
            return "main", msg
        if now - self._last_any_t >= FREQUENT_EVERY_S:
            self._last_any_t = now
            return "frequent", msg
        return None
