"""The fit's last stage, `polish`: a minimax trust-region refinement by sequential linear
programming around the best candidate of the CMA-ES stages.

Why: the CMA-ES stages bring every qualitative target (BAC, Ca2+ train) to a pass, but
leave two features just outside 2 SD (the Ca2+ spike height and Hay's step 1). Their
samples move all 21 parameters at once, and on this cell a few per cent on any of several
parameters flips a qualitative target (a 10-point miss), so most samples near the best are
much worse than it. Measured here, the continuous features respond almost linearly to
15 % moves of one parameter at a time (a step planned on that linear model predicted the
three step frequencies within 0.1 Hz), so a step can be planned instead of sampled.

One iteration: finite differences of every continuous feature to each free parameter (one
evaluation per parameter, both cores), then a linear programme: the step (within a box
trust region and the parameters' bounds) that minimises the largest predicted score (plus
a twentieth of their sum), with guards keeping the continuous measures behind the
qualitative targets (the Ca2+ half widths against the 15 ms criterion, the train's peak
against -30 mV) on their side with a margin. The step is tried at full and reduced lengths
(one evaluation per core); the best candidate that lowers the merit (the largest score of
all objectives plus a twentieth of their sum: a failed qualitative target scores 10) is
accepted and the trust region grows, otherwise it shrinks and the programme is solved again.
After an accepted step the linear model is updated from the step itself (Broyden's rank-one
update: one batch instead of one evaluation per parameter); it is measured afresh after
REFRESH_AFTER accepted steps, after two rejected plans in a row on an updated model, and
before the polish may call itself converged (trust radius below RADIUS_MIN on a fresh model).

A parameter whose finite difference flips a qualitative target (its largest score jumps by
a qualitative miss) is re-measured at half the step, down to a quarter step; its move is then
capped at the largest step that did not flip, and a parameter that flips even at a quarter
step is held this iteration (on this cell the apical NaTa_t is knife-edged: +15 % turns the
bAP regenerative and fires the hot zone alone).

Coordinates: a conductance-like parameter moves in units of a factor 1.15 (log scale, so
small densities move relative to their size), the hot zone's start and length in units of
10 um. A parameter switched off (value below 1e-6 of its upper bound: the CMA-ES drove the
somatic K_Pst to ~0) stays off.

Deterministic (no random draws) and resumable: the state (current point, its measures, the
finite differences done so far, the trust radius, the history) is a JSON checkpoint written
atomically after every batch of evaluations, so a chunk can stop between any two batches.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from l5assets.cell.validation.features import CA_SPIKE_MIN_PEAK, CA_SPIKE_MIN_WIDTH

LOG_UNIT = math.log(1.15)  # one step of a conductance-like parameter: a factor 1.15
ZONE_UNIT_UM = 10.0  # one step of the hot zone's start or length
OFF_FRACTION = 1e-6  # a value below this fraction of its upper bound is "switched off"
RADIUS0 = 1.0  # initial trust radius (box, in steps)
RADIUS_MAX = 2.0
RADIUS_MIN = 0.05  # below it the polish has converged
SUM_WEIGHT = 0.05  # the merit: max score + SUM_WEIGHT * sum of scores
FLIP_JUMP = 5.0  # a finite difference whose largest score rises by this "flipped" a target
FD_MIN = 0.25  # the smallest finite-difference step tried (a parameter flipping at it stays)
REFRESH_AFTER = 4  # accepted steps on a Broyden-updated model before new finite differences
REFRESH_RADIUS = 0.25  # the trust radius (at least) on a freshly measured model
GUARD_MARGIN_MS = 1.5
GUARD_MARGIN_MV = 0.5


@dataclass(frozen=True)
class Guard:
    """A continuous measure that must stay on one side of a qualitative criterion's threshold
    (`upper`: stay below; `lower`: stay above), if it is on that side now."""

    feature: str
    upper: float | None = None
    lower: float | None = None


GUARDS: tuple[Guard, ...] = (
    Guard("ca_train.single.ca_half_width", upper=CA_SPIKE_MIN_WIDTH - GUARD_MARGIN_MS),
    Guard("ca_train.50Hz.ca_half_width", upper=CA_SPIKE_MIN_WIDTH - GUARD_MARGIN_MS),
    Guard("ca_train.120Hz.ca_half_width", lower=CA_SPIKE_MIN_WIDTH + GUARD_MARGIN_MS),
    Guard("ca_train.120Hz.ca_peak", lower=CA_SPIKE_MIN_PEAK + GUARD_MARGIN_MV),
    Guard("bac.soma_only.ca_half_width", upper=CA_SPIKE_MIN_WIDTH - GUARD_MARGIN_MS),
    Guard("bac.epsp_only.ca_half_width", upper=CA_SPIKE_MIN_WIDTH - GUARD_MARGIN_MS),
    Guard("bac.paired.ca_half_width", lower=CA_SPIKE_MIN_WIDTH + GUARD_MARGIN_MS),
)


def qualitative_guards(criteria: Sequence[tuple[str, float, str]]) -> list[Guard]:
    """Guards on the qualitative criteria themselves, halfway to the next value: (feature,
    value, kind) with kind "expect" (must equal value) or "at_least". Their finite
    differences are zero unless a step flips them; a rejected candidate that flipped one
    teaches the model where it lies."""
    out = []
    for feature, value, kind in criteria:
        lower = value - 0.5 if (kind == "at_least" or value > 0) else None
        upper = value + 0.5 if kind == "expect" else None
        out.append(Guard(feature, upper=upper, lower=lower))
    return out


@dataclass(frozen=True)
class Coordinate:
    """How one parameter moves: value = v0 * 1.15**u (log) or v0 + 10 um * u (zone)."""

    name: str
    log: bool
    lower: float
    upper: float

    def value(self, v0: float, u: float) -> float:
        v = v0 * math.exp(LOG_UNIT * u) if self.log else v0 + ZONE_UNIT_UM * u
        return min(self.upper, max(self.lower, v))

    def bounds(self, v0: float) -> tuple[float | None, float | None]:
        """The steps allowed from v0 by the parameter's bounds (None: unbounded)."""
        if self.log:
            lo = math.log(self.lower / v0) / LOG_UNIT if self.lower > 0 else None
            return lo, math.log(self.upper / v0) / LOG_UNIT
        return (self.lower - v0) / ZONE_UNIT_UM, (self.upper - v0) / ZONE_UNIT_UM


@dataclass(frozen=True)
class Target:
    """A continuous objective: |feature - mean| / sd."""

    name: str
    feature: str
    mean: float
    sd: float


def _num(m: dict[str, Any] | None, key: str) -> float | None:
    v = None if m is None else m.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def plan_step(
    jac: np.ndarray,
    f0: np.ndarray,
    targets: Sequence[Target],
    guard_jac: np.ndarray,
    g0: np.ndarray,
    guards: Sequence[Guard],
    box: Sequence[tuple[float, float]],
) -> np.ndarray | None:
    """The linear programme's step: minimise max_j t_j + SUM_WEIGHT * sum_j t_j with
    t_j >= |f0_j + jac_j u - mean_j| / sd_j, guards held (or, if violated now, not made
    worse), u within `box`. None if the programme has no solution."""
    from scipy.optimize import linprog

    n, m = jac.shape[1], len(targets)
    mu = np.array([t.mean for t in targets])
    sd = np.array([t.sd for t in targets])
    # variables: u (n), t (m), T (1)
    c = np.r_[np.zeros(n), SUM_WEIGHT * np.ones(m), 1.0]
    rows, rhs = [], []
    for j in range(m):
        r, e = jac[j] / sd[j], np.zeros(m)
        e[j] = -1.0
        rows += [np.r_[r, e, 0.0], np.r_[-r, e, 0.0]]
        rhs += [(mu[j] - f0[j]) / sd[j], -(mu[j] - f0[j]) / sd[j]]
        e2 = np.zeros(m)
        e2[j] = 1.0
        rows.append(np.r_[np.zeros(n), e2, -1.0])
        rhs.append(0.0)
    for k, g in enumerate(guards):
        row = guard_jac[k]
        if g.upper is not None:  # g0 + row.u <= upper (or <= g0 if already above)
            rows.append(np.r_[row, np.zeros(m + 1)])
            rhs.append(max(g.upper - g0[k], 0.0))
        if g.lower is not None:  # g0 + row.u >= lower
            rows.append(np.r_[-row, np.zeros(m + 1)])
            rhs.append(max(g0[k] - g.lower, 0.0))
    bounds = list(box) + [(0.0, None)] * (m + 1)
    res = linprog(c, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
    if res.status != 0:
        return None
    return np.asarray(res.x[:n])


Evaluate = Callable[[list[list[float]]], list[dict[str, Any] | None]]


class Polish:
    """The polish state machine over a JSON checkpoint (see the module docstring).

    `names`/`coords`: the full parameter vector's names and how each moves; `targets`: the
    continuous objectives; `merit_scores(measures) -> list[float]`: every objective's score
    (qualitative ones included) for the merit; `evaluate(points) -> measures` runs a batch
    (one per core) and returns None for a failed evaluation."""

    def __init__(
        self,
        checkpoint: Path,
        names: Sequence[str],
        coords: Sequence[Coordinate],
        targets: Sequence[Target],
        merit_scores: Callable[[dict[str, Any]], list[float]],
        evaluate: Evaluate,
        workers: int,
        log: Any = print,
        guards: Sequence[Guard] = GUARDS,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.names, self.coords, self.targets = list(names), list(coords), list(targets)
        self.merit_scores, self.evaluate = merit_scores, evaluate
        self.workers, self.log, self.guards = max(1, workers), log, list(guards)
        self.state: dict[str, Any] = {}

    # --- state ---
    def start(self, values: Sequence[float]) -> None:
        """A new polish from `values` (evaluated first)."""
        self.state = {
            "names": self.names,
            "iteration": 0,
            "radius": RADIUS0,
            "point": [float(v) for v in values],
            "measures": None,
            "fd": {},
            "model": None,
            "rejects": 0,
            "history": [],
            "status": "running",
        }

    def load(self) -> None:
        self.state = json.loads(self.checkpoint.read_text())
        if self.state.get("names") != self.names:
            raise ValueError(
                f"{self.checkpoint}: made for other parameters; move it away to start a new polish"
            )
        model = self.state.get("model")
        if self.state["status"] == "converged" and model and not model.get("planned"):
            self.state["status"] = "running"  # declared on a fresh model never planned with

    def save(self) -> None:
        from l5assets.storage import atomic_write_text

        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.checkpoint, json.dumps(json_clean(self.state), indent=1) + "\n")

    def merit(self, measures: dict[str, Any] | None) -> float:
        if measures is None:
            return math.inf
        s = self.merit_scores(measures)
        return max(s) + SUM_WEIGHT * sum(s)

    # --- the pieces of an iteration ---
    def _movable(self) -> list[int]:
        x = self.state["point"]
        return [
            i for i, c in enumerate(self.coords) if not (c.log and x[i] < OFF_FRACTION * c.upper)
        ]

    def _fd_step(self, i: int) -> float:
        lo, hi = self.coords[i].bounds(self.state["point"][i])
        return 1.0 if hi >= 1.0 or (lo is not None and lo > -1.0) else -1.0

    def _flipped(self, rec: dict[str, Any]) -> bool:
        if rec["measures"] is None:
            return True
        now = max(self.merit_scores(self.state["measures"]))
        return max(self.merit_scores(rec["measures"])) > now + FLIP_JUMP

    def _fd_todo(self) -> list[tuple[int, float]]:
        """(parameter, step) of the finite differences still to measure: new ones, and
        halved steps of those that flipped a target (down to FD_MIN)."""
        todo = []
        for i in self._movable():
            rec = self.state["fd"].get(self.names[i])
            if rec is None:
                todo.append((i, self._fd_step(i)))
            elif self._flipped(rec) and abs(rec["step"]) / 2.0 >= FD_MIN:
                todo.append((i, rec["step"] / 2.0))
        return todo

    def _moved(self, u: dict[int, float]) -> list[float]:
        x = self.state["point"]
        return [self.coords[i].value(x[i], u.get(i, 0.0)) for i in range(len(x))]

    def _linear_model(self) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Columns (parameter indices), target and guard Jacobians at the point. A parameter
        whose finite difference failed, or broke a measure, is left out."""
        m0 = self.state["measures"]
        f0 = np.array([_num(m0, t.feature) for t in self.targets], dtype=float)
        g0 = np.array([_num(m0, g.feature) or 0.0 for g in self.guards], dtype=float)
        cols, jac, gjac = [], [], []
        for i in self._movable():
            rec = self.state["fd"].get(self.names[i])
            if rec is None or self._flipped(rec):
                continue
            m, h = rec["measures"], rec["step"]
            f = [_num(m, t.feature) for t in self.targets]
            if any(v is None for v in f):
                continue
            g = [_num(m, gd.feature) for gd in self.guards]
            cols.append(i)
            jac.append((np.array(f) - f0) / h)
            gjac.append(
                [
                    0.0 if (a is None or _num(m0, gd.feature) is None) else (a - b) / h
                    for a, b, gd in zip(g, g0, self.guards, strict=True)
                ]
            )
        if not cols:
            return cols, np.zeros((len(f0), 0)), np.zeros((len(g0), 0))
        return cols, np.array(jac).T, np.array(gjac).T

    def _build_model(self) -> None:
        """The linear model from the finite differences just measured (age 0)."""
        cols, jac, gjac = self._linear_model()
        self.state["model"] = {
            "cols": [self.names[i] for i in cols],
            "J": jac.tolist(),
            "G": gjac.tolist(),
            "guards": [g.feature for g in self.guards],
            "caps": {self.names[i]: abs(self.state["fd"][self.names[i]]["step"]) for i in cols},
            "age": 0,
        }

    def _refresh(self) -> None:
        """Measure the model afresh at the current point (new finite differences)."""
        self.state.update(model=None, fd={}, rejects=0)

    def _guard_rows(self) -> np.ndarray:
        """The model's guard Jacobian in the order of self.guards (a guard the model was
        measured without starts with zero slopes)."""
        model = self.state["model"]
        n = len(model["cols"])
        have = model.get("guards") or [g.feature for g in self.guards][: len(model["G"])]
        rows = dict(zip(have, np.array(model["G"], dtype=float).reshape(len(have), n), strict=True))
        return np.array([rows.get(g.feature, np.zeros(n)) for g in self.guards]).reshape(-1, n)

    def _broyden(
        self,
        u: dict[str, float],
        scale: float,
        new: dict[str, Any] | None,
        guards_only: bool = False,
    ) -> None:
        """Rank-one update of the model with a step (u * scale) and its result: an accepted
        step updates the targets' and the guards' rows, a rejected one the guards' only (it
        shows where a qualitative criterion lies)."""
        model, old = self.state["model"], self.state["measures"]
        if new is None:
            return
        s = np.array([scale * u.get(n, 0.0) for n in model["cols"]])
        ss = float(s @ s)
        if ss <= 0.0:
            return
        model["G"] = self._guard_rows().tolist()
        model["guards"] = [g.feature for g in self.guards]
        parts = [("G", [g.feature for g in self.guards])]
        if not guards_only:
            parts.insert(0, ("J", [t.feature for t in self.targets]))
        for key, feats in parts:
            mat = np.array(model[key], dtype=float).reshape(len(feats), len(s))
            for r, f in enumerate(feats):
                a, b = _num(new, f), _num(old, f)
                if a is not None and b is not None:
                    mat[r] += (a - b - mat[r] @ s) * s / ss
            model[key] = mat.tolist()
        if not guards_only:
            model["age"] += 1

    def _box(self, cols: Sequence[int], radius: float) -> list[tuple[float, float]]:
        """The trust region, each parameter's capped at the finite-difference step it was
        measured at (a step that had to be halved was not linear beyond it)."""
        x, box = self.state["point"], []
        for i in cols:
            r = min(radius, self.state["model"]["caps"][self.names[i]])
            lo, hi = self.coords[i].bounds(x[i])
            box.append((max(-r, lo if lo is not None else -r), min(r, hi)))
        return box

    def _scales(self) -> list[float]:
        return [0.5**k for k in range(max(2, self.workers))]

    # --- the loop ---
    def step(self) -> list[list[float]]:
        """The next batch of points to evaluate (empty when converged)."""
        st = self.state
        if st["measures"] is None:
            return [st["point"]]
        if st.get("model") is None:
            todo = self._fd_todo()
            if todo:
                batch = todo[: self.workers]
                st["_pending"] = {
                    "kind": "fd",
                    "params": [self.names[i] for i, _ in batch],
                    "steps": [h for _, h in batch],
                }
                return [self._moved({i: h}) for i, h in batch]
            self._build_model()
        model = st["model"]
        if not model.get("planned"):  # the trust region, shrunk by an old model's misses,
            st["radius"] = max(st["radius"], REFRESH_RADIUS)  # reopens on a fresh one
            model["planned"] = True
        if st["radius"] < RADIUS_MIN:
            if model["age"] > 0:  # converged only on a freshly measured model
                self._refresh()
                return self.step()
            st["status"] = "converged"
            return []
        cols = [self.names.index(n) for n in model["cols"]]
        n_t, n_g = len(self.targets), len(self.guards)
        jac = np.array(model["J"], dtype=float).reshape(n_t, len(cols))
        gjac = self._guard_rows().reshape(n_g, len(cols))
        m0 = st["measures"]
        f0 = np.array([_num(m0, t.feature) for t in self.targets], dtype=float)
        g0 = np.array([_num(m0, g.feature) or 0.0 for g in self.guards], dtype=float)
        u = plan_step(jac, f0, self.targets, gjac, g0, self.guards, self._box(cols, st["radius"]))
        if u is None or not np.any(np.abs(u) > 1e-9):
            st["radius"] /= 4.0
            return self.step()
        scales = self._scales()
        st["_pending"] = {
            "kind": "search",
            "scales": scales,
            "u": {self.names[i]: float(v) for i, v in zip(cols, u, strict=True)},
        }
        return [
            self._moved({i: s * float(v) for i, v in zip(cols, u, strict=True)}) for s in scales
        ]

    def take(self, points: list[list[float]], results: list[dict[str, Any] | None]) -> None:
        """Record a batch's results and move the state on."""
        st = self.state
        pending = st.pop("_pending", None)
        if st["measures"] is None:
            if results[0] is None:
                raise ValueError("polish: the starting point failed to simulate")
            st["measures"], st["merit"] = _keep(results[0]), self.merit(results[0])
            self.log(f"polish: start, merit {st['merit']:.3f}")
            return
        assert pending is not None
        if pending["kind"] == "fd":
            for name, h, m in zip(pending["params"], pending["steps"], results, strict=True):
                st["fd"][name] = {"step": h, "measures": _keep(m)}
            return
        merits = [self.merit(m) for m in results]
        k = int(np.argmin(merits))
        entry = {
            "iteration": st["iteration"],
            "radius": st["radius"],
            "u": pending["u"],
            "scales": pending["scales"],
            "merits": merits,
            "merit_before": st["merit"],
        }
        entry["model_age"] = st["model"]["age"]
        entry["scores"] = [None if m is None else self.merit_scores(m) for m in results]
        if merits[k] < st["merit"] - 1e-6:
            entry["accepted_scale"] = pending["scales"][k]
            self._broyden(pending["u"], pending["scales"][k], results[k])
            st["point"], st["measures"], st["merit"] = points[k], _keep(results[k]), merits[k]
            st["iteration"] += 1
            st["rejects"] = 0
            if st["model"]["age"] >= REFRESH_AFTER:
                self._refresh()
            grow = k == 0
            st["radius"] = min(RADIUS_MAX, st["radius"] * (1.5 if grow else 1.0))
            self.log(
                f"polish iteration {st['iteration']}: accepted the step at scale "
                f"{pending['scales'][k]:g}, merit {entry['merit_before']:.3f} -> {merits[k]:.3f}"
            )
        else:
            entry["accepted_scale"] = None
            for sc, m in zip(pending["scales"], results, strict=True):
                self._broyden(pending["u"], sc, m, guards_only=True)
            st["radius"] *= min(pending["scales"]) / 2.0
            st["rejects"] = st.get("rejects", 0) + 1
            if st["model"]["age"] > 0 and st["rejects"] >= 2:  # the updated model misleads
                self._refresh()
            self.log(
                f"polish: no candidate lowered the merit {st['merit']:.3f} (best "
                f"{merits[k]:.3f}); trust radius now {st['radius']:.3g}"
            )
        st["history"].append(entry)

    def run(
        self,
        values: Sequence[float],
        *,
        batches: int | None = None,
        minutes: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> dict[str, Any]:
        """Start (or resume, if the checkpoint exists) and run batches until converged, or
        `batches` are done, or another batch as long as the last one would overrun `minutes`."""
        if self.checkpoint.exists():
            self.load()
        else:
            self.start(values)
        t0, last, done = clock(), 0.0, 0
        while self.state["status"] == "running":
            if batches is not None and done >= batches:
                break
            elapsed = (clock() - t0) / 60.0
            if minutes is not None and done and elapsed + last > minutes:
                break
            points = self.step()
            if not points:
                self.log(f"polish: converged (trust radius {self.state['radius']:.3g})")
                self.save()
                break
            tb = clock()
            results = self.evaluate(points)
            self.take(points, results)
            self.save()
            last = (clock() - tb) / 60.0
            done += 1
        return self.state


def _keep(m: dict[str, Any] | None) -> dict[str, Any] | None:
    """The numeric measures of one evaluation (what the checkpoint keeps)."""
    if m is None:
        return None
    return {k: v for k, v in m.items() if _num(m, k) is not None}


def json_clean(x: Any) -> Any:
    """`x` with NumPy scalars as Python ones and non-finite floats as None (JSON-ready)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_clean(v) for v in x]
    return x
