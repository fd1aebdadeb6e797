"""Compare the provenance of two outputs: which params, seeds, code or inputs differ.

Both outputs are resolved to their manifests; every recorded field is flattened to a dotted
name (e.g. `params.values.inh_frs.proximal.m`) and the differing fields are grouped by kind.
Time, host and run id (the manifest's volatile `run` section) are never reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l5assets.lineage.manifest import find_manifest, read_manifest, strip_volatile

# Category of a flattened field, by prefix (first match wins).
_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("params.values.", "params"),
    ("params.hash", "params"),
    ("params.name", "params"),
    ("params.counts.", "params"),
    ("params.file.", "params_file"),
    ("params.resolved.", "params_resolved"),
    ("seed", "seed"),
    ("stage_seeds.", "seed"),
    ("partition.", "partition"),
    ("asset", "asset"),
    ("code_version", "code"),
    ("code_versions.", "code"),
    ("code.", "code"),
    ("versions.", "versions"),
    ("components.", "components"),
    ("engine.", "engine"),
    ("inputs.", "inputs"),
    ("outputs", "outputs"),
    ("extra.", "extra"),
)
# Categories that restate another one (printed only with verbose output).
_REDUNDANT = {"params_resolved"}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted-name -> leaf value; lists of records are keyed by their relpath/name/index."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        if not obj and prefix:
            out[prefix] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and obj and all(isinstance(x, Mapping) for x in obj):
        for i, v in enumerate(obj):
            key = v.get("relpath") or v.get("name") or str(i)
            out.update(flatten(v, f"{prefix}[{key}]"))
    else:
        out[prefix] = obj
    return out


def _category(field: str) -> str:
    for prefix, cat in _CATEGORIES:
        if field == prefix.rstrip(".") or field.startswith(prefix):
            return cat
    return "other"


def _load(path: str | Path) -> tuple[Path, dict[str, Any]]:
    m = find_manifest(Path(path))
    if m is None:
        raise FileNotFoundError(f"no manifest.json describes {path}")
    return m, read_manifest(m)


def diff(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Differences between the manifests of two outputs.

    Returns a JSON-able dict: a / b (manifest paths), identical (bool), changed: {category:
    {field: {"a": value, "b": value}}} with categories params, params_file, seed, partition,
    asset, code, versions, components, engine, inputs, outputs, extra, other (plus
    params_resolved, which restates params), and summary: one line per category naming the
    changed fields. A value missing on one side is reported as None.
    """
    ma, da = _load(a)
    mb, db = _load(b)
    fa, fb = flatten(strip_volatile(da)), flatten(strip_volatile(db))
    changed: dict[str, dict[str, dict[str, Any]]] = {}
    for field in sorted(set(fa) | set(fb)):
        va, vb = fa.get(field), fb.get(field)
        if va != vb:
            changed.setdefault(_category(field), {})[field] = {"a": va, "b": vb}
    summary = {cat: sorted(fields) for cat, fields in changed.items() if cat not in _REDUNDANT}
    return {
        "a": str(ma),
        "b": str(mb),
        "identical": not changed,
        "changed": changed,
        "summary": summary,
    }


def _fmt(v: Any) -> str:
    # whole values: a hash cut short cannot be compared or searched for
    return repr(v)


def format_diff(d: Mapping[str, Any], verbose: bool = False) -> str:
    """Human-readable diff: one block per category, one line per changed field."""
    lines = [f"A: {d['a']}", f"B: {d['b']}"]
    if d.get("identical"):
        lines.append("identical provenance (apart from time and host)")
        return "\n".join(lines)
    order = [c for _, c in _CATEGORIES] + ["other"]
    cats = sorted(d["changed"], key=lambda c: order.index(c) if c in order else len(order))
    for cat in dict.fromkeys(cats):
        if cat in _REDUNDANT and not verbose:
            continue
        fields = d["changed"][cat]
        lines.append(f"{cat}: {len(fields)} field(s) differ")
        for field, ab in fields.items():
            lines.append(f"  {field}: {_fmt(ab['a'])} -> {_fmt(ab['b'])}")
    return "\n".join(lines)
