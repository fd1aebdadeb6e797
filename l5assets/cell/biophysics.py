"""Biophysics files: the JSON schema, loading, validation and distribution rules.

A biophysics file (``biophys_components/cells/<name>.json``) says how to turn a morphology into
the model cell: the axon stub, per-region passive properties, reversal potentials and channel
densities. It is also what BMTK hands our cell-model hook as the node's ``dynamics_params``.

Schema (every field is checked; errors name the field)::

    {
      "name": "L5PC_bbp",                       # the cell name a param set uses
      "description": "...", "source": "...",    # free text (provenance)
      "default_morphology": {"package": "bluepyopt", "path": "tests/.../C060114A7.asc"} | null,
      "celsius": 34.0,                          # temperature the parameters were fitted at
      "v_init": -65.0,                          # suggested initial potential (mV)
      "distance_origin_x": 0.5,                 # soma[0] location distances are measured from
      "distance_origin_section": "soma",        # optional: "apic" = from apic[0](0), as Hay's
                                                # template does for its apical distributions
      "axon_stub": {"n_sections": 2, "length": 30.0, "diam": 1.0 | [d0, d1], "attach_x": 0.5},
      "validation": {                           # optional: how `validate-cell` judges the cell
        "targets": "hay2011" | "bluepyopt",     # target family (protocols + gating targets)
        "sites": "absolute" | "main_bifurcation",  # trunk sites as on Hay's cell1, or shifted
                                                # by this morphology's main bifurcation
        "informational": {"<feature>": "why"}   # targets reported but not gating, for this cell
      },
      "regions": {                              # applied in the order all, soma, dend, apic, axon
        "<all|soma|dend|apic|axon>": {
          "cm": 1.0, "Ra": 100.0,               # optional (uF/cm2, ohm cm)
          "ions": {"ena": 50, "ek": -85},       # set where the ion exists in the region
          "mechanisms": {"<SUFFIX>": {"<param>": <value or rule>}}
        }
      }
    }

A parameter value is a number (uniform) or a rule object evaluated per segment at its path
distance ``d`` from the origin (``"distance": "absolute"`` in um, or ``"normalised"``: divided
by the longest path from the origin to an apical tip):

- ``{"rule": "uniform", "value": v}``
- ``{"rule": "exponential", "value": v, "a": a, "b": b, "k": k, "distance": ...}``:
  ``v * (a + b * exp(k * d))`` (Hay's / BluePyOpt's Ih gradient)
- ``{"rule": "zone", "value": v, "start": s, "end": e, "inside": 1.0, "outside": f,
  "distance": ...}``: ``v * inside`` for ``s < d < e`` else ``v * outside`` (the Ca hot zone)

Mechanism parameters use the mechanism-local name (``gNaTs2_tbar`` of ``NaTs2_t``, ``g`` and
``e`` of ``pas``, ``gamma``/``decay`` of ``CaDynamics_E2``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from l5assets import paths

DEFAULT_CELL = paths.DEFAULT_CELL
REGIONS: tuple[str, ...] = ("all", "soma", "dend", "apic", "axon")
# Where distribution distances start: soma[0](distance_origin_x), or apic[0](0) (Hay's
# template resets the origin to the first apical section before distributing apical channels).
ORIGIN_SECTIONS: tuple[str, ...] = ("soma", "apic")
ION_NAMES: dict[str, str] = {"ena": "na", "ek": "k", "eca": "ca", "ecl": "cl"}
RULES = ("uniform", "exponential", "zone")
TARGET_FAMILIES = ("bluepyopt", "hay2011")
SITE_RULES = ("absolute", "main_bifurcation")
DistanceMode = Literal["absolute", "normalised"]


class BiophysicsError(ValueError):
    """A biophysics file is missing, malformed or inconsistent; the message names the field."""


@dataclass(frozen=True)
class Distribution:
    """How one parameter varies over a region (see the module docstring)."""

    rule: str
    value: float
    a: float = 0.0
    b: float = 1.0
    k: float = 0.0
    start: float = 0.0
    end: float = 0.0
    inside: float = 1.0
    outside: float = 0.0
    distance: DistanceMode = "absolute"

    @property
    def uses_distance(self) -> bool:
        return self.rule != "uniform"

    def evaluate(self, dist_um: np.ndarray, norm_length: float | None) -> np.ndarray:
        """Values at segments with path distances `dist_um` (um) from the origin.

        `norm_length` is the longest apical path, needed for "normalised" rules.
        """
        d = np.asarray(dist_um, dtype=float)
        if self.rule == "uniform":
            return np.full(d.shape, self.value)
        if self.distance == "normalised":
            if not norm_length or norm_length <= 0:
                raise BiophysicsError(
                    "a 'normalised' distance rule needs apical dendrites (longest apical path)"
                )
            d = d / norm_length
        if self.rule == "exponential":
            return self.value * (self.a + self.b * np.exp(self.k * d))
        # zone: strict inequalities, as in Hay et al.'s step distribution
        inside = (d > self.start) & (d < self.end)
        return self.value * np.where(inside, self.inside, self.outside)


@dataclass(frozen=True)
class RegionSpec:
    """Passive properties, reversal potentials and mechanisms of one region."""

    cm: float | None = None
    Ra: float | None = None
    ions: dict[str, float] = field(default_factory=dict)
    mechanisms: dict[str, dict[str, Distribution]] = field(default_factory=dict)


@dataclass(frozen=True)
class AxonStub:
    """The two-section (by default) cylinder that replaces the reconstructed axon."""

    n_sections: int
    length: float
    diams: tuple[float, ...]
    attach_x: float


@dataclass(frozen=True)
class ValidationSpec:
    """How the cell is validated: target family, trunk-site rule, per-cell informational rows."""

    targets: str = "bluepyopt"
    sites: str = "absolute"
    informational: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Biophysics:
    """A validated biophysics file."""

    name: str
    description: str
    source: str
    celsius: float
    v_init: float
    distance_origin_x: float
    distance_origin_section: str
    axon_stub: AxonStub
    regions: dict[str, RegionSpec]
    default_morphology: dict[str, str] | None
    path: Path | None
    raw: dict[str, Any]
    validation: ValidationSpec = field(default_factory=ValidationSpec)

    def mechanism_names(self) -> list[str]:
        """Every mechanism SUFFIX the file inserts, sorted."""
        return sorted({m for r in self.regions.values() for m in r.mechanisms})


def _err(name: str, where: str, msg: str) -> BiophysicsError:
    return BiophysicsError(f"biophysics {name!r} field '{where}': {msg}")


def _number(name: str, where: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _err(name, where, f"must be a finite number, got {v!r}")
    return float(v)


def _check_keys(name: str, where: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise _err(name, where, f"unknown key(s) {extra}; allowed: {sorted(allowed)}")


def _mapping(name: str, where: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise _err(name, where, f"must be an object, got {type(v).__name__}")
    return v


def _distribution(name: str, where: str, v: Any) -> Distribution:
    if not isinstance(v, Mapping):
        return Distribution(rule="uniform", value=_number(name, where, v))
    rule = v.get("rule")
    if rule not in RULES:
        raise _err(name, f"{where}.rule", f"must be one of {list(RULES)}, got {rule!r}")
    if "value" not in v:
        raise _err(name, f"{where}.value", "missing")
    value = _number(name, f"{where}.value", v["value"])
    mode = v.get("distance", "absolute")
    if mode not in ("absolute", "normalised"):
        raise _err(name, f"{where}.distance", f"must be 'absolute' or 'normalised', got {mode!r}")
    if rule == "uniform":
        _check_keys(name, where, v, {"rule", "value"})
        return Distribution(rule="uniform", value=value)
    if rule == "exponential":
        _check_keys(name, where, v, {"rule", "value", "a", "b", "k", "distance"})
        for key in ("a", "b", "k"):
            if key not in v:
                raise _err(name, f"{where}.{key}", "missing (exponential: value*(a+b*exp(k*d)))")
        return Distribution(
            rule="exponential",
            value=value,
            a=_number(name, f"{where}.a", v["a"]),
            b=_number(name, f"{where}.b", v["b"]),
            k=_number(name, f"{where}.k", v["k"]),
            distance=mode,
        )
    _check_keys(name, where, v, {"rule", "value", "start", "end", "inside", "outside", "distance"})
    for key in ("start", "end", "outside"):
        if key not in v:
            raise _err(name, f"{where}.{key}", "missing (zone: start < d < end)")
    start = _number(name, f"{where}.start", v["start"])
    end = _number(name, f"{where}.end", v["end"])
    if not end > start:
        raise _err(name, f"{where}.end", f"must be greater than start ({start}), got {end}")
    return Distribution(
        rule="zone",
        value=value,
        start=start,
        end=end,
        inside=_number(name, f"{where}.inside", v.get("inside", 1.0)),
        outside=_number(name, f"{where}.outside", v["outside"]),
        distance=mode,
    )


def _region(name: str, where: str, v: Any) -> RegionSpec:
    d = _mapping(name, where, v)
    _check_keys(name, where, d, {"cm", "Ra", "ions", "mechanisms"})
    cm = _number(name, f"{where}.cm", d["cm"]) if "cm" in d else None
    ra = _number(name, f"{where}.Ra", d["Ra"]) if "Ra" in d else None
    if cm is not None and cm <= 0:
        raise _err(name, f"{where}.cm", f"must be > 0, got {cm}")
    if ra is not None and ra <= 0:
        raise _err(name, f"{where}.Ra", f"must be > 0, got {ra}")
    ions: dict[str, float] = {}
    for ion, val in _mapping(name, f"{where}.ions", d.get("ions", {})).items():
        if ion not in ION_NAMES:
            raise _err(name, f"{where}.ions.{ion}", f"unknown ion; allowed: {sorted(ION_NAMES)}")
        ions[ion] = _number(name, f"{where}.ions.{ion}", val)
    mechs: dict[str, dict[str, Distribution]] = {}
    for mech, params in _mapping(name, f"{where}.mechanisms", d.get("mechanisms", {})).items():
        if not isinstance(mech, str) or not mech.isidentifier():
            raise _err(name, f"{where}.mechanisms.{mech}", "must be a mechanism SUFFIX")
        pd_ = _mapping(name, f"{where}.mechanisms.{mech}", params)
        mechs[mech] = {
            p: _distribution(name, f"{where}.mechanisms.{mech}.{p}", val) for p, val in pd_.items()
        }
    return RegionSpec(cm=cm, Ra=ra, ions=ions, mechanisms=mechs)


def _axon_stub(name: str, v: Any) -> AxonStub:
    where = "axon_stub"
    d = _mapping(name, where, v)
    _check_keys(name, where, d, {"n_sections", "length", "diam", "attach_x"})
    for key in ("n_sections", "length", "diam", "attach_x"):
        if key not in d:
            raise _err(name, f"{where}.{key}", "missing")
    n = d["n_sections"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise _err(name, f"{where}.n_sections", f"must be a positive integer, got {n!r}")
    length = _number(name, f"{where}.length", d["length"])
    if length <= 0:
        raise _err(name, f"{where}.length", f"must be > 0, got {length}")
    diam = d["diam"]
    if isinstance(diam, list):
        if len(diam) != n:
            raise _err(name, f"{where}.diam", f"needs {n} values (one per section), got {diam}")
        diams = tuple(_number(name, f"{where}.diam[{i}]", x) for i, x in enumerate(diam))
    else:
        diams = (_number(name, f"{where}.diam", diam),) * n
    if any(x <= 0 for x in diams):
        raise _err(name, f"{where}.diam", f"must be > 0, got {diam}")
    ax = _number(name, f"{where}.attach_x", d["attach_x"])
    if not 0.0 <= ax <= 1.0:
        raise _err(name, f"{where}.attach_x", f"must be in [0, 1], got {ax}")
    return AxonStub(n_sections=n, length=length, diams=diams, attach_x=ax)


def _validation(name: str, v: Any) -> ValidationSpec:
    d = _mapping(name, "validation", v)
    _check_keys(name, "validation", d, {"targets", "sites", "informational"})
    targets = d.get("targets", "bluepyopt")
    if targets not in TARGET_FAMILIES:
        raise _err(
            name, "validation.targets", f"must be one of {list(TARGET_FAMILIES)}, got {targets!r}"
        )
    sites = d.get("sites", "absolute")
    if sites not in SITE_RULES:
        raise _err(name, "validation.sites", f"must be one of {list(SITE_RULES)}, got {sites!r}")
    info = _mapping(name, "validation.informational", d.get("informational", {}))
    for k, why in info.items():
        if not isinstance(why, str):
            raise _err(name, f"validation.informational.{k}", "must be a string (the reason)")
    return ValidationSpec(targets=targets, sites=sites, informational=dict(info))


def parse_biophysics(data: Mapping[str, Any], path: Path | None = None) -> Biophysics:
    """Validate a biophysics mapping (e.g. BMTK's already-loaded `dynamics_params`)."""
    if not isinstance(data, Mapping):
        raise BiophysicsError(f"biophysics must be a JSON object, got {type(data).__name__}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BiophysicsError(f"biophysics field 'name': must be a non-empty string, got {name!r}")
    allowed = {
        "name",
        "description",
        "source",
        "default_morphology",
        "celsius",
        "v_init",
        "distance_origin_x",
        "distance_origin_section",
        "axon_stub",
        "regions",
        "validation",
    }
    _check_keys(name, "<top>", data, allowed)
    for key in ("celsius", "v_init", "distance_origin_x", "axon_stub", "regions"):
        if key not in data:
            raise _err(name, key, "missing")
    origin = _number(name, "distance_origin_x", data["distance_origin_x"])
    if not 0.0 <= origin <= 1.0:
        raise _err(name, "distance_origin_x", f"must be in [0, 1], got {origin}")
    origin_section = data.get("distance_origin_section", "soma")
    if origin_section not in ORIGIN_SECTIONS:
        raise _err(
            name,
            "distance_origin_section",
            f"must be one of {list(ORIGIN_SECTIONS)}, got {origin_section!r}",
        )
    dm = data.get("default_morphology")
    if dm is not None:
        dmm = _mapping(name, "default_morphology", dm)
        _check_keys(name, "default_morphology", dmm, {"package", "path"})
        for key in ("package", "path"):
            if not isinstance(dmm.get(key), str) or not dmm[key]:
                raise _err(name, f"default_morphology.{key}", "must be a non-empty string")
        dm = {"package": dmm["package"], "path": dmm["path"]}
    regions_in = _mapping(name, "regions", data["regions"])
    regions: dict[str, RegionSpec] = {}
    for reg, spec in regions_in.items():
        if reg not in REGIONS:
            raise _err(name, f"regions.{reg}", f"unknown region; allowed: {list(REGIONS)}")
        regions[reg] = _region(name, f"regions.{reg}", spec)
    for field_name in ("description", "source"):
        if not isinstance(data.get(field_name, ""), str):
            raise _err(name, field_name, "must be a string")
    return Biophysics(
        name=name,
        description=data.get("description", ""),
        source=data.get("source", ""),
        celsius=_number(name, "celsius", data["celsius"]),
        v_init=_number(name, "v_init", data["v_init"]),
        distance_origin_x=origin,
        distance_origin_section=origin_section,
        axon_stub=_axon_stub(name, data["axon_stub"]),
        regions={r: regions[r] for r in REGIONS if r in regions},  # canonical application order
        default_morphology=dm,
        path=path,
        raw=json.loads(json.dumps(data)),
        validation=_validation(name, data.get("validation", {})),
    )


def biophysics_path(name_or_path: str | Path) -> Path:
    """A cell name (file stem in cells_dir()) or a path to a biophysics JSON file."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if not p.exists():
            raise BiophysicsError(f"biophysics file not found: {p}")
        return p.resolve()
    cand = paths.cells_dir() / f"{name_or_path}.json"
    if not cand.exists():
        available = sorted(f.stem for f in paths.cells_dir().glob("*.json"))
        raise BiophysicsError(f"unknown biophysics {str(name_or_path)!r}; available: {available}")
    return cand.resolve()


def load_biophysics(name_or_path: str | Path | Biophysics) -> Biophysics:
    """Load and validate a biophysics file by cell name or path (a Biophysics passes through)."""
    if isinstance(name_or_path, Biophysics):
        return name_or_path
    p = biophysics_path(name_or_path)
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise BiophysicsError(f"biophysics file {p}: invalid JSON: {e}") from e
    return parse_biophysics(data, path=p)


def list_biophysics() -> list[str]:
    """Names of the biophysics files shipped in cells_dir()."""
    return sorted(f.stem for f in paths.cells_dir().glob("*.json"))
