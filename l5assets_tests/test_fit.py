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


def test_a_chunk_stops_before_a_generation_that_would_overrun_its_minutes(tmp_path: Path) -> None:
    """--minutes: no generation is started that, as long as the last one, would end past the
    budget (a clock where each generation takes 0.6 min, a 1-minute budget: one generation,
    not two)."""
    ticks = iter([0.0, 36.0, 72.0, 108.0])
    kw = dict(offspring=4, seed=1, workers=1, evaluator=_Sphere(), log=lambda m: None)
    ckpt = tmp_path / "chunk.pkl"
    fit.run_fit(ckpt, minutes=1.0, clock=lambda: next(ticks), **kw)
    assert _state(ckpt)[0] == 1
    ticks = iter([0.0, 36.0, 72.0, 108.0])
    fit.run_fit(ckpt, minutes=1.3, clock=lambda: next(ticks), **kw)  # 0.6 + 0.6 fits 1.3
    assert _state(ckpt)[0] == 3


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
        # the polish's map: a failed point is None
        assert fit.timed_map(pool, timeout_s=5.0)(_maybe_slow, [[1.0], [0.0]]) == [[1.0], None]


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


class _StageSphere:
    """A cheap evaluator for one stage (distance of the free parameters to a point beside
    their starts, so that the search keeps finding better candidates)."""

    def __init__(self, st: fit.FitStage) -> None:
        import bluepyopt as bpop

        self.params = [
            bpop.parameters.Parameter(p.name, bounds=[p.lower, p.upper]) for p in st.parameters
        ]
        self.param_names = [p.name for p in st.parameters]
        self.objectives = [bpop.objectives.Objective(o.name) for o in st.fit_objectives]
        self._ranges = [p.upper - p.lower for p in st.parameters]
        self._starts = [
            min(p.upper, p.start + 0.2 * r)
            for p, r in zip(st.parameters, self._ranges, strict=True)
        ]

    def init_simulator_and_evaluate_with_lists(self, values):
        d = sum(abs(v - s) / r for v, s, r in zip(values, self._starts, self._ranges, strict=True))
        return [d] + [0.0] * (len(self.objectives) - 1)


def test_stages_cover_every_parameter_and_the_last_scores_everything() -> None:
    """soma and apical split the parameters between them; joint frees all of them; the stages
    after soma score every objective."""
    soma_apical = [n for st in fit.STAGES[:2] for n in st.free]
    assert sorted(soma_apical) == sorted(fit.PARAM_NAMES)
    assert fit.STAGE_NAMES == ("soma", "apical", "joint", "polish")
    assert fit.stage("polish").free == fit.PARAM_NAMES and fit.stage("polish").method == "slp"
    assert fit.stage("joint").free == fit.PARAM_NAMES
    for st in fit.STAGES[1:]:
        assert st.objectives == tuple(o.name for o in fit.OBJECTIVES)
    soma = fit.stage("soma")
    assert "gSKv3_1bar_soma" in soma.free and "zone_start" not in soma.free
    assert not any(o.feature.startswith("ca_train") for o in soma.fit_objectives)
    with pytest.raises(ValueError, match="stage: 'axon' is not one of soma, apical, joint, polish"):
        fit.stage("axon")


def test_a_stage_starts_from_the_previous_stage_best_and_freezes_it(tmp_path: Path) -> None:
    """The apical stage's fixed values are the soma stage's best when it starts; more soma
    generations afterwards do not change a resumed apical stage (it is told instead)."""
    kw = dict(offspring=4, seed=1, workers=1)
    quiet = dict(kw, log=lambda m: None)
    with pytest.raises(ValueError, match="stage: 'soma' has not run yet"):
        fit.run_stage("apical", fits_dir=tmp_path, evaluator=None, **quiet)
    soma, apical = fit.stage("soma"), fit.stage("apical")
    fit.run_stage("soma", fits_dir=tmp_path, evaluator=_StageSphere(soma), generations=2, **quiet)
    s_best = fit.stage_best("soma", tmp_path)
    assert s_best["generation"] == 2 and len(s_best["values"]) == len(soma.free)
    # the soma stage moved only its own parameters
    for n, v in zip(fit.PARAM_NAMES, s_best["full"], strict=True):
        if n not in soma.free:
            assert v == next(p.start for p in fit.PARAMETERS if p.name == n)
    fit.run_stage(
        "apical", fits_dir=tmp_path, evaluator=_StageSphere(apical), generations=1, **quiet
    )
    a_best = fit.stage_best("apical", tmp_path)
    assert a_best["base"]["after"] == "soma"
    assert a_best["base"]["values"] == dict(zip(fit.PARAM_NAMES, s_best["full"], strict=True))
    full = dict(zip(fit.PARAM_NAMES, a_best["full"], strict=True))
    for n, v in zip(fit.PARAM_NAMES, s_best["full"], strict=True):
        if n in soma.free:
            assert full[n] == v  # the soma stage's result carries into the final vector
    # soma runs on; a resumed apical stage keeps its frozen base and says so if soma improved
    _, base_file = fit.stage_paths("apical", tmp_path)
    before = base_file.read_bytes()
    fit.run_stage("soma", fits_dir=tmp_path, evaluator=_StageSphere(soma), generations=3, **quiet)
    said: list[str] = []
    fit.run_stage(
        "apical",
        fits_dir=tmp_path,
        evaluator=_StageSphere(apical),
        generations=1,
        log=said.append,
        **kw,
    )
    assert base_file.read_bytes() == before
    assert fit.stage_best("apical", tmp_path)["generation"] == 2
    a_after = fit.stage_best("apical", tmp_path)["full"]
    assert fit.stage_best("soma", tmp_path)["full"] != s_best["full"]  # seeded: it moved
    assert any("best has changed" in m for m in said)
    # the export: the last stage's best over its frozen base, cell file and record together
    measures = {o.feature: (o.mean if o.mean is not None else o.expect) for o in fit.OBJECTIVES}
    measures["bac.paired.spikecount"] = 3.0

    def fake_simulate(values, dL=fit.FIT_DL, units=fit.FIT_UNITS):
        return dict(measures)

    import hashlib
    import json

    cell, record = tmp_path / "cell.json", tmp_path / "fit.json"
    orig = fit.simulate
    fit.simulate = fake_simulate
    try:
        rec = fit.export_fit(cell, record, seed=1, fits_dir=tmp_path)
    finally:
        fit.simulate = orig
    assert rec["total_score"] == 0.0
    assert (
        json.loads(record.read_text())["biophysics_sha256"]
        == hashlib.sha256(cell.read_bytes()).hexdigest()
    )
    assert [st["name"] for st in rec["stages"]] == ["soma", "apical"]  # joint has not run
    assert rec["generations"] == 5 + 2
    assert rec["stages"][1]["started_after_generation"] == 2
    vals = [p["value"] for p in rec["parameters"]]
    assert vals == fit.stage_best("apical", tmp_path)["full"]
    assert json.loads(cell.read_text())["regions"] == fit.biophysics_for(vals)["regions"]
    # joint starts from the apical stage's best; once it has run, the export is its best
    joint = fit.stage("joint")
    fit.run_stage("joint", fits_dir=tmp_path, evaluator=_StageSphere(joint), generations=1, **quiet)
    j_best = fit.stage_best("joint", tmp_path)
    assert j_best["base"]["after"] == "apical"
    assert j_best["base"]["values"] == dict(zip(fit.PARAM_NAMES, a_after, strict=True))
    fit.simulate = fake_simulate
    try:
        rec = fit.export_fit(cell, record, seed=1, fits_dir=tmp_path)
    finally:
        fit.simulate = orig
    assert [st["name"] for st in rec["stages"]] == ["soma", "apical", "joint"]
    # the stage with the lowest best total of those scoring everything (joint on a tie)
    a_total = fit.stage_best("apical", tmp_path)["total"]
    chosen = "joint" if j_best["total"] <= a_total else "apical"
    assert rec["exported_stage"] == chosen
    want = j_best["full"] if chosen == "joint" else fit.stage_best("apical", tmp_path)["full"]
    assert [p["value"] for p in rec["parameters"]] == want
    # the polish starts from the best of the stages before it and, once it has every score
    # within 2 SD, is the export
    from l5assets_tests.test_fit_polish import fake_cell

    def polish(batches: int) -> dict:
        fake = lambda pts: [fake_cell(p) for p in pts]  # noqa: E731
        fit.run_stage("polish", fits_dir=tmp_path, evaluator=fake, generations=batches, **quiet)
        return fit.stage_best("polish", tmp_path)

    p_best = polish(1)
    assert p_best["base"]["after"] == chosen
    assert p_best["full"] == want  # one batch: the start, evaluated
    p_best = polish(600)
    assert max(p_best["scores"]) < 2.0 and p_best["generation"] >= 1
    fit.simulate = fake_simulate
    try:
        rec = fit.export_fit(cell, record, seed=1, fits_dir=tmp_path)
    finally:
        fit.simulate = orig
    assert rec["exported_stage"] == "polish"
    assert [p["value"] for p in rec["parameters"]] == p_best["full"]
    assert rec["stages"][-1]["method"] == "slp"
