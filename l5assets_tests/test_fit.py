"""The cell fit program: parameter mapping, scores, seeding and checkpoint resumption.

The resumption test runs BluePyOpt's real CMA-ES with a cheap analytic evaluator (the NEURON
evaluator costs ~40 s per individual); the NEURON path is exercised by `simulate` in the slow
test and by `l5assets fit-cell` itself."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from l5assets.cell import fit
from l5assets.cell.biophysics import parse_biophysics


def test_biophysics_for_maps_every_parameter() -> None:
    vals = [p.start * 1.5 if p.region != "zone" else p.start for p in fit.PARAMETERS]
    d = fit.biophysics_for(vals)
    bio = parse_biophysics(d)  # a valid biophysics file
    assert bio.name == fit.FIT_CELL and bio.validation.sites == "main_bifurcation"
    apic = d["regions"]["apic"]["mechanisms"]
    ca = apic["Ca_LVAst"]["gCa_LVAstbar"]
    assert (ca["start"], ca["end"]) == (433.0, 633.0)
    assert ca["value"] == pytest.approx(0.0187 * 1.5) and ca["outside"] == 0.01
    assert apic["NaTa_t"]["gNaTa_tbar"] == pytest.approx(0.0213 * 1.5)
    assert d["regions"]["soma"]["mechanisms"]["SK_E2"]["gSK_E2bar"] == pytest.approx(0.0441 * 1.5)
    assert d["regions"]["dend"]["mechanisms"]["pas"]["g"] == pytest.approx(4.67e-5 * 1.5)
    # Hay's start values, within Hay's bounds
    for p in fit.PARAMETERS:
        assert p.lower <= p.start <= p.upper, p.name
    hay = {p.name: p for p in fit.PARAMETERS}
    assert (hay["gCa_LVAstbar_apic"].lower, hay["gCa_LVAstbar_apic"].upper) == (0.0, 0.2)
    assert (hay["gamma_apic"].lower, hay["decay_apic"].upper) == (5e-4, 200.0)
    assert (hay["g_pas_apic"].lower, hay["g_pas_apic"].upper) == (3e-5, 1e-4)


def test_scores() -> None:
    o = {x.feature: x for x in fit.OBJECTIVES}
    assert o["bap.dend1.amplitude"].score({"bap.dend1.amplitude": 55.0}) == 1.0
    assert o["bap.dend1.amplitude"].score({}) == fit.MAX_SCORE
    assert o["bac.paired.ca_spike"].score({"bac.paired.ca_spike": 1.0}) == 0.0
    assert o["bac.paired.ca_spike"].score({"bac.paired.ca_spike": 0.0}) == fit.BOOL_FAIL
    assert o["bac.paired.spikecount"].score({"bac.paired.spikecount": 3.0}) == 0.0
    assert o["bac.paired.spikecount"].score({"bac.paired.spikecount": 1.0}) > fit.BOOL_FAIL


class _Sphere:
    """A cheap evaluator with the fit's parameters and objectives (distance to a point)."""

    def __init__(self) -> None:
        import bluepyopt as bpop

        self.params = [
            bpop.parameters.Parameter(p.name, bounds=[p.lower, p.upper]) for p in fit.PARAMETERS
        ]
        self.param_names = list(fit.PARAM_NAMES)
        self.objectives = [bpop.objectives.Objective(o.name) for o in fit.OBJECTIVES]

    def init_simulator_and_evaluate_with_lists(self, values):
        rel = [
            (v - p.start) / (p.upper - p.lower) for p, v in zip(fit.PARAMETERS, values, strict=True)
        ]
        return [abs(rel[i % len(rel)]) * (i + 1) for i in range(len(fit.OBJECTIVES))]


def _state(ckpt: Path) -> tuple:
    with open(ckpt, "rb") as f:
        cp = pickle.load(f)
    es = cp["CMA_es"]
    return len(cp["logbook"]), [list(ind) for ind in cp["population"]], list(es.centroid)


def test_checkpoint_resumes_to_the_same_result(tmp_path: Path) -> None:
    """3 generations in one go == 2, then 1 more resumed from the checkpoint (same seed)."""
    kw = dict(offspring=4, seed=1, workers=1, evaluator=_Sphere(), log=lambda m: None)
    one = tmp_path / "one.pkl"
    fit.run_fit(one, generations=3, **kw)
    two = tmp_path / "two.pkl"
    fit.run_fit(two, generations=2, **kw)
    assert _state(two)[0] == 2
    fit.run_fit(two, generations=1, **kw)
    assert _state(one) == _state(two) and _state(two)[0] == 3
    best = fit.best_individual(two)
    assert best["generation"] == 3 and len(best["values"]) == len(fit.PARAMETERS)
    # the search stays within the bounds
    with open(two, "rb") as f:
        cp = pickle.load(f)
    for ind in cp["history"].genealogy_history.values():
        for p, v in zip(fit.PARAMETERS, ind, strict=True):
            assert p.lower - 1e-12 <= v <= p.upper + 1e-12, p.name
    assert best["total"] <= min(sum(ind.fitness.values) for ind in cp["population"])


class _FewerObjectives(_Sphere):
    def __init__(self) -> None:
        super().__init__()
        self.objectives = self.objectives[:-1]

    def init_simulator_and_evaluate_with_lists(self, values):
        return super().init_simulator_and_evaluate_with_lists(values)[:-1]


def test_a_checkpoint_of_other_objectives_is_refused(tmp_path: Path) -> None:
    """Continuing a checkpoint scored on another objective set would mix incomparable
    fitnesses: refused with a message, before anything runs."""
    ckpt = tmp_path / "old.pkl"
    kw = dict(offspring=4, seed=1, workers=1, log=lambda m: None)
    fit.run_fit(ckpt, generations=1, evaluator=_FewerObjectives(), **kw)
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="other parameters or objectives"):
        fit.run_fit(ckpt, generations=1, evaluator=_Sphere(), **kw)
    assert ckpt.read_bytes() == before


def _maybe_slow(values):
    import time

    if values[0] < 0:
        time.sleep(30)
    if values[0] == 0:
        raise RuntimeError("NEURON crashed")
    return [float(values[0])]


def test_timed_map_cuts_off_stuck_and_failed_evaluations() -> None:
    import multiprocessing as mp

    from pebble import ProcessPool

    with ProcessPool(2, context=mp.get_context("spawn")) as pool:
        m = fit.timed_map(pool, timeout_s=5.0, n_objectives=1)
        assert m(_maybe_slow, [[1.0], [-1.0], [0.0], [2.0]]) == [
            [1.0],
            [fit.MAX_SCORE],
            [fit.MAX_SCORE],
            [2.0],
        ]


def test_committed_fit_record_matches_the_biophysics_file() -> None:
    """The fit record in biophys_components/fits/ describes the committed default cell."""
    import hashlib
    import json

    from l5assets import paths

    record = paths.fits_dir() / f"{fit.FIT_CELL}.fit.json"
    if not record.exists():
        pytest.skip("no exported fit yet: the default cell holds the fit's start values")
    rec = json.loads(record.read_text())
    cell = paths.cells_dir() / f"{fit.FIT_CELL}.json"
    assert rec["biophysics_sha256"] == hashlib.sha256(cell.read_bytes()).hexdigest()
    vals = [p["value"] for p in rec["parameters"]]
    assert json.loads(cell.read_text())["regions"] == fit.biophysics_for(vals)["regions"]
    assert {o["feature"] for o in rec["objectives"]} == {o.feature for o in fit.OBJECTIVES}
