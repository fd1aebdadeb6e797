"""An independent oracle for the Hay-family channel kinetics: BluePyOpt's NeuroML2 files.

BluePyOpt ships the L5PC channels as NeuroML2 data (`bluepyopt/neuroml/NeuroML2_mechanisms/
*.channel.nml` and `baseCaDynamics_E2_NML2.nml`). This module reads those files from the
installed package and evaluates, with the NeuroML2 core-type semantics (Channels.xml), each
gate's steady state and time constant at a membrane potential, and the Ca2+ pool's derivative.
Our NMODL files are tested against it (l5assets_tests/test_kinetics.py).

Supported: ionChannel/ionChannelHH with gateHHrates, gateHHtauInf, gateHHratesTau,
gateHHratesInf, gateHHratesTauInf; HHExpRate, HHSigmoidRate, HHExpLinearRate,
HHSigmoidVariable, HHExpVariable, HHExpLinearVariable, fixedTimeCourse; q10Fixed and
q10ExpTemp; and file-local ComponentTypes whose Dynamics are DerivedVariables /
ConditionalDerivedVariables over constants (the LEMS expression language is evaluated by a small
AST walker, never by `eval`). Everything is computed in SI units; the public API takes mV, mM,
mA/cm2 and degC and returns ms and mM/ms.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

NML_NS = "{http://www.neuroml.org/schema/neuroml2}"

# SI value of one unit, for the units these files use (NeuroML2 unit names).
_UNITS: dict[str, float] = {
    "": 1.0,
    "V": 1.0,
    "mV": 1e-3,
    "s": 1.0,
    "ms": 1e-3,
    "per_s": 1.0,
    "per_ms": 1e3,
    "mol_per_m3": 1.0,
    "mM": 1.0,  # 1 mM = 1 mol/m3
    "M": 1e3,
    "mol_per_cm3": 1e6,
    "m": 1.0,
    "cm": 1e-2,
    "um": 1e-6,
    "m2": 1.0,
    "cm2": 1e-4,
    "um2": 1e-12,
    "S": 1.0,
    "mS": 1e-3,
    "pS": 1e-12,
    "C_per_mol": 1.0,
    "K": 1.0,
    "degC": 1.0,  # only used as a temperature difference by q10ExpTemp
}

_QUANTITY = re.compile(
    r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([A-Za-z_][A-Za-z_0-9]*)?\s*$"
)


class NmlError(ValueError):
    """A NeuroML construct this oracle does not understand."""


def quantity_si(text: str) -> float:
    """'0.209per_ms' -> 209.0; '-27mV' -> -0.027; '1e-4 mM' -> 1e-4 (mol/m3)."""
    m = _QUANTITY.match(text)
    if not m:
        raise NmlError(f"not a quantity: {text!r}")
    unit = m.group(2) or ""
    if unit not in _UNITS:
        raise NmlError(f"unknown unit {unit!r} in {text!r}")
    return float(m.group(1)) * _UNITS[unit]


# --------------------------------------------------------------------------- LEMS expressions

_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_CMPOPS: dict[type, Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCS: dict[str, Callable[[float], float]] = {
    "exp": math.exp,
    "log": math.log,
    "ln": math.log,
    "sqrt": math.sqrt,
    "abs": abs,
    "sin": math.sin,
    "cos": math.cos,
    "tanh": math.tanh,
    "H": lambda x: 0.0 if x < 0 else 1.0,
}
_LEMS_OPS = [
    (".neq.", " != "),
    (".eq.", " == "),
    (".lt.", " < "),
    (".leq.", " <= "),
    (".le.", " <= "),
    (".gt.", " > "),
    (".geq.", " >= "),
    (".ge.", " >= "),
    (".and.", " and "),
    (".or.", " or "),
]


@cache
def _parse_expr(text: str) -> ast.Expression:
    py = text.replace("^", "**")
    for lems, op in _LEMS_OPS:
        py = py.replace(lems, op)
    return ast.parse(py.strip(), mode="eval")


def eval_expr(text: str, env: Mapping[str, float]) -> float:
    """Evaluate a LEMS expression (arithmetic, ^, exp & co, .lt./.gt./... comparisons)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in env:
                raise NmlError(f"unknown symbol {node.id!r} in {text!r}")
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return ev(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id not in _FUNCS or len(node.args) != 1:
                raise NmlError(f"unsupported function call in {text!r}")
            return _FUNCS[node.func.id](ev(node.args[0]))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            op = _CMPOPS.get(type(node.ops[0]))
            if op is None:
                raise NmlError(f"unsupported comparison in {text!r}")
            return float(op(ev(node.left), ev(node.comparators[0])))
        if isinstance(node, ast.BoolOp):
            vals = [bool(ev(v)) for v in node.values]
            return float(all(vals) if isinstance(node.op, ast.And) else any(vals))
        raise NmlError(f"unsupported expression {ast.dump(node)} in {text!r}")

    return ev(_parse_expr(text))


@dataclass(frozen=True)
class _Derived:
    name: str
    value: str | None  # plain DerivedVariable
    cases: tuple[tuple[str | None, str], ...] = ()  # ConditionalDerivedVariable


@dataclass(frozen=True)
class _LemsDynamics:
    """A file-local ComponentType: constants and (conditional) derived variables, in order."""

    name: str
    constants: Mapping[str, float]
    derived: tuple[_Derived, ...]

    def evaluate(self, exposure: str, env: Mapping[str, float]) -> float:
        scope = dict(self.constants)
        scope.update(env)
        for d in self.derived:
            if d.value is not None:
                scope[d.name] = eval_expr(d.value, scope)
                continue
            for cond, value in d.cases:
                if cond is None or eval_expr(cond, scope):
                    scope[d.name] = eval_expr(value, scope)
                    break
            else:
                raise NmlError(f"{self.name}: no case of {d.name} applies")
        if exposure not in scope:
            raise NmlError(f"{self.name} does not define {exposure!r}")
        return scope[exposure]


def _parse_component_types(root: ET.Element) -> dict[str, _LemsDynamics]:
    out: dict[str, _LemsDynamics] = {}
    for ct in root.iter(f"{NML_NS}ComponentType"):
        consts = {
            c.attrib["name"]: quantity_si(c.attrib["value"]) for c in ct.iter(f"{NML_NS}Constant")
        }
        derived: list[_Derived] = []
        dyn = ct.find(f"{NML_NS}Dynamics")
        if dyn is not None:
            for el in dyn:
                if el.tag == f"{NML_NS}DerivedVariable":
                    derived.append(_Derived(el.attrib["name"], el.attrib["value"]))
                elif el.tag == f"{NML_NS}ConditionalDerivedVariable":
                    cases = tuple(
                        (c.attrib.get("condition"), c.attrib["value"])
                        for c in el.iter(f"{NML_NS}Case")
                    )
                    derived.append(_Derived(el.attrib["name"], None, cases))
        out[ct.attrib["name"]] = _LemsDynamics(ct.attrib["name"], consts, tuple(derived))
    return out


# --------------------------------------------------------------------------- gates & channels

_STANDARD_RATES = {"HHExpRate", "HHSigmoidRate", "HHExpLinearRate"}
_STANDARD_VARS = {"HHExpVariable", "HHSigmoidVariable", "HHExpLinearVariable"}


def _standard(kind: str, rate: float, midpoint: float, scale: float, v: float) -> float:
    """NeuroML2 core rate / variable forms (rate is per s for rates, unitless for variables)."""
    x = (v - midpoint) / scale
    if kind in ("HHExpRate", "HHExpVariable"):
        return rate * math.exp(x)
    if kind in ("HHSigmoidRate", "HHSigmoidVariable"):
        return rate / (1.0 + math.exp(-x))
    if kind in ("HHExpLinearRate", "HHExpLinearVariable"):
        return rate if x == 0 else rate * x / (1.0 - math.exp(-x))
    raise NmlError(f"unknown standard form {kind}")


@dataclass(frozen=True)
class _Term:
    """One of forwardRate / reverseRate / timeCourse / steadyState of a gate."""

    kind: str
    params: Mapping[str, float]  # SI
    custom: _LemsDynamics | None = None

    def value(self, exposure: str, env: Mapping[str, float]) -> float:
        if self.custom is not None:
            return self.custom.evaluate(exposure, env)
        if self.kind in _STANDARD_RATES or self.kind in _STANDARD_VARS:
            p = self.params
            return _standard(self.kind, p["rate"], p["midpoint"], p["scale"], env["v"])
        if self.kind == "fixedTimeCourse":
            return self.params["tau"]
        raise NmlError(f"unsupported rate/variable type {self.kind}")


@dataclass(frozen=True)
class _Q10:
    kind: str
    q10: float
    experimental_temp_k: float | None = None

    def factor(self, temperature_k: float) -> float:
        if self.kind == "q10Fixed":
            return self.q10
        assert self.experimental_temp_k is not None
        return self.q10 ** ((temperature_k - self.experimental_temp_k) / 10.0)


@dataclass(frozen=True)
class NmlGate:
    """One HH gate: inf(v) and tau(v) with the NeuroML2 gate-type rules."""

    id: str
    gate_type: str
    instances: int
    terms: Mapping[str, _Term]
    q10: tuple[_Q10, ...] = field(default_factory=tuple)

    def rate_scale(self, celsius: float) -> float:
        """Product of the gate's q10 factors (1 without q10Settings)."""
        return math.prod(q.factor(celsius + 273.15) for q in self.q10)

    def _env(self, v_mV: float, cai_mM: float | None) -> dict[str, float]:
        env = {"v": v_mV * 1e-3}
        if cai_mM is not None:
            env["caConc"] = cai_mM  # mM == mol/m3 (SI)
        if "forwardRate" in self.terms:
            env["alpha"] = self.terms["forwardRate"].value("r", env)
            env["beta"] = self.terms["reverseRate"].value("r", env)
        return env

    def inf(self, v_mV: float, cai_mM: float | None = None) -> float:
        """Steady state at v (mV) and, for Ca-dependent gates, cai (mM)."""
        env = self._env(v_mV, cai_mM)
        if self.gate_type in ("gateHHrates", "gateHHratesTau"):
            return env["alpha"] / (env["alpha"] + env["beta"])
        if self.gate_type in ("gateHHtauInf", "gateHHratesInf", "gateHHratesTauInf"):
            return self.terms["steadyState"].value("x", env)
        raise NmlError(f"unsupported gate type {self.gate_type}")

    def tau(self, v_mV: float, cai_mM: float | None = None, celsius: float = 34.0) -> float:
        """Time constant (ms) at v (mV), temperature-corrected as the file specifies."""
        env = self._env(v_mV, cai_mM)
        scale = self.rate_scale(celsius)
        if self.gate_type in ("gateHHrates", "gateHHratesInf"):
            tau_s = 1.0 / ((env["alpha"] + env["beta"]) * scale)
        elif self.gate_type in ("gateHHtauInf", "gateHHratesTau", "gateHHratesTauInf"):
            tau_s = self.terms["timeCourse"].value("t", env) / scale
        else:
            raise NmlError(f"unsupported gate type {self.gate_type}")
        return tau_s * 1e3


@dataclass(frozen=True)
class NmlChannel:
    """A NeuroML2 HH ion channel: species and gates (in file order)."""

    id: str
    species: str
    gates: Mapping[str, NmlGate]
    source: Path

    def open_fraction(self, states: Mapping[str, float]) -> float:
        """prod(gate ** instances): the conductance formula g = gbar * open_fraction."""
        return math.prod(states[g] ** gate.instances for g, gate in self.gates.items())

    def steady_open_fraction(self, v_mV: float, cai_mM: float | None = None) -> float:
        """Open fraction with every gate at its steady state."""
        return self.open_fraction({g: gate.inf(v_mV, cai_mM) for g, gate in self.gates.items()})


def mechanisms_dir() -> Path:
    """The NeuroML2 mechanism folder inside the installed bluepyopt package."""
    root = resources.files("bluepyopt") / "neuroml" / "NeuroML2_mechanisms"
    path = Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(f"bluepyopt NeuroML2 mechanisms not found at {path}")
    return path


_GATE_TYPES = {
    "gateHHrates",
    "gateHHtauInf",
    "gateHHratesTau",
    "gateHHratesInf",
    "gateHHratesTauInf",
}
_TERM_TAGS = ("forwardRate", "reverseRate", "timeCourse", "steadyState")


def _gate_elements(channel: ET.Element) -> list[tuple[str, ET.Element]]:
    gates: list[tuple[str, ET.Element]] = []
    for el in channel:
        tag = el.tag.removeprefix(NML_NS)
        if tag == "gate":
            gates.append((el.attrib["type"], el))
        elif tag in _GATE_TYPES:
            gates.append((tag, el))
    return gates


@cache
def load_channel(name: str, directory: Path | None = None) -> NmlChannel:
    """Parse `<name>.channel.nml` (e.g. 'NaTa_t') from BluePyOpt's NeuroML2 folder."""
    path = Path(directory or mechanisms_dir()) / f"{name}.channel.nml"
    root = ET.parse(path).getroot()
    custom = _parse_component_types(root)
    channel = None
    for tag in ("ionChannel", "ionChannelHH"):
        channel = root.find(f"{NML_NS}{tag}")
        if channel is not None:
            break
    if channel is None:
        raise NmlError(f"no ionChannel in {path}")
    gates: dict[str, NmlGate] = {}
    for gate_type, el in _gate_elements(channel):
        if gate_type not in _GATE_TYPES:
            raise NmlError(f"{path.name}: unsupported gate type {gate_type}")
        terms: dict[str, _Term] = {}
        q10: list[_Q10] = []
        for child in el:
            tag = child.tag.removeprefix(NML_NS)
            if tag in _TERM_TAGS:
                kind = child.attrib["type"]
                params = {
                    k: quantity_si(v)
                    for k, v in child.attrib.items()
                    if k in ("rate", "midpoint", "scale", "tau")
                }
                terms[tag] = _Term(kind, params, custom.get(kind))
            elif tag == "q10Settings":
                kind = child.attrib["type"]
                if kind == "q10Fixed":
                    q10.append(_Q10(kind, float(child.attrib["fixedQ10"])))
                elif kind == "q10ExpTemp":
                    t_exp = child.attrib["experimentalTemp"]
                    t_k = quantity_si(t_exp) + (273.15 if t_exp.strip().endswith("degC") else 0)
                    q10.append(_Q10(kind, float(child.attrib["q10Factor"]), t_k))
                else:
                    raise NmlError(f"{path.name}: unsupported q10Settings {kind}")
        gates[el.attrib["id"]] = NmlGate(
            el.attrib["id"], gate_type, int(el.attrib["instances"]), terms, tuple(q10)
        )
    return NmlChannel(channel.attrib["id"], channel.attrib.get("species", ""), gates, path)


# --------------------------------------------------------------------------- Ca2+ dynamics

FARADAY_NML = 96485.3  # C/mol, the value the concentrationModelHayEtAl type declares


@dataclass(frozen=True)
class NmlCaDynamics:
    """The Hay et al. Ca2+ pool (concentrationModelHayEtAl) of baseCaDynamics_E2_NML2.nml."""

    id: str
    gamma: float
    decay_ms: float
    depth_um: float
    min_cai_mM: float
    time_derivative: str  # the LEMS expression for d concentration / dt
    constants: Mapping[str, float]

    def dcai_dt(
        self,
        cai_mM: float,
        ica_mA_per_cm2: float,
        *,
        gamma: float | None = None,
        decay_ms: float | None = None,
        depth_um: float | None = None,
        min_cai_mM: float | None = None,
    ) -> float:
        """d cai / dt in mM/ms from the file's TimeDerivative (ica: NEURON sign, outward > 0).

        NeuroML's iCa is the current INTO the cell, so iCa = -ica. Keyword arguments override
        the file's parameter values (the channel tests use the L5PC region values).
        """
        env = dict(self.constants)
        env.update(
            {
                # surface current density, A/m2 (1 mA/cm2 = 10 A/m2), inward positive
                "currDensCa": -ica_mA_per_cm2 * 10.0,
                "gamma": self.gamma if gamma is None else gamma,
                "decay": (self.decay_ms if decay_ms is None else decay_ms) * 1e-3,
                "depth": (self.depth_um if depth_um is None else depth_um) * 1e-6,
                "minCai": self.min_cai_mM if min_cai_mM is None else min_cai_mM,
                "concentration": cai_mM,
            }
        )
        return eval_expr(self.time_derivative, env) * 1e-3  # mol/m3/s -> mM/ms


@cache
def load_ca_dynamics(
    model_id: str = "CaDynamics_E2_NML2", directory: Path | None = None
) -> NmlCaDynamics:
    """Parse one concentrationModel (default: the generic Hay pool) and its ComponentType."""
    path = Path(directory or mechanisms_dir()) / "baseCaDynamics_E2_NML2.nml"
    root = ET.parse(path).getroot()
    model = next(
        (m for m in root.iter(f"{NML_NS}concentrationModel") if m.attrib["id"] == model_id), None
    )
    if model is None:
        raise NmlError(f"no concentrationModel {model_id!r} in {path}")
    ctype = model.attrib["type"]
    ct = next((c for c in root.iter(f"{NML_NS}ComponentType") if c.attrib["name"] == ctype), None)
    if ct is None:
        raise NmlError(f"no ComponentType {model.attrib['type']!r} in {path}")
    derivs = [
        td for td in ct.iter(f"{NML_NS}TimeDerivative") if td.attrib["variable"] == "concentration"
    ]
    if len(derivs) != 1:
        raise NmlError(f"{path.name}: expected one TimeDerivative of concentration")
    constants = {
        c.attrib["name"]: quantity_si(c.attrib["value"]) for c in ct.iter(f"{NML_NS}Constant")
    }
    # the file names its Faraday constant 'Faraday'; keep whatever it declares
    return NmlCaDynamics(
        id=model_id,
        gamma=float(model.attrib["gamma"]),
        decay_ms=quantity_si(model.attrib["decay"]) * 1e3,
        depth_um=quantity_si(model.attrib["depth"]) * 1e6,
        min_cai_mM=quantity_si(model.attrib["minCai"]),
        time_derivative=derivs[0].attrib["value"],
        constants=constants,
    )
