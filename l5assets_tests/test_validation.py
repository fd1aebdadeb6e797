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


@pytest.fixture(scope="module")
def bap_bac() -> dict[str, V.ProtocolTraces]:
    return V.run_protocols(V.DEFAULT_CELL, None, ["bap", "bac"])


def _row(ev: dict, feature: str) -> dict:
    return next(r for r in ev["features"] if r["feature"] == feature)


def test_targets_table_matches_spec() -> None:
    t = V.TARGETS_BY_FEATURE
    assert (t["bap.dend660.amplitude"].mean, t["bap.dend660.amplitude"].sd) == (45.0, 10.0)
    assert (t["bap.dend800.amplitude"].mean, t["bap.dend800.amplitude"].sd) == (36.0, 9.33)
    freqs = [(t[f"steps.step{i}.mean_frequency"].mean, t[f"steps.step{i}.mean_frequency"].sd)
             for i in (1, 2, 3)]
    assert freqs == [(6.0, 1.2), (8.5, 1.0), (17.5, 0.8)]
    assert t["bap.dend660.amplitude"].bounds() == (25.0, 65.0)
    steps = V.PROTOCOLS["steps"]
    assert steps.holding == -0.126
    assert [s.pulses[0].amp for s in steps.sweeps] == [0.458, 0.562, 0.95]
    assert all((p.delay, p.duration) == (700.0, 2000.0) for s in steps.sweeps for p in s.pulses)
    assert V.PROTOCOLS["fi"].sweeps[0].value == 0.1 and V.PROTOCOLS["fi"].sweeps[-1].value == 1.5
    # every gating target's check name is a valid Dagster name and unique
    names = [t.feature.replace(".", "__") for t in V.GATING_TARGETS]
    assert len(set(names)) == len(names)


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
    bap = base + 55 * np.exp(-((t - 300) / 1.5) ** 2) + 12 * np.exp(-np.clip(t - 300, 0, None)
                                                                    / 15) * (t > 300)
    # a 30 ms plateau near -10 mV: a Ca2+ spike
    plateau = np.where((t > 300) & (t < 330), -10.0, base)
    assert not V.ca_spike(t, bap, 295.0)["present"]
    ca = V.ca_spike(t, plateau, 295.0)
    assert ca["present"] and abs(ca["half_width"] - 30.0) < 0.1 and abs(ca["width"] - 30) < 0.1


def test_bap_on_default_cell(bap_bac: dict[str, V.ProtocolTraces]) -> None:
    tr = bap_bac["bap"]
    # recording sites lie on the apical trunk at the requested path distances (+- one segment)
    for site, d in (("dend660", 660.0), ("dend800", 800.0)):
        info = tr.site_info[site]
        assert abs(info["distance"] - d) < 5.0, info
        assert ".apic[" in info["section"]
    ev = V.evaluate(tr)
    assert _row(ev, "bap.soma.Spikecount")["value"] == 1.0
    a660 = _row(ev, "bap.dend660.amplitude")
    a800 = _row(ev, "bap.dend800.amplitude")
    # eFEL's amplitude agrees with a plain peak-minus-base measurement
    assert a660["value"] == pytest.approx(ev["measures"]["bap.dend660.peak_minus_base"], abs=0.5)
    # the published targets (mean +- 2 SD) hold on the default cell
    assert a660["passed"], a660
    assert a800["passed"], a800
    assert 20.0 < a800["value"] < 80.0


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
    text = V.format_validation({"cell": "L5PC_bbp", "features": ev["features"],
                                "passed": ev["passed"], "measures": {}})
    assert "bAP amplitude at 660 um" in text and "45 ± 10" in text


def test_unknown_cell_and_missing_morphology() -> None:
    with pytest.raises(V.ValidationError, match="unknown protocol"):
        V.run_protocols(V.DEFAULT_CELL, None, ["nope"])
    with pytest.raises(V.ValidationError, match="L5ASSETS_REFERENCE_MORPHOLOGY"):
        V.resolve_morphology("L5PC_reference", None)


def test_asset_direct_invocation_and_checks(tmp_path: Path) -> None:
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource

    storage = StorageResource(root=str(tmp_path))
    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    ctx = dg.build_asset_context(partition_key="L5PC_bbp")
    res = bap_asset(context=ctx, config=A.CellValidationConfig(), storage=storage,
                    cell_model=CellModelResource())
    assert isinstance(res, dg.MaterializeResult)
    md = res.metadata
    assert "bAP amplitude at 660 um" in md["features"].value
    assert Path(md["plot"].value).exists()
    out = tmp_path / "L5PC_bbp" / "shared" / "validation_bap"
    rec = json.loads((out / A.FEATURES_FILE).read_text())
    assert rec["cell"] == "L5PC_bbp" and rec["mod_hash"]
    # the checks read the written features back
    for target in V.GATING_TARGETS:
        if target.protocol == "bap":
            r = A.evaluate_check(storage, "validation_bap", "L5PC_bbp", target)
            assert r.passed is True
            assert r.metadata["target"].text.startswith(target.text())
    missing = A.evaluate_check(storage, "validation_bac", "L5PC_bbp",
                               V.TARGETS_BY_FEATURE["bac.paired.ca_spike"])
    assert missing.passed is False
    # same inputs -> byte-identical outputs
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    bap_asset(context=dg.build_asset_context(partition_key="L5PC_bbp"),
              config=A.CellValidationConfig(), storage=storage, cell_model=CellModelResource())
    assert first == {p.name: p.read_bytes() for p in out.iterdir()}


def test_reference_cell_without_morphology_fails_clearly(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource

    monkeypatch.delenv(A.MORPHOLOGY_ENV, raising=False)
    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    with pytest.raises(dg.Failure, match=A.MORPHOLOGY_ENV):
        bap_asset(context=dg.build_asset_context(partition_key="L5PC_reference"),
                  config=A.CellValidationConfig(), storage=StorageResource(root=str(tmp_path)),
                  cell_model=CellModelResource())


def test_materialize_with_checks(tmp_path: Path) -> None:
    """Real Dagster materialization of one protocol asset with its checks, in process."""
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.cell_validation import defs
    from l5assets.defs.resources import CellModelResource, StorageResource

    bap_asset = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    checks = [c for c in A.protocol_checks
              if any(k.asset_key.to_user_string() == "validation_bap" for k in c.check_keys)]
    assert len(checks) == 2 and defs is not None
    result = dg.materialize(
        [bap_asset, *checks],
        partition_key="L5PC_bbp",
        resources={"storage": StorageResource(root=str(tmp_path)),
                   "cell_model": CellModelResource()},
    )
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 2 and all(e.passed for e in evals)


@pytest.mark.slow
def test_full_validation_default_cell(tmp_path: Path) -> None:
    res = V.validate_cell(V.DEFAULT_CELL, out_dir=tmp_path, workers=2)
    feats = {r["feature"]: r for r in res["features"]}
    assert set(feats) == {t.feature for t in V.TARGETS}
    for p in V.PROTOCOL_NAMES:
        assert (tmp_path / f"{p}.png").exists()
    # the SPEC section 8 numeric targets hold on the default cell
    for f in ("bap.dend660.amplitude", "bap.dend800.amplitude", "steps.step1.mean_frequency",
              "steps.step2.mean_frequency", "steps.step3.mean_frequency", "fi.monotonic",
              "fi.rheobase"):
        assert feats[f]["passed"], feats[f]
    curve = res["measures"]["fi"]["fi.curve"]
    assert curve["amps_nA"][0] == 0.1 and len(curve["rates_Hz"]) == 15
    json.dumps(res)  # JSON-able for `l5assets validate-cell --json`


@pytest.mark.slow
def test_dagster_group_materializes_with_checks_and_summary(tmp_path: Path) -> None:
    """Every validation asset of the default cell, its checks and the summary, through Dagster."""
    from l5assets.defs.cell_validation import assets as A
    from l5assets.defs.resources import CellModelResource, StorageResource

    result = dg.materialize(
        [*A.protocol_assets, A.validation_summary, *A.protocol_checks],
        partition_key=V.DEFAULT_CELL,
        resources={"storage": StorageResource(root=str(tmp_path)),
                   "cell_model": CellModelResource()},
    )
    assert result.success
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert len(evals) == len(V.GATING_TARGETS)
    summary = json.loads(
        (tmp_path / V.DEFAULT_CELL / "shared" / "validation_summary" / A.SUMMARY_FILE).read_text()
    )
    rows = {r["feature"]: r for r in summary["features"]}
    # the checks agree with the summary, target by target
    for t in V.GATING_TARGETS:
        assert evals[A.check_name(t.feature)] == rows[t.feature]["passed"]
    md = result.asset_materializations_for_node("validation_summary")[0].metadata
    assert md["n_targets"].value == len(V.GATING_TARGETS)
