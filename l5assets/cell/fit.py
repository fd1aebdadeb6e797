"""Fitting a Hay-style biophysics file to Hay 2011's targets on a new morphology.

The default cell (`L5PC_hay_C060114A7`) starts from Hay et al. 2011's biophys3 values and fits,
on the packaged morphology C060114A7, the Ca2+ hot zone (extent and densities), the apical and
somatic channels, CaDynamics and the leak, within Hay's bounds where Hay gives them. It runs
BluePyOpt's CMA-ES (DEAP) in stages (`STAGES`), each a CMA-ES over a subset of the parameters
with the rest fixed at the previous stage's best: first the somatic channels that set the step
responses (apical ones at Hay's values), then the hot zone and the apical and passive
parameters (soma at the first stage's result), then all of them together with a small step
from there (`joint`: the steps depend on the soma and the dendritic load at once). A joint
21-parameter CMA-ES from Hay's values (sigma 0.08) ran 26 generations without
sampling a candidate better than its start: the step frequencies need
the somatic SKv3_1 ~1.5x Hay's value, ~4 step sizes away, while every move of the apical
parameters risks a 10-point qualitative miss. Our own evaluator: each evaluation
applies a candidate to a cell built once per worker process and simulates the validation
protocols (`bap`, `bac`, `hay_steps` and part of `ca_train`, CVode) with the validation code
itself, at Hay's own discretisation (dL = 20 um, i.e. nseg = 1 + 2*int(L/40)); the result is
then validated in full at dL = 5 um by `validate-cell`.

Seeded (DEAP's and NumPy's random state come from `seed`) and resumable: the checkpoint
(BluePyOpt's own pickle per stage, written after every generation) holds the CMA strategy,
population, hall of fame, logbook, history and random state; `run_stage` continues from it for
as many generations or minutes as asked, so the fit makes progress in chunks (`l5assets
fit-cell --stage soma --minutes 45`). A stage's fixed values are frozen in a sidecar file when
it starts. `export_fit` writes the best of the stages that score every objective as a
biophysics file plus a fit record (parameters, bounds, targets, feature values and scores,
stages, generations, seed, date).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l5assets import paths
from l5assets.cell.fit_polish import json_clean as _clean

FIT_DL = 20.0  # Hay's discretisation: nseg = 1 + 2*int(L/40)
MAX_SCORE = 250.0  # BluePyOpt's score for a feature that cannot be computed
BOOL_FAIL = 10.0  # score of a failed qualitative criterion (~ a 10 SD miss)
TEMPLATE_CELL = "L5PC_hay2011"
FIT_CELL = "L5PC_hay_C060114A7"


@dataclass(frozen=True)
class FitParameter:
    """One free parameter: where it goes in the biophysics file, its start value and bounds."""

    name: str
    region: str  # "apic", "soma", "dend" or "zone" (hot-zone geometry)
    mechanism: str
    param: str
    start: float
    lower: float
    upper: float
    bound_source: str


_HAY = "Hay et al. 2011 Table (search bounds)"
_OURS = "ours (geometry of this morphology)"

# Start values: Hay's biophys3 (SPEC 8b); the hot zone starts as Hay's offset past the main
# bifurcation (cell1: 58-258 um beyond it; here 375 um + 58 = 433 um, 200 um long).
PARAMETERS: tuple[FitParameter, ...] = (
    FitParameter("zone_start", "zone", "", "start", 433.0, 375.0, 600.0, _OURS),
    FitParameter("zone_length", "zone", "", "length", 200.0, 100.0, 500.0, _OURS),
    FitParameter("gCa_LVAstbar_apic", "apic", "Ca_LVAst", "gCa_LVAstbar", 0.0187, 0.0, 0.2, _HAY),
    FitParameter("gCa_HVAbar_apic", "apic", "Ca_HVA", "gCa_HVAbar", 5.55e-4, 0.0, 0.005, _HAY),
    FitParameter("gNaTa_tbar_apic", "apic", "NaTa_t", "gNaTa_tbar", 0.0213, 0.0, 0.04, _HAY),
    FitParameter("gSKv3_1bar_apic", "apic", "SKv3_1", "gSKv3_1bar", 2.61e-4, 0.0, 0.04, _HAY),
    FitParameter("gSK_E2bar_apic", "apic", "SK_E2", "gSK_E2bar", 0.0012, 0.0, 0.01, _HAY),
    FitParameter("gamma_apic", "apic", "CaDynamics_E2", "gamma", 5.09e-4, 5e-4, 0.05, _HAY),
    FitParameter("decay_apic", "apic", "CaDynamics_E2", "decay", 122.0, 20.0, 200.0, _HAY),
    FitParameter("g_pas_apic", "apic", "pas", "g", 5.89e-5, 3e-5, 1e-4, _HAY),
    FitParameter("g_pas_dend", "dend", "pas", "g", 4.67e-5, 3e-5, 1e-4, _HAY),
    FitParameter("gNaTa_tbar_soma", "soma", "NaTa_t", "gNaTa_tbar", 2.04, 0.0, 4.0, _HAY),
    FitParameter("gSKv3_1bar_soma", "soma", "SKv3_1", "gSKv3_1bar", 0.693, 0.0, 2.0, _HAY),
    FitParameter("gSK_E2bar_soma", "soma", "SK_E2", "gSK_E2bar", 0.0441, 0.0, 0.1, _HAY),
    FitParameter("gK_Tstbar_soma", "soma", "K_Tst", "gK_Tstbar", 0.0812, 0.0, 0.1, _HAY),
    FitParameter("gK_Pstbar_soma", "soma", "K_Pst", "gK_Pstbar", 0.00223, 0.0, 1.0, _HAY),
    FitParameter("gNap_Et2bar_soma", "soma", "Nap_Et2", "gNap_Et2bar", 0.00172, 0.0, 0.01, _HAY),
    FitParameter("gCa_HVAbar_soma", "soma", "Ca_HVA", "gCa_HVAbar", 9.92e-4, 0.0, 0.001, _HAY),
    FitParameter("gCa_LVAstbar_soma", "soma", "Ca_LVAst", "gCa_LVAstbar", 0.00343, 0.0, 0.01, _HAY),
    FitParameter("gamma_soma", "soma", "CaDynamics_E2", "gamma", 5.01e-4, 5e-4, 0.05, _HAY),
    FitParameter("decay_soma", "soma", "CaDynamics_E2", "decay", 460.0, 20.0, 1000.0, _HAY),
)
PARAM_NAMES = tuple(p.name for p in PARAMETERS)

# The fitted protocols and sweeps (indices into the validation protocols' sweeps).
FIT_UNITS: tuple[tuple[str, tuple[int, ...] | None], ...] = (
    ("bap", None),
    ("bac", None),
    ("ca_train", (0, 1, 5)),  # single pulse, 50 Hz, 120 Hz (pulses calibrated per candidate)
    ("hay_steps", None),
)


@dataclass(frozen=True)
class FitObjective:
    """A scored feature: |value - mean| / sd, or a qualitative criterion (0 or BOOL_FAIL)."""

    name: str
    feature: str
    mean: float | None = None
    sd: float | None = None
    expect: float | None = None  # qualitative: the value must equal this
    at_least: float | None = None

    def score(self, measures: dict[str, Any]) -> float:
        v = measures.get(self.feature)
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return MAX_SCORE
        v = float(v)
        if self.expect is not None:
            return 0.0 if v == self.expect else BOOL_FAIL
        if self.at_least is not None:
            return 0.0 if v >= self.at_least else BOOL_FAIL * (1 + self.at_least - v)
        assert self.mean is not None and self.sd is not None
        return min(MAX_SCORE, abs(v - self.mean) / self.sd)


OBJECTIVES: tuple[FitObjective, ...] = (
    FitObjective("bAP site 1", "bap.dend1.amplitude", 45.0, 10.0),
    FitObjective("bAP site 2", "bap.dend2.amplitude", 36.0, 9.33),
    FitObjective("BAC pulse alone: 1 AP", "bac.soma_only.spikecount", expect=1.0),
    FitObjective("BAC pulse alone: no Ca2+ spike", "bac.soma_only.ca_spike", expect=0.0),
    FitObjective("BAC EPSP alone: no AP", "bac.epsp_only.spikecount", expect=0.0),
    FitObjective("BAC EPSP alone: no Ca2+ spike", "bac.epsp_only.ca_spike", expect=0.0),
    FitObjective("BAC paired: Ca2+ spike", "bac.paired.ca_spike", expect=1.0),
    FitObjective("BAC paired: burst", "bac.paired.spikecount", at_least=2.0),
    FitObjective("BAC ISI", "bac.paired.BAC_ISI", 9.901, 0.8517),
    FitObjective("BAC Ca2+ spike height", "bac.paired.dend_peak", 6.73, 2.54),
    FitObjective("BAC Ca2+ spike width", "bac.paired.dend_width_55", 37.43, 1.27),
    FitObjective("BAC AHP depth", "bac.paired.BAC_ahpdepth", -65.0, 4.0),
    FitObjective("train: one pulse, no Ca2+ spike", "ca_train.single.ca_spike", expect=0.0),
    FitObjective("train: one pulse, 1 AP", "ca_train.single.spikecount", expect=1.0),
    FitObjective("train 50 Hz: an AP per pulse", "ca_train.50Hz.pulse_aps", expect=5.0),
    FitObjective("train 50 Hz: no Ca2+ spike", "ca_train.50Hz.ca_spike", expect=0.0),
    FitObjective("train 120 Hz: Ca2+ spike", "ca_train.120Hz.ca_spike", expect=1.0),
    FitObjective("Hay step1 frequency", "hay_steps.step1.mean_frequency", 9.0, 0.88),
    FitObjective("Hay step2 frequency", "hay_steps.step2.mean_frequency", 14.5, 0.56),
    FitObjective("Hay step3 frequency", "hay_steps.step3.mean_frequency", 22.5, 2.2222),
)


def template() -> dict[str, Any]:
    """Hay's biophys3 file, the fit's starting point."""
    return json.loads((paths.cells_dir() / f"{TEMPLATE_CELL}.json").read_text())


def biophysics_for(values: Sequence[float], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The biophysics mapping of the default cell for one parameter vector."""
    d = copy.deepcopy(base if base is not None else template())
    d["name"] = FIT_CELL
    d["default_morphology"] = {
        "package": "bluepyopt",
        "path": "tests/test_ephys/testdata/acc/l5pc/C060114A7.asc",
    }
    d["validation"] = {"targets": "hay2011", "sites": "main_bifurcation"}
    vals = dict(zip(PARAM_NAMES, (float(v) for v in values), strict=True))
    start, end = vals["zone_start"], vals["zone_start"] + vals["zone_length"]
    for p in PARAMETERS:
        if p.region == "zone":
            continue
        mech = d["regions"][p.region]["mechanisms"][p.mechanism]
        if isinstance(mech.get(p.param), dict):  # a zone rule: the value inside the zone
            mech[p.param]["value"] = vals[p.name]
        else:
            mech[p.param] = vals[p.name]
    for mech in ("Ca_LVAst", "Ca_HVA"):
        rule = d["regions"]["apic"]["mechanisms"][mech][f"g{mech}bar"]
        rule["start"], rule["end"] = round(start, 3), round(end, 3)
    return d


# --- the NEURON side (runs in pool worker processes) --------------------------------------

_CELL: dict[str, Any] = {}


def _worker_cell(dL: float) -> tuple[Any, Any, float]:
    """The cell of this process (built once), NEURON's h and the trunk-site shift."""
    if "cell" not in _CELL:
        from neuron import h

        from l5assets.cell.builder import build_cell
        from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms
        from l5assets.cell.validation.worker import site_shift

        # the unflagged build: a fit must not depend on the user's L5ASSETS_MECH_CFLAGS
        load_mechanisms(compile_mechanisms(cflags=""))
        h.load_file("stdrun.hoc")
        from l5assets.cell.biophysics import parse_biophysics

        bio = parse_biophysics(biophysics_for([p.start for p in PARAMETERS]))
        cell = build_cell(bio, None, dL=dL)
        _CELL.update(cell=cell, h=h, shift=site_shift(cell))
    return _CELL["cell"], _CELL["h"], _CELL["shift"]


def simulate(
    values: Sequence[float],
    dL: float = FIT_DL,
    units: Sequence[tuple[str, tuple[int, ...] | None]] = FIT_UNITS,
) -> dict[str, Any]:
    """Apply one parameter vector to this process's cell, run the fit protocols, extract the
    validation features; returns {feature: value}."""
    from l5assets.cell.biophysics import parse_biophysics
    from l5assets.cell.builder import apply_biophysics
    from l5assets.cell.validation.features import _EXTRACT
    from l5assets.cell.validation.protocols import PROTOCOLS
    from l5assets.cell.validation.worker import _run_protocol

    cell, h, shift = _worker_cell(dL)
    cell.biophysics = parse_biophysics(biophysics_for(values))
    apply_biophysics(cell)
    measures: dict[str, Any] = {}
    for name, sweeps in units:
        proto = PROTOCOLS[name]
        t0 = time.monotonic()
        tr = _run_protocol(
            h, cell, proto, cvode=True, use_savestate=True, shift=shift, sweeps=sweeps
        )
        measures[f"_runtime.{name}"] = time.monotonic() - t0
        measures.update(_EXTRACT[name](tr))
    return measures


def scores(
    measures: dict[str, Any], objectives: Sequence[FitObjective] = OBJECTIVES
) -> list[float]:
    """One score per objective (lower is better)."""
    return [o.score(measures) for o in objectives]


@dataclass(frozen=True)
class FitStage:
    """One CMA-ES over `free` parameters, the others fixed at the previous stage's best (the
    first stage: at their start values), scored on `objectives` from the protocols `units`."""

    name: str
    free: tuple[str, ...]
    objectives: tuple[str, ...]
    units: tuple[tuple[str, tuple[int, ...] | None], ...]
    sigma: float  # initial CMA step, in the [-1, 1]-normalised space of the free parameters
    method: str = "cma"  # "cma": BluePyOpt's CMA-ES; "slp": fit_polish's trust-region LP

    @property
    def parameters(self) -> tuple[FitParameter, ...]:
        return tuple(p for p in PARAMETERS if p.name in self.free)

    @property
    def fit_objectives(self) -> tuple[FitObjective, ...]:
        return tuple(o for o in OBJECTIVES if o.name in self.objectives)


_TRAIN = tuple(o.name for o in OBJECTIVES if o.feature.startswith("ca_train."))
STAGES: tuple[FitStage, ...] = (
    # the step responses are somatic: Hay's SKv3_1 x1.5 alone moves the three frequencies from
    # 7.9 / 10.0 / 15.0 to 9.7 / 13.3 / 20.7 Hz; bAP and BAC are scored so they stay intact
    # (the Ca2+ train, half the cost of an evaluation, waits for the next stage)
    FitStage(
        "soma",
        free=tuple(p.name for p in PARAMETERS if p.region == "soma"),
        objectives=tuple(o.name for o in OBJECTIVES if o.name not in _TRAIN),
        units=(("bap", None), ("bac", None), ("hay_steps", None)),
        sigma=0.15,
    ),
    FitStage(
        "apical",
        free=tuple(p.name for p in PARAMETERS if p.region in ("zone", "apic", "dend")),
        objectives=tuple(o.name for o in OBJECTIVES),
        units=FIT_UNITS,
        sigma=0.1,
    ),
    # a local polish of everything from the apical stage's best: the step frequencies depend
    # on the soma and on the dendritic load together, which neither stage alone could move
    FitStage(
        "joint",
        free=PARAM_NAMES,
        objectives=tuple(o.name for o in OBJECTIVES),
        units=FIT_UNITS,
        sigma=0.05,
    ),
    # the last features outside 2 SD, moved by planned steps (fit_polish) from the best of the
    # stages above: sampled steps of all parameters at once mostly flip a qualitative target
    FitStage(
        "polish",
        free=PARAM_NAMES,
        objectives=tuple(o.name for o in OBJECTIVES),
        units=FIT_UNITS,
        sigma=0.0,
        method="slp",
    ),
)
STAGE_NAMES = tuple(st.name for st in STAGES)


def stage(name: str) -> FitStage:
    """The stage called `name` (a one-line error naming the allowed ones otherwise)."""
    for st in STAGES:
        if st.name == name:
            return st
    raise ValueError(f"stage: {name!r} is not one of {', '.join(STAGE_NAMES)}")


def full_values(free: Sequence[str], values: Sequence[float], base: dict[str, float]) -> list:
    """The full parameter vector: `base` with the `free` parameters set to `values`."""
    vals = dict(base)
    vals.update(zip(free, (float(v) for v in values), strict=True))
    return [vals[n] for n in PARAM_NAMES]


class HayFitEvaluator:
    """BluePyOpt evaluator of one stage (duck-typed: objectives, params, the evaluate methods):
    the stage's free parameters over `base` for the others."""

    def __init__(
        self,
        fit_stage: FitStage | None = None,
        base: dict[str, float] | None = None,
        dL: float = FIT_DL,
    ) -> None:
        import bluepyopt as bpop

        self.stage = fit_stage if fit_stage is not None else STAGES[-1]
        self.base = dict(base) if base is not None else {p.name: p.start for p in PARAMETERS}
        self.dL = dL
        self.params = [
            bpop.parameters.Parameter(p.name, bounds=[p.lower, p.upper])
            for p in self.stage.parameters
        ]
        self.param_names = [p.name for p in self.stage.parameters]
        self._objectives = self.stage.fit_objectives
        self.objectives = [bpop.objectives.Objective(o.name) for o in self._objectives]

    def evaluate_with_lists(self, values: Sequence[float]) -> list[float]:
        """Scores of one parameter vector (any NEURON failure scores MAX_SCORE everywhere)."""
        try:
            full = full_values(self.param_names, values, self.base)
            return scores(simulate(full, self.dL, self.stage.units), self._objectives)
        except Exception:  # noqa: BLE001 - a broken candidate is a bad candidate
            return [MAX_SCORE] * len(self._objectives)

    def init_simulator_and_evaluate_with_lists(self, values: Sequence[float]) -> list[float]:
        return self.evaluate_with_lists(values)

    def evaluate_with_dicts(self, param_dict: dict[str, float]) -> dict[str, float]:
        vals = [param_dict[n] for n in self.param_names]
        names = [o.name for o in self._objectives]
        return dict(zip(names, self.evaluate_with_lists(vals), strict=True))


def _pool_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


EVAL_TIMEOUT_S = 600.0  # a normal evaluation takes ~40 s; a stuck integration is cut off


def timed_map(pool: Any, timeout_s: float, n_objectives: int | None = None) -> Any:
    """A map for DEAP (or the polish) over a pebble ProcessPool: an evaluation that exceeds
    `timeout_s` (its worker is killed and replaced) or crashes scores MAX_SCORE on every one
    of `n_objectives` objectives (None without `n_objectives`: the polish's failed point)."""
    from concurrent.futures import TimeoutError as FutureTimeout

    failed = None if n_objectives is None else [MAX_SCORE] * n_objectives

    def _map(f: Any, items: Any) -> list[Any]:
        futures = [pool.schedule(f, args=(list(x),), timeout=timeout_s) for x in items]
        out = []
        for fut in futures:
            try:
                out.append(fut.result())
            except (FutureTimeout, Exception):  # noqa: BLE001 - a failed candidate is bad
                out.append(failed)
        return out

    return _map


CMA_SIGMA = 0.08  # initial step, in the optimiser's [-1, 1]-normalised parameter space
CMA_MAX_NGEN = 100_000  # never the stopping reason: chunks stop on --generations / --minutes


def run_fit(
    checkpoint: Path,
    *,
    generations: int | None = None,
    minutes: float | None = None,
    offspring: int = 12,
    seed: int = 1,
    workers: int | None = None,
    log: Any = print,
    evaluator: Any = None,
    centroid: Sequence[float] | None = None,
    sigma: float = CMA_SIGMA,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run (or continue, if `checkpoint` exists) the CMA-ES fit for `generations` more
    generations or while another generation as long as the last one fits in `minutes`
    (`clock`: seconds, for the minutes).

    CMA-ES (BluePyOpt's DEAPOptimisationCMA, single objective: the sum of the scores) starts
    at Hay's values (`centroid`, default the parameters' start values) with a small step: a
    local search around a model that already passes most targets, where IBEA's wide
    crossover and mutation spent its evaluations far from it. `evaluator` (default
    HayFitEvaluator, the last stage over the start values; see `run_stage`) is for tests."""
    import multiprocessing as mp
    import threading

    import bluepyopt as bpop
    from pebble import ProcessPool

    checkpoint = Path(checkpoint)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    n_workers = workers or os.cpu_count() or 1
    evaluator = evaluator if evaluator is not None else HayFitEvaluator()
    done_before = _generation(checkpoint, evaluator)
    if done_before:
        with open(checkpoint, "rb") as f:
            es = pickle.load(f)["CMA_es"]
        if getattr(es, "lambda_", offspring) != offspring:
            log(f"the checkpoint's CMA-ES draws {es.lambda_} per generation: used, not {offspring}")
        if not es.active:  # a termination criterion fired: continuing would do nothing
            log("the CMA-ES in the checkpoint has stopped (a termination criterion was met)")
            best = best_individual(checkpoint)
            return {"generation": best["generation"], "best": best}
    t0 = clock()
    stop = threading.Event()
    with ProcessPool(n_workers, initializer=_pool_init, context=mp.get_context("spawn")) as pool:
        evaluate = timed_map(pool, EVAL_TIMEOUT_S, len(evaluator.objectives))
        state = {"done": 0, "last": 0.0}

        def _map(f: Any, items: Any) -> list[Any]:
            # one call per generation; the optimiser checks `stop` before the next one, after
            # writing this generation's checkpoint
            out = evaluate(f, items)
            state["done"] += 1
            elapsed = (clock() - t0) / 60.0
            took, state["last"] = elapsed - state["last"], elapsed
            best = min(sum(x) for x in out)
            log(
                f"generation {done_before + state['done']}: best total score in it {best:.2f} "
                f"({elapsed:.1f} min)"
            )
            # stop before a generation as long as the last one would overrun `minutes`
            if (generations is not None and state["done"] >= generations) or (
                minutes is not None and elapsed + took > minutes
            ):
                stop.set()
            return out

        starts = {p.name: p.start for p in PARAMETERS}
        start = (
            list(centroid)
            if centroid is not None
            else [starts[n] for n in getattr(evaluator, "param_names", PARAM_NAMES)]
        )
        if len(start) != len(evaluator.params):
            raise ValueError(
                f"centroid: {len(start)} values for {len(evaluator.params)} free parameters"
            )
        opt = bpop.deapext.optimisationsCMA.DEAPOptimisationCMA(
            evaluator=evaluator,
            offspring_size=offspring,
            seed=seed,
            centroids=[start],
            sigma=sigma,
            map_function=_map,
            selector_name="single_objective",
        )
        if generations != 0:
            opt.run(
                max_ngen=CMA_MAX_NGEN,
                cp_filename=str(checkpoint),
                continue_cp=done_before > 0,
                terminator=stop,
            )
    best = best_individual(checkpoint)
    log(f"generation {best['generation']}: best total score {best['total']:.2f}")
    return {"generation": best["generation"], "best": best}


def _generation(checkpoint: Path, evaluator: Any) -> int:
    """Generations in `checkpoint` (0 if none); refuses one of another parameter or objective
    set. Counted from the logbook: BluePyOpt's CMA checkpoint repeats its last generation
    number after a resume."""
    if not checkpoint.exists():
        return 0
    with open(checkpoint, "rb") as f:
        cp = pickle.load(f)
    # a checkpoint of another objective or parameter set cannot be continued
    n_obj = len(cp["population"][0].fitness.values) if cp.get("population") else None
    names = list(evaluator.param_names)
    if (
        "CMA_es" not in cp
        or list(cp.get("param_names") or names) != names
        or n_obj not in (None, len(evaluator.objectives))
    ):
        raise ValueError(
            f"{checkpoint}: made by another optimiser or for other parameters or objectives "
            f"({n_obj} objectives, {len(evaluator.objectives)} now); move it away to start a "
            "new fit"
        )
    return len(cp["logbook"])


def best_individual(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's best individual (lowest total score over the hall of fame and the
    population): parameter values, scores, total."""
    with open(checkpoint, "rb") as f:
        cp = pickle.load(f)
    cands = list(cp["halloffame"]) + list(cp["population"])
    best = min(cands, key=lambda ind: sum(ind.fitness.values))
    return {
        "values": [float(v) for v in best],
        "scores": [float(s) for s in best.fitness.values],
        "total": float(sum(best.fitness.values)),
        "generation": len(cp["logbook"]),
    }


def stage_paths(name: str, fits_dir: Path | None = None) -> tuple[Path, Path]:
    """A stage's checkpoint (BluePyOpt's pickle, or the polish's JSON) and the sidecar
    holding its fixed (base) values."""
    d = Path(fits_dir) if fits_dir is not None else paths.fits_dir()
    ext = "json" if stage(name).method == "slp" else "pkl"
    return d / f"{FIT_CELL}.{name}.checkpoint.{ext}", d / f"{FIT_CELL}.{name}.base.json"


def polish_best(checkpoint: Path) -> dict[str, Any]:
    """The polish checkpoint's current point (its best so far): values, scores, total;
    `generation` counts its accepted steps."""
    state = json.loads(Path(checkpoint).read_text())
    sc = scores(state["measures"]) if state.get("measures") else [MAX_SCORE] * len(OBJECTIVES)
    return {
        "values": [float(v) for v in state["point"]],
        "scores": [float(x) for x in sc],
        "total": float(sum(sc)),
        "generation": int(state["iteration"]),
        "status": state.get("status"),
    }


def stage_best(name: str, fits_dir: Path | None = None) -> dict[str, Any]:
    """A stage's best individual, with the full parameter vector (`full`) and its base."""
    st = stage(name)
    ckpt, base_file = stage_paths(name, fits_dir)
    if not ckpt.exists() or not base_file.exists():
        raise ValueError(f"stage: {name!r} has not run yet (no {ckpt.name} / {base_file.name})")
    base = json.loads(base_file.read_text())
    best = polish_best(ckpt) if st.method == "slp" else best_individual(ckpt)
    best["free"] = list(st.free)
    best["full"] = full_values(st.free, best["values"], base["values"])
    best["base"] = base
    return best


def _base_for(index: int, fits_dir: Path | None) -> dict[str, Any]:
    """The fixed values of STAGES[index] as it starts: the previous stage's best (the start
    values for the first stage)."""
    if index == 0:
        return {"after": None, "values": {p.name: p.start for p in PARAMETERS}}
    after = STAGES[index - 1].name
    if STAGES[index].method == "slp":  # the polish: from the best of the stages before it
        after = best_stage(STAGES[:index], fits_dir)
    prev = stage_best(after, fits_dir)
    return {
        "after": after,
        "after_generation": prev["generation"],
        "after_total": prev["total"],
        "values": dict(zip(PARAM_NAMES, prev["full"], strict=True)),
    }


OUTSIDE = 2.0  # a score above this is outside 2 SD (or a failed qualitative target)


def best_stage(stages: Sequence[FitStage], fits_dir: Path | None = None) -> str:
    """Of `stages` that have run (those scoring every objective, if any has), the one whose
    best has the fewest scores outside 2 SD, then the lowest total (the later on a tie)."""
    ran = [st for st in stages if stage_paths(st.name, fits_dir)[0].exists()]
    if not ran:
        raise ValueError("export: no stage has run yet (no checkpoint in the fits folder)")
    every = {o.name for o in OBJECTIVES}
    full = [st for st in ran if set(st.objectives) == every] or ran[-1:]
    bests = {st.name: stage_best(st.name, fits_dir) for st in full}

    def key(st: FitStage) -> tuple[int, float]:
        b = bests[st.name]
        return sum(x > OUTSIDE for x in b["scores"]), b["total"]

    return min(reversed(full), key=key).name


def _simulate_fit(values: list[float]) -> dict[str, Any]:
    return simulate(values, FIT_DL, FIT_UNITS)


def _run_polish(
    checkpoint: Path,
    base: dict[str, float],
    *,
    evaluator: Any = None,
    log: Any = print,
    generations: int | None = None,
    minutes: float | None = None,
    workers: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    **_: Any,
) -> dict[str, Any]:
    """Run (or continue) the polish stage from `base` (`generations`: batches of evaluations;
    `evaluator(points) -> measures`, default: `simulate` on a process pool, is for tests)."""
    from l5assets.cell import fit_polish as fp

    coords = [fp.Coordinate(p.name, p.region != "zone", p.lower, p.upper) for p in PARAMETERS]
    targets = [
        fp.Target(o.name, o.feature, o.mean, o.sd)
        for o in OBJECTIVES
        if o.mean is not None and o.sd is not None
    ]
    n_workers = workers or os.cpu_count() or 1
    guards = list(fp.GUARDS) + fp.qualitative_guards(
        [
            (o.feature, float(o.expect if o.expect is not None else o.at_least), kind)
            for o in OBJECTIVES
            for kind in ["expect" if o.expect is not None else "at_least"]
            if o.mean is None
        ]
    )

    def run(evaluate: Any) -> dict[str, Any]:
        polish = fp.Polish(
            checkpoint,
            PARAM_NAMES,
            coords,
            targets,
            scores,
            evaluate,
            n_workers,
            log=log,
            guards=guards,
        )
        return polish.run(
            [base[n] for n in PARAM_NAMES], batches=generations, minutes=minutes, clock=clock
        )

    if evaluator is not None:
        run(evaluator)
    else:
        import multiprocessing as mp

        from pebble import ProcessPool

        with ProcessPool(
            n_workers, initializer=_pool_init, context=mp.get_context("spawn")
        ) as pool:
            mapped = timed_map(pool, EVAL_TIMEOUT_S)
            run(lambda points: mapped(_simulate_fit, points))
    best = polish_best(checkpoint)
    log(f"polish: {best['generation']} steps accepted, total score {best['total']:.2f}")
    return {"generation": best["generation"], "best": best}


def run_stage(
    name: str,
    *,
    fits_dir: Path | None = None,
    evaluator: Any = None,
    log: Any = print,
    **kw: Any,
) -> dict[str, Any]:
    """Run (or continue) one stage: its fixed values are the previous stage's best when it
    first starts, frozen in its sidecar file so a resumed stage never changes under it. `kw`
    go to `run_fit` (generations, minutes, offspring, seed, workers)."""
    st = stage(name)
    index = STAGE_NAMES.index(name)
    ckpt, base_file = stage_paths(name, fits_dir)
    if ckpt.exists():
        if not base_file.exists():
            raise ValueError(f"stage: {ckpt} has no {base_file.name}; move it away to restart")
        base = json.loads(base_file.read_text())
        if index > 0:
            after = base.get("after") or STAGES[index - 1].name
            prev = stage_best(after, fits_dir)
            now = dict(zip(PARAM_NAMES, prev["full"], strict=True))
            if now != base["values"]:
                log(
                    f"stage {after}'s best has changed (total "
                    f"{prev['total']:.2f}, was {base['after_total']:.2f}) since {name} started "
                    f"from it; {name} goes on from the old one: move {ckpt.name} and "
                    f"{base_file.name} away to restart {name} from the new one"
                )
    else:
        base = _base_for(index, fits_dir)
        from l5assets.storage import atomic_write_text

        base_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(base_file, json.dumps(_clean(base), indent=2, sort_keys=True) + "\n")
    if st.method == "slp":
        return _run_polish(ckpt, base["values"], evaluator=evaluator, log=log, **kw)
    if evaluator is None:
        evaluator = HayFitEvaluator(st, base["values"])
    centroid = [base["values"][n] for n in st.free]
    return run_fit(ckpt, evaluator=evaluator, centroid=centroid, sigma=st.sigma, log=log, **kw)


def export_fit(
    out_cell: Path,
    out_record: Path,
    *,
    seed: int,
    fits_dir: Path | None = None,
    values: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write the best individual as the biophysics file and its fit record (re-simulated
    here at the fit's dL for the record's feature values): of the stages that have run and
    score every objective, the one whose best has the fewest scores outside 2 SD, then the
    lowest total (`best_stage`; a stage that has not caught up with its start does not win)."""
    chosen = stage(best_stage(STAGES, fits_dir))
    ran = [st for st in STAGES if stage_paths(st.name, fits_dir)[0].exists()]
    vals = list(values) if values is not None else stage_best(chosen.name, fits_dir)["full"]
    measures = simulate(vals, FIT_DL)
    sc = scores(measures)
    bio = biophysics_for(vals)
    bio["description"] = (
        "Hay-style thick-tufted L5b PC on the packaged morphology C060114A7 "
        "(BluePyOpt's L5PC reconstruction): Hay et al. 2011 biophys3 channel "
        "set and values as the start, hot zone, apical and somatic channels "
        "fitted to Hay 2011's targets (see L5PC_hay_C060114A7.fit.json). "
        "Default cell of l5assets."
    )
    bio["source"] = (
        f"Fitted by l5assets.cell.fit (exported stage: {chosen.name}; BluePyOpt CMA-ES "
        "stages, then the polish: steps planned by linear programming on finite "
        "differences; eFEL features) from Hay et al. 2011 biophys3 (ModelDB 139653; "
        "SPEC 8b). Morphology C060114A7.asc loaded at run time from the installed "
        "bluepyopt package (upstream licence "
        "CC-BY-NC-SA 4.0; never redistributed here). Hot zone placed as a "
        "distance window from apic[0](0); the validation's trunk sites follow "
        "the main bifurcation."
    )
    from l5assets.storage import atomic_write_text

    cell_text = json.dumps(bio, indent=2) + "\n"
    stages = []
    for st in ran:
        b = stage_best(st.name, fits_dir)
        stages.append(
            {
                "name": st.name,
                "free": list(st.free),
                "objectives": list(st.objectives),
                "protocols": [[n, None if w is None else list(w)] for n, w in st.units],
                "method": st.method,
                "sigma": st.sigma,
                "generations": b["generation"],
                "best_total": b["total"],
                "started_after": b["base"].get("after"),
                # the previous stage as this one started from it (its base file)
                "started_after_generation": b["base"].get("after_generation"),
                "started_after_total": b["base"].get("after_total"),
            }
        )
    record = {
        "cell": FIT_CELL,
        "template": TEMPLATE_CELL,
        "optimiser": (
            "bluepyopt.deapext.optimisationsCMA.DEAPOptimisationCMA (single objective: sum of "
            "scores), in stages over parameter subsets (see stages), sigma in the "
            "[-1, 1]-normalised space of the stage's parameters; then the polish stage "
            "(method slp: l5assets.cell.fit_polish, minimax trust-region sequential linear "
            "programming on finite differences; its generations are accepted steps)"
        ),
        "seed": seed,
        "generations": sum(st["generations"] for st in stages),
        "stages": stages,
        "exported_stage": chosen.name,
        "date": time.strftime("%Y-%m-%d"),
        "dL_um": FIT_DL,
        "protocols": [[n, None if s is None else list(s)] for n, s in FIT_UNITS],
        "parameters": [
            {
                "name": p.name,
                "region": p.region,
                "mechanism": p.mechanism,
                "param": p.param,
                "start": p.start,
                "lower": p.lower,
                "upper": p.upper,
                "bounds_from": p.bound_source,
                "value": v,
            }
            for p, v in zip(PARAMETERS, vals, strict=True)
        ],
        "objectives": [
            {
                "name": o.name,
                "feature": o.feature,
                "mean": o.mean,
                "sd": o.sd,
                "expect": o.expect,
                "at_least": o.at_least,
                "value": measures.get(o.feature),
                "score": s,
            }
            for o, s in zip(OBJECTIVES, sc, strict=True)
        ],
        "total_score": float(sum(sc)),
        "biophysics_sha256": hashlib.sha256(cell_text.encode()).hexdigest(),
    }
    record_text = json.dumps(_clean(record), indent=2, sort_keys=True) + "\n"
    # both made before either is written: a failure leaves the pair as it was
    atomic_write_text(out_cell, cell_text)
    atomic_write_text(out_record, record_text)
    return record
