"""Judging features against their targets and the human-readable report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from l5assets.cell.validation.features import _EXTRACT
from l5assets.cell.validation.targets import Target, targets_for
from l5assets.cell.validation.traces import ProtocolTraces


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def judge(target: Target, value: float | None) -> dict[str, Any]:
    """One feature row: value, target and pass/fail (a missing value fails)."""
    lo, hi = target.bounds()
    passed = value is not None and math.isfinite(value) and lo <= value <= hi
    return _jsonable(
        {
            "feature": target.feature,
            "protocol": target.protocol,
            "label": target.label,
            "value": value,
            "unit": target.unit,
            "target": target.text(),
            "mean": target.mean,
            "sd": target.sd,
            "lower": lo,
            "upper": hi,
            "passed": bool(passed),
            "gating": target.gating,
            "source": target.source,
            "method": target.method,
            "note": target.note,
        }
    )


def evaluate(
    traces: ProtocolTraces, family: str = "bluepyopt", informational: dict[str, str] | None = None
) -> dict[str, Any]:
    """Features of one protocol's traces judged against the targets of a cell `family`
    (`informational`: the cell's targets reported without gating, feature -> reason).

    Returns {"protocol", "features": [rows], "measures": {every extracted value},
    "passed": all gating rows pass}.
    """
    measures = _EXTRACT[traces.protocol](traces)
    rows = [
        judge(t, measures.get(t.feature))
        for t in targets_for(traces.protocol, family, informational)
    ]
    return {
        "protocol": traces.protocol,
        "features": rows,
        "measures": _jsonable(measures),
        "sites": _jsonable(traces.site_info),
        "passed": all(r["passed"] for r in rows if r["gating"]),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_validation(result: dict[str, Any], *, include_informational: bool = True) -> str:
    """Human-readable table: feature, value, target, PASS/FAIL (informational rows marked)."""
    rows = [r for r in result["features"] if include_informational or r["gating"]]
    w = max([len(r["label"]) for r in rows] + [7])
    lines = [
        f"cell {result['cell']}  morphology {result.get('morphology')}",
        f"{'feature':<{w}}  {'value':>10}  {'target':>16}  {'unit':<4}  result",
    ]
    for r in rows:
        verdict = "PASS" if r["passed"] else "FAIL"
        if not r["gating"]:
            verdict = f"({verdict.lower()}, info)"
        lines.append(
            f"{r['label']:<{w}}  {_fmt(r['value']):>10}  {r['target']:>16}  "
            f"{r['unit']:<4}  {verdict}"
        )
    fi = result.get("measures", {}).get("fi", {}).get("fi.curve")
    if fi:
        pairs = ", ".join(
            f"{a:g}:{r:g}" for a, r in zip(fi["amps_nA"], fi["rates_Hz"], strict=True)
        )
        lines.append(f"F-I (nA:Hz) {pairs}")
    ref = result.get("measures", {}).get("ref_fi", {}).get("ref_fi.curve")
    if ref:
        pairs = ", ".join(
            f"{a:g}:{r:g}" for a, r in zip(ref["amps_nA"], ref["rates_Hz"], strict=True)
        )
        lines.append(f"Reference-pipeline F-I, rate over 1-3 s (nA:Hz) {pairs}")
    notes = [r for r in result["features"] if r.get("note")]
    for r in notes:
        lines.append(f"informational for this cell: {r['label']}: {r['note']}")
    n_g = sum(r["gating"] for r in result["features"])
    n_p = sum(r["passed"] for r in result["features"] if r["gating"])
    lines.append(f"{n_p}/{n_g} targets pass -> {'PASS' if result['passed'] else 'FAIL'}")
    return "\n".join(lines)
