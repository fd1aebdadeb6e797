"""Sweep definitions: a base param set, a grid of changed fields, a list of seeds.

`l5assets sweep --base L5_quick --set inh_frs.proximal.m=10,16.9,25 --seeds 1-100` writes one
validated params file per grid point and lists the (param set, seed) partitions to run.

Grid: the cartesian product of the `--set` values, the first `--set` varying slowest. A field
is a dotted path into the base params JSON (`inh_frs.proximal.m`, `time.stop`, `dL`) that must
exist there; values are JSON scalars (numbers, true/false, null, or a string).

Names (partition keys, `[A-Za-z0-9_-]` only): `<base>__<field>-<value>` per changed field,
joined by `__`, where `<field>` is the path with `.` -> `_` and `<value>` the value's JSON text
with `.` -> `p`, `-` -> `m` and `+` dropped, e.g. `L5_quick__inh_frs_proximal_m-16p9`,
`L5_quick__time_stop-0p5__dL-10`. A value whose text has another character (a string with a
space, say) is refused. Each file gets a description naming its base and changes.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l5assets.params import (
    ParamsError,
    canonical_json,
    param_set_path,
    validate_param_set_name,
    validate_params,
    validate_seed,
)
from l5assets.storage import atomic_write_text

MAX_POINTS = 1000
MAX_NAME = 200  # a file name (<name>.json) and a folder: well under 255
MAX_SEEDS = 100_000
_TOKEN = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True)
class GridPoint:
    """One param set of a sweep: its name, the changed fields and the full params JSON."""

    name: str
    changes: tuple[tuple[str, Any], ...]
    raw: dict[str, Any]


def parse_set(spec: str) -> tuple[str, list[Any]]:
    """`field.path=v1,v2,...` -> (path, values)."""
    path, sep, values = spec.partition("=")
    path = path.strip()
    if not sep or not path or not values.strip():
        raise ParamsError(f"sweep --set {spec!r}: expected FIELD=V1[,V2...], e.g. dL=5,10")
    out = []
    for v in values.split(","):
        v = v.strip()
        try:
            out.append(json.loads(v))
        except json.JSONDecodeError:
            out.append(v)  # a bare word: a string
        if isinstance(out[-1], float) and not math.isfinite(out[-1]):
            raise ParamsError(f"sweep --set {path}: {v} is not a finite number")
    # 1 and 1.0 are the same value (the params validation reads both alike)
    same = [float(x) if isinstance(x, int | float) and not isinstance(x, bool) else x for x in out]
    if len(set(map(canonical_json, same))) != len(out):
        raise ParamsError(f"sweep --set {path}: values repeat ({values})")
    return path, out


def parse_seeds(spec: str) -> list[int]:
    """`1-100`, `1,2,5` or `1-3,7` -> sorted distinct seeds (each in the seed range)."""
    seeds: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            a = validate_seed(lo)
            b = validate_seed(hi) if dash else a
        except ParamsError as e:
            raise ParamsError(f"sweep --seeds {spec!r}: {e}") from None
        if b < a:
            raise ParamsError(f"sweep --seeds {spec!r}: range {part} runs backwards")
        if len(seeds) + (b - a + 1) > MAX_SEEDS:
            raise ParamsError(f"sweep --seeds {spec!r}: more than {MAX_SEEDS} seeds")
        seeds.update(range(a, b + 1))
    return sorted(seeds)


def _token(value: Any, path: str) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    tok = text.replace(".", "p").replace("-", "m").replace("+", "")
    if not _TOKEN.fullmatch(tok):
        raise ParamsError(
            f"sweep --set {path}: value {value!r} cannot be part of a param set name "
            "(allowed: numbers, true/false/null, words of [A-Za-z0-9_])"
        )
    return tok


def point_name(base: str, changes: Sequence[tuple[str, Any]]) -> str:
    """The param set name of one grid point (see the module docstring)."""
    parts = [f"{path.replace('.', '_')}-{_token(v, path)}" for path, v in changes]
    name = "__".join([base, *parts])
    if len(name) > MAX_NAME:
        raise ParamsError(
            f"sweep: param set name {name[:40]}... is {len(name)} characters, allowed: at most "
            f"{MAX_NAME} (fewer or shorter --set fields)"
        )
    return validate_param_set_name(name)


def _set_field(raw: dict[str, Any], path: str, value: Any, base: str) -> None:
    keys = path.split(".")
    d: Any = raw
    for i, k in enumerate(keys):
        if not isinstance(d, dict) or k not in d:
            where = ".".join(keys[:i]) or "the top level"
            raise ParamsError(f"sweep --set {path}: {base} has no field {k!r} at {where}")
        if i == len(keys) - 1:
            if isinstance(d[k], dict | list):
                raise ParamsError(f"sweep --set {path}: a section, not a value, in {base}")
            d[k] = value
        else:
            d = d[k]


def grid(base: str, base_raw: Mapping[str, Any], sets: Sequence[str]) -> list[GridPoint]:
    """Every grid point of the sweep, each validated as a param set (ParamsError naming the
    point and the field otherwise); nothing is written."""
    if not sets:
        raise ParamsError("sweep: give at least one --set FIELD=V1,V2")
    axes = [parse_set(s) for s in sets]
    paths_ = [p for p, _ in axes]
    if len(set(paths_)) != len(paths_):
        raise ParamsError(f"sweep: a field is set twice ({', '.join(paths_)})")
    n = 1
    for _, vals in axes:
        n *= len(vals)
    if n > MAX_POINTS:
        raise ParamsError(f"sweep: {n} grid points, allowed: at most {MAX_POINTS}")
    points = []
    for combo in itertools.product(*(vals for _, vals in axes)):
        changes = tuple(zip(paths_, combo, strict=True))
        raw = copy.deepcopy(dict(base_raw))
        for path, v in changes:
            _set_field(raw, path, v, base)
        name = point_name(base, changes)
        what = ", ".join(f"{p} = {json.dumps(v)}" for p, v in changes)
        raw["description"] = f"sweep of {base}: {what}"
        try:
            validate_params(raw, name)
        except ParamsError as e:
            raise ParamsError(f"sweep point {name}: {e}") from None
        points.append(GridPoint(name, changes, raw))
    return points


def write_grid(points: Sequence[GridPoint], params_dir: Path) -> list[Path]:
    """Write each point's params file (atomically). An existing file with the same params is
    kept; one with other params is refused before anything is written."""
    files = []
    for pt in points:
        f = param_set_path(pt.name, params_dir)
        if f.exists():
            try:
                same = canonical_json(json.loads(f.read_text())) == canonical_json(pt.raw)
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:
                raise ParamsError(
                    f"sweep: {f} exists with other params; remove it or change the grid"
                )
        files.append(f)
    for pt, f in zip(points, files, strict=True):
        if not f.exists():
            atomic_write_text(f, json.dumps(pt.raw, indent=2) + "\n")
    return files
