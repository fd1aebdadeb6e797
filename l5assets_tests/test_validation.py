"""Cell validation: real NEURON runs of the published protocols on the default cell.

The fast tests run the bAP and BAC protocols (a few seconds of CPU each, in subprocesses) and
judge the feature code on synthetic traces; the slow test runs every protocol.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from l5assets.cell import validation as V
from l5assets.lineage.manifest import strip_volatile


@pytest.fixture(scope="module")
def bap_bac() -> dict[str, V.ProtocolTraces]:
    return V.run_protocols(V.DEFAULT_CELL, None, ["bap", "bac"])


def _row(ev: dict, feature: str) -> dict:
    return next(r for r in ev["features"] if r["feature"] == feature)


def test_targets_table_matches_spec() -> None:
    t = V.TARGETS_BY_FEATURE
    assert (t["bap.dend1.amplitude"].mean, t["bap.dend1.amplitude"].sd) == (45.0, 10.0)
    assert (t["bap.dend2.amplitude"].mean, t["bap.dend2.amplitude"].sd) == (36.0, 9.33)
    freqs = [
        (t[f"steps.step{i}.mean_frequency"].mean, t[f"steps.step{i}.mean_frequency"].sd)
        for i in (1, 2, 3)
    ]
    assert freqs == [(6.0, 1.2), (8.5, 1.0), (17.5, 0.8)]
    assert t["bap.dend1.amplitude"].bounds() == (25.0, 65.0)
    steps = V.PROTOCOLS["steps"]
    assert steps.holding == -0.126
    assert [s.pulses[0].amp for s in steps.sweeps] == [0.458, 0.562, 0.95]
    assert all((p.delay, p.duration) == (700.0, 2000.0) for s in steps.sweeps for p in s.pulses)
    assert V.PROTOCOLS["fi"].sweeps[0].value == 0.1 and V.PROTOCOLS["fi"].sweeps[-1].value == 1.5
    # Hay 2011 (SPEC 8b): steps, BAC and bAP targets
    hay = V.PROTOCOLS["hay_steps"]
    assert hay.holding == 0.0 and [s.pulses[0].amp for s in hay.sweeps] == [0.619, 0.793, 1.507]
    assert all((p.delay, p.duration) == (700.0, 2000.0) for s in hay.sweeps for p in s.pulses)
    hf = [
        (t[f"hay_steps.step{i}.mean_frequency"].mean, t[f"hay_steps.step{i}.mean_frequency"].sd)
        for i in (1, 2, 3)
    ]
    assert hf == [(9.0, 0.88), (14.5, 0.56), (22.5, 2.2222)]
    assert [t[f"hay_steps.step{i}.AP_width"].mean for i in (1, 2, 3)] == [1.3077, 1.3833, 1.8647]
    assert (t["bac.paired.BAC_ISI"].mean, t["bac.paired.BAC_ISI"].sd) == (9.901, 0.8517)
    assert (t["bac.paired.caSpike_height"].mean, t["bac.paired.caSpike_width"].mean) == (
        6.73,
        37.43,
    )
    assert t["bac.paired.BAC_ahpdepth"].mean == -65.0
    assert t["ca_train.critical_frequency"].bounds() == (60.0, 120.0)
    # the reference pipeline's own F-I protocol
    ref = V.PROTOCOLS["ref_fi"]
    assert (ref.tstop, ref.fixed_dt, ref.stim_window) == (3000.0, 0.1, (1000.0, 3000.0))
    assert [s.pulses[0].amp for s in ref.sweeps] == [0.4, 0.8, 1.2, 2.0, 3.0]
    assert all((p.delay, p.duration) == (500.0, 2500.0) for s in ref.sweeps for p in s.pulses)
    # every gating target's check name is a valid Dagster name and unique
    names = [t.feature.replace(".", "__") for t in V.GATING_TARGETS]
    assert len(set(names)) == len(names)


def test_target_families_and_informational_rows() -> None:
    bpo = {t.feature: t for t in V.targets_for(None, "bluepyopt")}
    hay = {t.feature: t for t in V.targets_for(None, "hay2011")}
    # BluePyOpt's steps gate the BluePyOpt family only; Hay's steps the Hay family only
    assert bpo["steps.step1.mean_frequency"].gating and "steps.step1.mean_frequency" not in hay
    assert (
        hay["hay_steps.step2.mean_frequency"].gating and "hay_steps.step2.mean_frequency" not in bpo
    )
    # Hay's BAC features gate Hay-family cells, are reported for the others
    for f in (
        "bac.paired.BAC_ISI",
        "bac.paired.caSpike_height",
        "bac.paired.caSpike_width",
        "bac.paired.BAC_ahpdepth",
    ):
        assert hay[f].gating and not bpo[f].gating
    for f in (
        "bap.dend1.amplitude",
        "bac.paired.ca_spike",
        "ca_train.critical_frequency",
        "ca_train.single.ca_spike",
        "fi.rheobase",
    ):
        assert hay[f].gating and bpo[f].gating
    # a cell's biophysics file can make a target informational, with its reason
    r = V.targets_for("ca_train", "hay2011", {"ca_train.critical_frequency": "why"})
    row = next(t for t in r if t.feature == "ca_train.critical_frequency")
    assert not row.gating and row.note == "why"
    from l5assets.cell.biophysics import load_biophysics

    assert load_biophysics(V.DEFAULT_CELL).validation.targets == "hay2011"
    assert load_biophysics(V.DEFAULT_CELL).validation.sites == "main_bifurcation"
    assert load_biophysics("L5PC_hay2011").validation.sites == "absolute"
    assert load_biophysics("L5PC_bbp").validation.targets == "bluepyopt"
    assert V.FAMILY_PROTOCOLS["hay2011"] == ("fi", "hay_steps", "bap", "bac", "ca_train", "ref_fi")


def test_plan_units_balances_sweeps_over_workers() -> None:
    names = list(V.FAMILY_PROTOCOLS["hay2011"])
    groups = V.plan_units(names, 2)
    assert len(groups) == 2
    # every sweep of every protocol is planned exactly once
    planned = sorted((n, i) for g in groups for n, idx in g for i in idx)
    assert planned == sorted((n, i) for n in names for i in range(len(V.PROTOCOLS[n].sweeps)))
    from l5assets.cell.validation.runner import _cost

    loads = [sum(_cost(n, len(idx)) for n, idx in g) for g in groups]
    assert max(loads) / min(loads) < 1.3
    assert V.plan_units(names, 1) == [
        [
            (n, list(range(len(V.PROTOCOLS[n].sweeps))))
            for n in sorted(names, key=_cost, reverse=True)
        ]
    ]


def test_reference_fi_and_ca_events_on_synthetic_traces() -> None:
    from l5assets.cell.validation.features import _features_ref_fi, threshold_crossings

    t = np.arange(0, 3000.0 + 1e-9, 0.1)
    # spikes every 50 ms from 520 ms: 40 of them in [1000, 3000)
    v = np.full(t.size, -70.0)
    for s in np.arange(520.0, 3000.0, 50.0):
        v[(t >= s) & (t < s + 1.0)] = 20.0
    assert threshold_crossings(t, v, -10.0).size == len(np.arange(520.0, 3000.0, 50.0))
    names = [s.name for s in V.PROTOCOLS["ref_fi"].sweeps]
    tr = V.ProtocolTraces("ref_fi", 0.1, names, ["soma"], np.stack([v[None, :]] * len(names)))
    f = _features_ref_fi(tr)
    assert f["ref_fi.curve"]["rates_Hz"] == [20.0] * 5 and f["ref_fi.0.4nA.rate"] == 20.0
    # continuous dendritic trace: two 30 ms plateaus and a 3 ms bAP -> two Ca2+ spikes
    td = np.arange(0, 1000.0, 0.1)
    vd = np.full(td.size, -65.0)
    vd[(td > 200) & (td < 230)] = -10.0
    vd[(td > 500) & (td < 503)] = 0.0
    vd[(td > 700) & (td < 735)] = -5.0
    ev = V.ca_spike_events(td, vd, after=100.0)
    assert ev["count"] == 2 and ev["base_mv"] == -65.0
    assert ev["times_ms"][0] == pytest.approx(200.1) and ev["half_widths_ms"][1] == pytest.approx(
        34.9, abs=0.11
    )


def test_judge_and_missing_values() -> None:
    t = V.TARGETS_BY_FEATURE["steps.step3.mean_frequency"]
    assert V.judge(t, 17.5 + 1.6)["passed"]
    assert not V.judge(t, 17.5 + 1.61)["passed"]
    assert not V.judge(t, None)["passed"]
    assert not V.judge(t, math.nan)["passed"]


def test_ca_spike_criterion_on_synthetic_traces() -> None:
    t = np.arange(0, 600, V.DT)
    base = -70.0
    # a 3 ms wide bAP with a slow passive tail: not a Ca2+ spike
    bap = (
        base
        + 55 * np.exp(-(((t - 300) / 1.5) ** 2))
        + 12 * np.exp(-np.clip(t - 300, 0, None) / 15) * (t > 300)
    )
    # a 30 ms plateau near -10 mV: a Ca2+ spike
    plateau = np.where((t > 300) & (t < 330), -10.0, base)
    assert not V.ca_spike(t, bap, 295.0)["present"]
    ca = V.ca_spike(t, plateau, 295.0)
    assert ca["present"] and abs(ca["half_width"] - 30.0) < 0.1 and abs(ca["width"] - 30) < 0.1


def test_main_bifurcation_and_site_shift() -> None:
    """The main apical bifurcation (SPEC 8b: ~375 um on C060114A7, ~627 um on cell1) and the
    trunk-site shift that follows from it, on the real morphologies."""
    from neuron import h

    from l5assets.cell.builder import build_cell
    from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms

    load_mechanisms(compile_mechanisms())
    cell = build_cell(V.DEFAULT_CELL, None, dL=20.0)
    bif = V.main_bifurcation(cell)
    assert bif == pytest.approx(374.7, abs=1.0)
    assert V.site_shift(cell) == pytest.approx(bif - 626.8)
    ref = build_cell("L5PC_bbp", None, dL=20.0)  # absolute sites: no shift
    assert V.site_shift(ref) == 0.0
    cell1 = Path(__file__).resolve().parents[2] / "shared" / "reference" / "cell1.asc"
    if cell1.exists():  # Hay's own morphology, where the shipped site offsets come from
        hay = build_cell("L5PC_hay2011", cell1, dL=20.0)
        assert V.main_bifurcation(hay) == pytest.approx(626.8, abs=1.0)
    del h


def test_train_pulses_sit_just_above_each_pulses_threshold() -> None:
    """ca_train's calibration (Larkum et al. 1999: one AP per pulse): on the default cell every
    pulse of the single sweep and the 50 Hz train evokes its AP in its window at the
    calibrated amplitude, and misses it one resolution step below its threshold."""
    from neuron import h

    from l5assets.cell.builder import build_cell
    from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms
    from l5assets.cell.validation.features import _EXTRACT
    from l5assets.cell.validation.protocols import (
        TRAIN_CALIBRATION,
        TRAIN_MARGIN,
        train_protocol,
    )
    from l5assets.cell.validation.worker import _run_protocol, calibrate_train_pulses

    load_mechanisms(compile_mechanisms())
    h.load_file("stdrun.hoc")
    cell = build_cell(V.DEFAULT_CELL, None, dL=20.0)
    shift = V.site_shift(cell)
    kw = dict(shift=shift, cvode=True, atol=V.CVODE_ATOL, dt=V.DT)
    amps = calibrate_train_pulses(h, cell, sweeps=(0, 1), **kw)
    assert sorted(amps) == ["50Hz", "single"] and len(amps["50Hz"]) == 5
    assert amps["50Hz"][0] == amps["single"][0]  # the same state before the first pulse
    tr = _run_protocol(
        h,
        cell,
        train_protocol(amps),
        sweeps=(0, 1),
        use_savestate=True,
        calibrate=False,
        shift=shift,
        cvode=True,
    )
    f = _EXTRACT["ca_train"](tr)
    assert f["ca_train.single.pulse_aps"] == 1 and f["ca_train.50Hz.pulse_aps"] == 5
    # one step below the threshold, the 4th pulse of the train evokes no AP of its own
    below = list(amps["50Hz"])
    below[3] = below[3] / TRAIN_MARGIN - 1.5 * TRAIN_CALIBRATION[2]
    tr = _run_protocol(
        h,
        cell,
        train_protocol({"50Hz": below}),
        sweeps=(1,),
        use_savestate=True,
        calibrate=False,
        shift=shift,
        cvode=True,
    )
    assert _EXTRACT["ca_train"](tr)["ca_train.50Hz.pulse_aps"] == 4
    sw = train_protocol(amps).sweeps[1]
    assert [p.amp for p in sw.pulses] == amps["50Hz"]
    del h


def test_bap_on_default_cell(bap_bac: dict[str, V.ProtocolTraces]) -> None:
    tr = bap_bac["bap"]
    # recording sites lie on the apical trunk at Hay's cell1 distances moved by the shift
    shift = 374.7 - 626.8
    for site, d in (("dend1", 660.0 + shift), ("dend2", 800.0 + shift)):
        info = tr.site_info[site]
        # the segment holding the site (Hay's dL 20 um: segments up to ~40 um long)
        assert abs(info["distance"] - d) < 20.0, info
        assert ".apic[" in info["section"]
    ev = V.evaluate(tr, "hay2011")
    assert _row(ev, "bap.soma.Spikecount")["value"] == 1.0
    a1 = _row(ev, "bap.dend1.amplitude")
    a2 = _row(ev, "bap.dend2.amplitude")
    # eFEL's amplitude agrees with a plain peak-minus-base measurement
    assert a1["value"] == pytest.approx(ev["measures"]["bap.dend1.peak_minus_base"], abs=0.5)
    # the bAP attenuates along the trunk
    assert 10.0 < a2["value"] < a1["value"] < 100.0


def test_bac_protocol_runs_and_is_judged(bap_bac: dict[str, V.ProtocolTraces]) -> None:
    tr = bap_bac["bac"]
    ev = V.evaluate(tr)
    m = ev["measures"]
    # the somatic pulse gives an AP; the distal EPSP alone gives a subthreshold dendritic bump
    assert m["bac.soma_only.spikecount"] >= 1
    assert m["bac.epsp_only.spikecount"] == 0
    t = tr.t
    vd = tr.v("epsp_only", "dend")
    bump = vd[t >= 300].max() - vd[(t > 280) & (t < 295)].mean()
    assert 2.0 < bump < 40.0
    # the paired sweep depolarises the dendrite more than the pulse alone
    assert tr.v("paired", "dend").max() > tr.v("soma_only", "dend").max()
    for r in ev["features"]:
        assert isinstance(r["passed"], bool)
    assert ev["passed"] == all(r["passed"] for r in ev["features"] if r["gating"])


def test_savestate_equals_fresh_runs(bap_bac: dict[str, V.ProtocolTraces]) -> None:
    """Restoring the shared lead-in gives the same traces as simulating each sweep afresh.

    Without a somatic pulse the two are bit-identical; with one, CVode's step sequence before
    the pulse differs slightly (the pulse onset is a discontinuity it steps to), which stays
    within the integrator's tolerance."""
    a = bap_bac["bac"]  # SaveState is the default
    b = V.run_protocols(V.DEFAULT_CELL, None, ["bac"], savestate=False)["bac"]
    i = a.sweeps.index("epsp_only")
    assert np.array_equal(a.data[i], b.data[i])
    assert np.abs(a.data - b.data).max() < 0.01  # mV
    ma, mb = V.evaluate(a)["measures"], V.evaluate(b)["measures"]
    assert ma.keys() == mb.keys()
    for k, v in mb.items():
        assert ma[k] == pytest.approx(v, abs=0.05), k


def test_format_and_plot(bap_bac: dict[str, V.ProtocolTraces], tmp_path: Path) -> None:
    ev = V.evaluate(bap_bac["bap"])
    png = V.plot_protocol(bap_bac["bap"], ev, tmp_path / "bap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = V.format_validation(
        {"cell": "L5PC_bbp", "features": ev["features"], "passed": ev["passed"], "measures": {}}
    )
    assert "bAP amplitude at trunk site 1 (660 um on cell1)" in text and "45 ± 10" in text


def test_unknown_cell_and_missing_morphology() -> None:
    with pytest.raises(V.ValidationError, match="unknown protocol"):
        V.run_protocols(V.DEFAULT_CELL, None, ["nope"])
    with pytest.raises(V.ValidationError, match="L5ASSETS_REFERENCE_MORPHOLOGY"):
        V.resolve_morphology("L5PC_reference", None)


def test_asset_direct_invocation_and_checks(tmp_path: Path) -> None:
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource
    from l5assets.defs.slurm import SlurmResource

    storage = StorageResource(root=str(tmp_path))
    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    ctx = dg.build_asset_context(partition_key="L5PC_bbp")
    res = bap_asset(
        context=ctx,
        config=A.CellValidationConfig(),
        storage=storage,
        cell_model=CellModelResource(),
        slurm=SlurmResource(executor="local"),
    )
    assert isinstance(res, dg.MaterializeResult)
    md = res.metadata
    assert "bAP amplitude at trunk site 1" in md["features"].value
    assert Path(md["plot"].value).exists()
    # its own namespace, not a param set's folder, with a lineage manifest beside the outputs
    out = tmp_path / "_cells" / "L5PC_bbp" / "validation_bap"
    assert not (tmp_path / "L5PC_bbp").exists()
    rec = json.loads((out / A.FEATURES_FILE).read_text())
    assert rec["cell"] == "L5PC_bbp" and rec["mod_hash"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["asset"] == "validation_bap" and manifest["extra"]["cell"] == "L5PC_bbp"
    assert {o["relpath"] for o in manifest["outputs"]} >= {A.FEATURES_FILE, "bap.png"}
    assert "biophysics" in manifest["inputs"] and "morphology" in manifest["inputs"]
    assert md["path_manifest"].value == str(out / "manifest.json")
    # the checks read the written features back
    for target in V.GATING_TARGETS:
        if target.protocol == "bap":
            r = A.evaluate_check(storage, "validation_bap", "L5PC_bbp", target)
            assert r.passed is True
            assert r.metadata["target"].text.startswith(target.text())
    missing = A.evaluate_check(
        storage, "validation_bac", "L5PC_bbp", V.TARGETS_BY_FEATURE["bac.paired.ca_spike"]
    )
    assert missing.passed is False
    # a protocol outside the cell's family is recorded as not applicable, without a run
    hay_steps = next(
        a for a in A.protocol_assets if a.key.to_user_string() == "validation_hay_steps"
    )
    res2 = hay_steps(
        context=dg.build_asset_context(partition_key="L5PC_bbp"),
        config=A.CellValidationConfig(),
        storage=storage,
        cell_model=CellModelResource(),
        slurm=SlurmResource(executor="local"),
    )
    assert res2.metadata["applies"] is False
    na = A.evaluate_check(
        storage,
        "validation_hay_steps",
        "L5PC_bbp",
        V.TARGETS_BY_FEATURE["hay_steps.step1.mean_frequency"],
    )
    assert na.passed is True and "not a target" in na.metadata["applies"].text

    # same inputs -> byte-identical outputs (the manifest differs only in its run section)
    def outputs() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in out.iterdir() if p.name != "manifest.json"}

    first, first_manifest = (
        outputs(),
        strip_volatile(json.loads((out / "manifest.json").read_text())),
    )
    res3 = bap_asset(
        context=dg.build_asset_context(partition_key="L5PC_bbp"),
        config=A.CellValidationConfig(),
        storage=storage,
        cell_model=CellModelResource(),
        slurm=SlurmResource(executor="local"),
    )
    assert first == outputs()
    assert first_manifest == strip_volatile(json.loads((out / "manifest.json").read_text()))
    assert res3.data_version == res.data_version


def test_reference_cell_without_morphology_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource
    from l5assets.defs.slurm import SlurmResource

    monkeypatch.delenv(A.MORPHOLOGY_ENV, raising=False)
    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    with pytest.raises(dg.Failure, match=A.MORPHOLOGY_ENV):
        bap_asset(
            context=dg.build_asset_context(partition_key="L5PC_reference"),
            config=A.CellValidationConfig(),
            storage=StorageResource(root=str(tmp_path)),
            cell_model=CellModelResource(),
            slurm=SlurmResource(executor="local"),
        )


def test_materialize_with_checks(tmp_path: Path) -> None:
    """Real Dagster materialization of one protocol asset with its checks, in process."""
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.cell_validation import defs
    from l5assets.defs.resources import CellModelResource, StorageResource
    from l5assets.defs.slurm import SlurmResource

    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    checks = [
        c
        for c in A.protocol_checks
        if any(k.asset_key.to_user_string() == "validation_bap" for k in c.check_keys)
    ]
    assert len(checks) == 2 and defs is not None
    result = dg.materialize(
        [bap_asset, *checks],
        partition_key="L5PC_bbp",
        resources={
            "storage": StorageResource(root=str(tmp_path)),
            "cell_model": CellModelResource(),
            "slurm": SlurmResource(executor="local"),
        },
    )
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 2 and all(e.passed for e in evals)


_FITTED = (
    Path(__file__).resolve().parents[1]
    / "biophys_components"
    / "fits"
    / f"{V.DEFAULT_CELL}.fit.json"
).exists()


@pytest.mark.slow
@pytest.mark.xfail(
    not _FITTED,
    reason="the default cell's fit is not exported yet: the file holds the fit's start values",
    strict=False,
)
def test_full_validation_default_cell(tmp_path: Path) -> None:
    res = V.validate_cell(V.DEFAULT_CELL, out_dir=tmp_path)
    feats = {r["feature"]: r for r in res["features"]}
    assert set(feats) == {t.feature for t in V.targets_for(None, "hay2011")}
    for p in V.FAMILY_PROTOCOLS["hay2011"]:
        assert (tmp_path / f"{p}.png").exists()
    # every gating target of Hay 2011 holds on the default cell
    failed = [f for f, r in feats.items() if r["gating"] and not r["passed"]]
    assert not failed, failed
    assert res["passed"]
    curve = res["measures"]["fi"]["fi.curve"]
    assert curve["amps_nA"][0] == 0.1 and len(curve["rates_Hz"]) == 15
    json.dumps(res)  # JSON-able for `l5assets validate-cell --json`


@pytest.mark.slow
def test_dagster_group_materializes_with_checks_and_summary(tmp_path: Path) -> None:
    """Every validation asset of the default cell, its checks and the summary, through Dagster."""
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource
    from l5assets.defs.slurm import SlurmResource

    result = dg.materialize(
        [*A.protocol_assets, A.validation_summary, *A.protocol_checks],
        partition_key=V.DEFAULT_CELL,
        resources={
            "storage": StorageResource(root=str(tmp_path)),
            "cell_model": CellModelResource(),
            "slurm": SlurmResource(executor="local"),
        },
    )
    assert result.success
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert len(evals) == len(A.protocol_checks)
    summary = json.loads(
        (tmp_path / "_cells" / V.DEFAULT_CELL / "validation_summary" / A.SUMMARY_FILE).read_text()
    )
    rows = {r["feature"]: r for r in summary["features"]}
    gating = [t for t in V.targets_for(None, "hay2011") if t.gating]
    # the checks agree with the summary, target by target
    for t in gating:
        assert evals[A.check_name(t.feature)] == rows[t.feature]["passed"]
    md = result.asset_materializations_for_node("validation_summary")[0].metadata
    assert md["n_targets"].value == len(gating)
