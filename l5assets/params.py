"""Param sets: loading, validation, canonical hashing and the counts derived from them.

A param set is one JSON file in `data/params/` (SPEC section 1). The file stem is its name and
its `param_set` partition key. Validation runs before anything is written and names the field
and its allowed values. The string "None" (reference style) and JSON null both mean absent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l5assets import paths
from l5assets.storage import CELLS_NAMESPACE

PARTITION_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Folder names of the storage root that are not param sets.
RESERVED_NAMES = frozenset({CELLS_NAMESPACE})
MAX_SEED = 2**31 - 1
RECORD_LOCS = ("soma", "all", "dend", "apic", "axon", "basal", "apical", "somatic", "axonal")


class ParamsError(ValueError):
    """A param set (or a seed / param set name) is invalid; the message names the field."""


@dataclass(frozen=True)
class Rhythm:
    """Optional sinusoidal modulation of an inhibitory population (f in Hz, depth mod in (0,1))."""

    f: float
    mod: float


@dataclass(frozen=True)
class InhRates:
    """Mean-rate distribution of one inhibitory population: truncated normal on [0, 100] Hz."""

    m: float
    s: float
    rhythm: Rhythm | None


@dataclass(frozen=True)
class NormDivergence:
    """Synapses per inhibitory input cell: int(clip(normal(m, s), min, max))."""

    m: float
    s: float
    min: int
    max: int


@dataclass(frozen=True)
class ParamSet:
    """A validated param set. `raw` is the normalised dict that is hashed and recorded."""

    name: str
    raw: Mapping[str, Any]
    biophysics: str
    morphology: str | None
    basal_dist: float
    basal_prox: float
    apic: float
    exc_density: float
    inh_density: float
    n_soma_syns: int
    exc_div_min: int
    exc_div_max: int
    peri_inh: NormDivergence
    basal_inh: NormDivergence
    apic_inh: NormDivergence
    cells_per_group: int
    group_radius: float
    cluster_radius: float
    current_clamp_file: str | None
    record_vars: tuple[str, ...]
    record_locs: tuple[str, ...]
    proximal: InhRates
    distal: InhRates
    start: float
    stop: float
    dL: float
    dt: float
    inh_shift: int
    exc_release_gates_transmission: bool
    som_model: str = "SOM2PN"
    rate_tables: bool = False

    @property
    def params_hash(self) -> str:
        """sha256 of the canonical JSON of the normalised params (the name is not hashed)."""
        return params_hash(self.raw)

    @property
    def counts(self) -> DerivedCounts:
        """Input-cell and cluster counts derived from the params (SPEC section 3)."""
        return derived_counts(self)


@dataclass(frozen=True)
class DerivedCounts:
    """Counts of SPEC section 3 (reference values in the field comments)."""

    exc_basal: int  # 2008
    exc_apic: int  # 3214
    som_basal: int  # 378
    som_apic: int  # 136
    pv_prox: int  # 37
    pv_soma: int  # 53
    clusters_per_group: int  # 23

    @property
    def exc_total(self) -> int:
        return self.exc_basal + self.exc_apic

    @property
    def pv_total(self) -> int:
        return self.pv_soma + self.pv_prox

    @property
    def som_total(self) -> int:
        return self.som_basal + self.som_apic

    def as_dict(self) -> dict[str, int]:
        return {
            "exc_basal": self.exc_basal,
            "exc_apic": self.exc_apic,
            "exc_total": self.exc_total,
            "som_basal": self.som_basal,
            "som_apic": self.som_apic,
            "som_total": self.som_total,
            "pv_soma": self.pv_soma,
            "pv_prox": self.pv_prox,
            "pv_total": self.pv_total,
            "clusters_per_group": self.clusters_per_group,
        }


def derived_counts(p: ParamSet) -> DerivedCounts:
    """Counts of input cells and clusters, exactly as the reference computes them."""
    mean_exc_div = (p.exc_div_min + p.exc_div_max) / 2
    return DerivedCounts(
        exc_basal=int(p.basal_dist * p.exc_density / mean_exc_div),
        exc_apic=int(p.apic * p.exc_density / mean_exc_div),
        som_basal=int(p.basal_dist * p.inh_density / p.basal_inh.m),
        som_apic=int(p.apic * p.inh_density / p.apic_inh.m),
        pv_prox=int(p.basal_prox * p.inh_density / p.peri_inh.m),
        pv_soma=int(p.n_soma_syns / p.peri_inh.m),
        clusters_per_group=int((p.cells_per_group * mean_exc_div) // (p.exc_density * 10)),
    )


# --------------------------------------------------------------------------------------------
# canonical form and hashing


SOM_MODELS = ("SOM2PN", "SOM2PN_file_gbar")


def _som_model(v: Any) -> str:
    """The SOM+ synapse file: SOM2PN (gbar 1 uS, the reference as it runs) or SOM2PN_file_gbar
    (0.006 uS, the reference's SOM2PN.json taken at its word)."""
    if v not in SOM_MODELS:
        raise ParamsError(
            f"params field 'synapses.som_model': must be one of {list(SOM_MODELS)}, got {v!r}"
        )
    return str(v)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, floats as Python repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def params_hash(raw: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of a normalised params dict."""
    return hashlib.sha256(canonical_json(raw).encode()).hexdigest()


def _none(v: Any) -> Any:
    """Reference files spell absent as the string "None"."""
    return None if v == "None" else v


# --------------------------------------------------------------------------------------------
# validation helpers: each names the dotted field and the allowed values


def _get(d: Mapping[str, Any], key: str, field: str) -> Any:
    if not isinstance(d, Mapping):
        raise ParamsError(f"params field '{field}': must be an object, got {d!r}")
    if key not in d:
        raise ParamsError(f"params field '{field}.{key}' is missing".replace("'.", "'"))
    return d[key]


def _num(v: Any, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    ok_type = isinstance(v, int | float) and not isinstance(v, bool)
    if not ok_type or not math.isfinite(v):
        raise ParamsError(f"params field '{field}': must be a number, got {v!r}")
    if (v <= lo if lo_open else v < lo) or v > hi:
        bracket = "(" if lo_open else "["
        raise ParamsError(f"params field '{field}': must be in {bracket}{lo}, {hi}], got {v!r}")
    return float(v)


def _int(v: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or float(v) != int(v):
        raise ParamsError(f"params field '{field}': must be an integer in [{lo}, {hi}], got {v!r}")
    if not lo <= int(v) <= hi:
        raise ParamsError(f"params field '{field}': must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _check_keys(d: Mapping[str, Any], allowed: set[str], field: str) -> None:
    if not isinstance(d, Mapping):
        raise ParamsError(f"params field '{field}': must be an object, got {d!r}")
    extra = sorted(set(d) - allowed)
    if extra:
        where = f"params field '{field}'" if field else "params file"
        what = "unknown key(s)" if field else "unknown top-level key(s)"
        raise ParamsError(f"{where}: {what} {extra}; allowed: {sorted(allowed)}")


def _norm_div(d: Any, field: str) -> NormDivergence:
    _check_keys(d, {"m", "s", "min", "max"}, field)
    lo = _int(_get(d, "min", field), f"{field}.min", 1, 1000)
    hi = _int(_get(d, "max", field), f"{field}.max", lo, 1000)
    return NormDivergence(
        m=_num(_get(d, "m", field), f"{field}.m", 0, 1000, lo_open=True),
        s=_num(_get(d, "s", field), f"{field}.s", 0, 1000),
        min=lo,
        max=hi,
    )


def _inh_rates(d: Any, field: str) -> InhRates:
    _check_keys(d, {"m", "s", "rhythmicity"}, field)
    m = _num(_get(d, "m", field), f"{field}.m", 0, 100)
    s = _num(_get(d, "s", field), f"{field}.s", 0, 1000, lo_open=True)
    rh = d.get("rhythmicity")
    rhythm = None
    if rh is not None and rh != "None":
        _check_keys(rh, {"f", "mod"}, f"{field}.rhythmicity")
        f, mod = _none(rh.get("f")), _none(rh.get("mod"))
        if (f is None) != (mod is None):
            raise ParamsError(
                f"params field '{field}.rhythmicity': give both f and mod, or neither"
            )
        if f is not None:
            rhythm = Rhythm(
                f=_num(f, f"{field}.rhythmicity.f", 0, 500, lo_open=True),
                mod=_num(mod, f"{field}.rhythmicity.mod", 0, 1, lo_open=True),
            )
            if rhythm.mod >= 1:
                raise ParamsError(
                    f"params field '{field}.rhythmicity.mod': must be in (0, 1), got {mod!r}"
                )
    return InhRates(m=m, s=s, rhythm=rhythm)


def normalise(obj: Any) -> Any:
    """Recursively map "None" to None so that both spellings hash the same."""
    if isinstance(obj, Mapping):
        return {k: normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    return _none(obj)


# Keys of the reference's `cell` section that are accepted (and hashed) but not used here: the
# cell is built from `cell.biophysics` + `cell.morphology`, and the segments table is derived.
REFERENCE_CELL_KEYS = {
    "prefix",
    "model_template",
    "dynamic_params",
    "model_processing",
    "segments_file",
}

TOP_KEYS = {
    "cell",
    "lengths",
    "syn_density",
    "n_soma_syns",
    "divergence",
    "groups",
    "file_current_clamp",
    "record_cellvars",
    "inh_frs",
    "time",
    "dL",
    "dt",
    "inh_shift",
    "synapses",
    "rate_tables",
    "description",
}


def _cell_fields(cell: Mapping[str, Any]) -> tuple[str, str | None]:
    """(biophysics name, resolved morphology path or None) of the params' `cell` section."""
    _check_keys(cell, {"biophysics", "morphology", *REFERENCE_CELL_KEYS}, "cell")
    if "biophysics" not in cell and cell.get("model_template") == "hoc:L5PCtemplate":
        # a reference params file: its Hay template is not ours, so make the choice explicit
        raise ParamsError(
            "params field 'cell.biophysics' is missing: this file names the reference's "
            "'hoc:L5PCtemplate'; set 'cell.biophysics' to 'L5PC_reference' (with 'cell.morphology'"
            " = your copy of Hay's cell1.asc) or 'L5PC_hay_C060114A7' (the packaged default cell)"
        )
    biophys = cell.get("biophysics", paths.DEFAULT_CELL)
    if not isinstance(biophys, str) or not PARTITION_KEY_RE.match(biophys):
        raise ParamsError(f"params field 'cell.biophysics': must be a cell name, got {biophys!r}")
    available = sorted(p.stem for p in paths.cells_dir().glob("*.json"))
    if biophys not in available:
        raise ParamsError(
            f"params field 'cell.biophysics': unknown cell {biophys!r}; available: {available}"
        )
    morph = cell.get("morphology")
    if morph is not None:
        if not isinstance(morph, str):
            raise ParamsError(
                f"params field 'cell.morphology': must be a path or null, got {morph!r}"
            )
        morph_path = Path(os.path.expandvars(os.path.expanduser(morph)))
        if not morph_path.is_file():
            raise ParamsError(f"params field 'cell.morphology': file not found: {morph_path}")
        if morph_path.suffix.lower() not in (".asc", ".swc"):
            raise ParamsError(
                "params field 'cell.morphology': must be a .asc or .swc file, "
                f"got {morph_path.name}"
            )
        morph = str(morph_path.resolve())
    else:
        # a cell without a packaged default morphology (L5PC_reference) needs a user path
        from l5assets.components import ComponentError, packaged_morphology

        try:
            packaged_morphology(biophys)
        except ComponentError as e:
            raise ParamsError(f"params field 'cell.{e.about}': {e}") from None
    return biophys, morph


def _record_cellvars(rec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(vars, locs) of the params' `record_cellvars` section."""
    _check_keys(rec, {"vars", "locs"}, "record_cellvars")
    rvars, rlocs = _get(rec, "vars", "record_cellvars"), _get(rec, "locs", "record_cellvars")
    if not isinstance(rvars, list) or not rvars or not all(isinstance(v, str) and v for v in rvars):
        raise ParamsError(
            f"params field 'record_cellvars.vars': must be a non-empty list of names, got {rvars!r}"
        )
    if not isinstance(rlocs, list) or not all(v in RECORD_LOCS for v in rlocs):
        raise ParamsError(
            f"params field 'record_cellvars.locs': must be a list of {list(RECORD_LOCS)}, "
            f"got {rlocs!r}"
        )
    return rvars, rlocs


def validate_params(raw_in: Mapping[str, Any], name: str = "<params>") -> ParamSet:
    """Validate a params dict and return a ParamSet; raise ParamsError naming the bad field."""
    if not isinstance(raw_in, Mapping):
        raise ParamsError(f"param set '{name}': top level must be a JSON object")
    raw = normalise(dict(raw_in))
    _check_keys(raw, TOP_KEYS, "")
    tables = raw.get("rate_tables", False)
    if not isinstance(tables, bool):
        raise ParamsError(f"params field 'rate_tables': must be true or false, got {tables!r}")
    if not tables:  # the default: absent and false are one model, with one params hash
        raw.pop("rate_tables", None)

    biophys, morph = _cell_fields(_get(raw, "cell", ""))

    lengths = _get(raw, "lengths", "")
    _check_keys(lengths, {"basal_dist", "basal_prox", "apic"}, "lengths")
    dens = _get(raw, "syn_density", "")
    _check_keys(dens, {"exc", "inh"}, "syn_density")
    div = _get(raw, "divergence", "")
    _check_keys(div, {"exc", "peri_inh", "basal_inh", "apic_inh"}, "divergence")
    exc_div = _get(div, "exc", "divergence")
    _check_keys(exc_div, {"min", "max"}, "divergence.exc")
    exc_min = _int(_get(exc_div, "min", "divergence.exc"), "divergence.exc.min", 1, 1000)
    exc_max = _int(_get(exc_div, "max", "divergence.exc"), "divergence.exc.max", exc_min, 1000)
    groups = _get(raw, "groups", "")
    _check_keys(groups, {"cells_per_group", "group_radius", "cluster_radius"}, "groups")
    group_radius = _num(
        _get(groups, "group_radius", "groups"), "groups.group_radius", 0, 1e4, lo_open=True
    )

    fcc = raw.get("file_current_clamp") or {}
    _check_keys(fcc, {"input_file"}, "file_current_clamp")
    clamp = fcc.get("input_file")
    if clamp is not None:
        if not isinstance(clamp, str) or not Path(clamp).expanduser().is_file():
            raise ParamsError(
                f"params field 'file_current_clamp.input_file': must be null/\"None\" or an "
                f"existing file, got {clamp!r}"
            )
        clamp = str(Path(clamp).expanduser().resolve())

    rvars, rlocs = _record_cellvars(_get(raw, "record_cellvars", ""))

    inh = _get(raw, "inh_frs", "")
    _check_keys(inh, {"proximal", "distal"}, "inh_frs")
    time = _get(raw, "time", "")
    _check_keys(time, {"start", "stop"}, "time")
    start = _num(_get(time, "start", "time"), "time.start", 0, 3600)
    stop = _num(_get(time, "stop", "time"), "time.stop", start, 3600, lo_open=True)
    if stop - start < 0.01:
        raise ParamsError("params field 'time.stop': must exceed time.start by >= 0.01 s")

    syn = raw.get("synapses") or {}
    _check_keys(syn, {"exc_release_gates_transmission", "som_model"}, "synapses")
    som_model = _som_model(syn.get("som_model", "SOM2PN"))
    gates = syn.get("exc_release_gates_transmission", False)
    if not isinstance(gates, bool):
        raise ParamsError(
            "params field 'synapses.exc_release_gates_transmission': must be true or false, "
            f"got {gates!r}"
        )

    return ParamSet(
        name=name,
        raw=raw,
        biophysics=biophys,
        morphology=morph,
        basal_dist=_num(_get(lengths, "basal_dist", "lengths"), "lengths.basal_dist", 0, 1e6),
        basal_prox=_num(_get(lengths, "basal_prox", "lengths"), "lengths.basal_prox", 0, 1e6),
        apic=_num(_get(lengths, "apic", "lengths"), "lengths.apic", 0, 1e6),
        exc_density=_num(_get(dens, "exc", "syn_density"), "syn_density.exc", 0, 100, lo_open=True),
        inh_density=_num(_get(dens, "inh", "syn_density"), "syn_density.inh", 0, 100),
        n_soma_syns=_int(_get(raw, "n_soma_syns", ""), "n_soma_syns", 0, 100000),
        exc_div_min=exc_min,
        exc_div_max=exc_max,
        peri_inh=_norm_div(_get(div, "peri_inh", "divergence"), "divergence.peri_inh"),
        basal_inh=_norm_div(_get(div, "basal_inh", "divergence"), "divergence.basal_inh"),
        apic_inh=_norm_div(_get(div, "apic_inh", "divergence"), "divergence.apic_inh"),
        cells_per_group=_int(
            _get(groups, "cells_per_group", "groups"), "groups.cells_per_group", 1, 100000
        ),
        group_radius=group_radius,
        cluster_radius=_num(
            _get(groups, "cluster_radius", "groups"),
            "groups.cluster_radius",
            0,
            group_radius,
            lo_open=True,
        ),
        current_clamp_file=clamp,
        record_vars=tuple(rvars),
        record_locs=tuple(rlocs),
        proximal=_inh_rates(_get(inh, "proximal", "inh_frs"), "inh_frs.proximal"),
        distal=_inh_rates(_get(inh, "distal", "inh_frs"), "inh_frs.distal"),
        start=start,
        stop=stop,
        dL=_num(_get(raw, "dL", ""), "dL", 0, 1000, lo_open=True),
        dt=_num(_get(raw, "dt", ""), "dt", 0, 1, lo_open=True),
        inh_shift=_int(_get(raw, "inh_shift", ""), "inh_shift", 0, int(stop * 1000) - 1),
        exc_release_gates_transmission=gates,
        som_model=som_model,
        rate_tables=tables,
    )


def validate_param_set_name(name: str) -> str:
    """Param set names are partition keys: only [A-Za-z0-9_-]."""
    if not isinstance(name, str) or not PARTITION_KEY_RE.match(name):
        raise ParamsError(
            f"param set name {name!r}: must match [A-Za-z0-9_-]+ (it is a partition key)"
        )
    if name in RESERVED_NAMES:
        raise ParamsError(f"param set name {name!r} is reserved (a folder of the storage root)")
    return name


def validate_seed(seed: Any) -> int:
    """Seeds are integers in [0, 2**31 - 1]; accepts int or an integer string."""
    try:
        s = int(str(seed).strip())
        if str(s) != str(seed).strip() and not isinstance(seed, int):
            raise ValueError
    except (TypeError, ValueError):
        raise ParamsError(f"seed: must be an integer in [0, {MAX_SEED}], got {seed!r}") from None
    if not 0 <= s <= MAX_SEED:
        raise ParamsError(f"seed: must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return s


def param_set_path(name: str, params_dir: Path | None = None) -> Path:
    """Path of a named param set's JSON file."""
    validate_param_set_name(name)
    return (params_dir or paths.params_dir()) / f"{name}.json"


def list_param_sets(params_dir: Path | None = None) -> list[str]:
    """Names of all param set files (valid partition keys only), sorted."""
    d = params_dir or paths.params_dir()
    return sorted(p.stem for p in d.glob("*.json") if is_param_set_name(p.stem))


def is_param_set_name(name: str) -> bool:
    """Whether a name can be a param set (a partition key, not a reserved folder)."""
    return bool(PARTITION_KEY_RE.match(name)) and name not in RESERVED_NAMES


def load_param_set(name_or_path: str | Path, params_dir: Path | None = None) -> ParamSet:
    """Load and validate a param set by name (from `data/params/`) or by file path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_file():
        path = p
        name = validate_param_set_name(p.stem)
    else:
        name = validate_param_set_name(str(name_or_path))
        path = param_set_path(name, params_dir)
    if not path.is_file():
        avail = list_param_sets(params_dir)
        raise ParamsError(f"param set {name!r}: no file {path}; available: {avail}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ParamsError(f"param set {name!r}: {path} is not valid JSON: {e}") from None
    return validate_params(raw, name=name)
