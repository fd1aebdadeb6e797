"""Our Hay-family NMODL channels against BluePyOpt's NeuroML2 definitions (the oracle).

For every channel and gate: steady state and time constant over -100..+50 mV (5-mV grid plus
each exponential-linear rate's removable singularity) read from the compiled mechanism's RANGE
variables (mInf, mTau, ...), the conductance formula gbar * prod(gate^instances) * (v - e)
at steady state, and under voltage clamp the gate time courses and the current against the
analytic HH solution built from the oracle's inf/tau. CaDynamics_E2: relaxation to minCai and
Ca2+ influx against the NeuroML TimeDerivative integrated with scipy.

Tolerance: 1% relative, with an absolute floor of 1e-6 for steady states (dimensionless) and
open fractions (1e-6 of gbar), 1e-6 ms for time constants, 1e-9 mM for cai; values below a
floor are physiologically irrelevant and only test round-off.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from nml_oracle import NmlChannel, load_ca_dynamics, load_channel
from scipy.integrate import solve_ivp

from l5assets.cell import mechanisms

REL_TOL = 0.01
INF_FLOOR = 1e-6
TAU_FLOOR_MS = 1e-6
CAI_FLOOR_MM = 1e-9

# SUFFIX -> (RANGE conductance parameter, current, reversal potential)
CHANNELS: dict[str, tuple[str, str, str]] = {
    "NaTa_t": ("gNaTa_tbar", "ina", "ena"),
    "NaTs2_t": ("gNaTs2_tbar", "ina", "ena"),
    "Nap_Et2": ("gNap_Et2bar", "ina", "ena"),
    "K_Pst": ("gK_Pstbar", "ik", "ek"),
    "K_Tst": ("gK_Tstbar", "ik", "ek"),
    "SKv3_1": ("gSKv3_1bar", "ik", "ek"),
    "Ca_HVA": ("gCa_HVAbar", "ica", "eca"),
    "Ca_LVAst": ("gCa_LVAstbar", "ica", "eca"),
    "Ih": ("gIhbar", "ihcn_Ih", "ehcn_Ih"),
    "Im": ("gImbar", "ik", "ek"),
}
VOLTAGE_GATED = list(CHANNELS)
GBAR = 0.01  # S/cm2, any value: currents are compared relative to the same gbar


def rel_err(ours: float, ref: float, floor: float) -> float:
    """|ours - ref| relative to |ref|, or to `floor` when |ref| is below it."""
    return abs(ours - ref) / max(abs(ref), floor)


def voltage_grid(channel: NmlChannel) -> list[float]:
    """-100..+50 mV every 5 mV, plus the midpoints of exponential-linear rates (x = 0)."""
    grid = {float(v) for v in np.arange(-100.0, 50.0 + 1e-9, 5.0)}
    for gate in channel.gates.values():
        for term in gate.terms.values():
            if term.kind == "HHExpLinearRate":
                mid_mV = term.params["midpoint"] * 1e3
                if -100.0 <= mid_mV <= 50.0:
                    grid.add(round(mid_mV, 9))
    return sorted(grid)


@pytest.fixture(scope="module")
def h() -> Iterator[Any]:
    """NEURON with the project's mechanism library (the same build for the whole process)."""
    mechanisms.load_mechanisms(mechanisms.compile_mechanisms())
    from neuron import h as nrn_h

    nrn_h.load_file("stdrun.hoc")
    saved = (nrn_h.celsius, nrn_h.dt, nrn_h.cai0_ca_ion)
    nrn_h.celsius = 34.0
    yield nrn_h
    nrn_h.celsius, nrn_h.dt, nrn_h.cai0_ca_ion = saved


def one_compartment(h: Any, *mechs: str) -> Any:
    """A 1-segment section (small area, so clamp currents stay tiny) with `mechs` inserted."""
    sec = h.Section(name="kinetics_test")
    sec.L = sec.diam = 5.0
    sec.nseg = 1
    for m in mechs:
        sec.insert(m)
    return sec


def reversal(seg: Any, h: Any, name: str) -> float:
    return float(getattr(h, name)) if name.endswith("_Ih") else float(getattr(seg, name))


def current(seg: Any, name: str) -> float:
    return float(getattr(seg, name))


@pytest.mark.parametrize("mech", VOLTAGE_GATED)
def test_steady_state_and_tau_match_neuroml(h: Any, mech: str) -> None:
    """inf and tau of every gate, and g*prod(inf^p)*(v-e), at each voltage of the grid."""
    nml = load_channel(mech)
    gbar_name, i_name, e_name = CHANNELS[mech]
    sec = one_compartment(h, mech)
    seg = sec(0.5)
    setattr(seg, f"{gbar_name}_{mech}", GBAR)
    worst = {"inf": 0.0, "tau": 0.0, "current": 0.0}
    for v in voltage_grid(nml):
        h.finitialize(v)  # INITIAL calls rates() at v; the currents are evaluated too
        states = {}
        for g, gate in nml.gates.items():
            inf, tau = getattr(seg, f"{g}Inf_{mech}"), getattr(seg, f"{g}Tau_{mech}")
            ref_inf, ref_tau = gate.inf(v), gate.tau(v, celsius=h.celsius)
            err_inf, err_tau = rel_err(inf, ref_inf, INF_FLOOR), rel_err(tau, ref_tau, TAU_FLOOR_MS)
            assert err_inf <= REL_TOL, f"{mech}.{g}Inf at {v} mV: {inf} vs NML {ref_inf}"
            assert err_tau <= REL_TOL, f"{mech}.{g}Tau at {v} mV: {tau} ms vs NML {ref_tau} ms"
            # the state itself starts at inf
            assert getattr(seg, f"{g}_{mech}") == pytest.approx(inf, rel=1e-12, abs=1e-300)
            worst["inf"] = max(worst["inf"], err_inf)
            worst["tau"] = max(worst["tau"], err_tau)
            states[g] = ref_inf
        drive = v - reversal(seg, h, e_name)
        ref_i = GBAR * nml.open_fraction(states) * drive
        err_i = rel_err(current(seg, i_name), ref_i, GBAR * INF_FLOOR * abs(drive) or 1e-30)
        assert err_i <= REL_TOL, f"{mech} current at {v} mV: {current(seg, i_name)} vs {ref_i}"
        worst["current"] = max(worst["current"], err_i)
    print(f"{mech}: max relative error {worst}")


@pytest.mark.parametrize("mech", VOLTAGE_GATED)
def test_kinetics_do_not_depend_on_celsius(h: Any, mech: str) -> None:
    """The published model is defined at 34 degC: q10 factors are fixed (NeuroML q10Fixed)."""
    sec = one_compartment(h, mech)
    seg = sec(0.5)
    gates = list(load_channel(mech).gates)
    values = []
    for celsius in (34.0, 6.3, 37.0):
        h.celsius = celsius
        h.finitialize(-40.0)
        values.append([getattr(seg, f"{g}{k}_{mech}") for g in gates for k in ("Inf", "Tau")])
    h.celsius = 34.0
    assert values[1] == values[0] and values[2] == values[0]


CLAMP_PROTOCOLS = [(-90.0, -60.0), (-90.0, -30.0), (-90.0, 0.0), (-90.0, 30.0), (-40.0, -100.0)]


@pytest.mark.parametrize("mech", VOLTAGE_GATED)
def test_voltage_clamp_time_course_and_current(h: Any, mech: str) -> None:
    """Clamp steps: gates follow inf + (inf0 - inf) exp(-t/tau); I = gbar prod(g^p) (v - e).

    cnexp integrates a gate exactly while v is constant, so the comparison is exact up to the
    clamp error (rs 1e-5 MOhm: microvolts) and the time step does not matter.
    """
    nml = load_channel(mech)
    gbar_name, i_name, e_name = CHANNELS[mech]
    sec = one_compartment(h, mech)
    sec.insert("pas")
    seg = sec(0.5)
    setattr(seg, f"{gbar_name}_{mech}", GBAR)
    clamp = h.SEClamp(seg)
    clamp.rs = 1e-5
    clamp.dur1 = 1e9
    worst_state = worst_i = 0.0
    for hold, step in CLAMP_PROTOCOLS:
        clamp.amp1 = step
        h.dt = 0.025
        h.finitialize(hold)
        start = {g: gate.inf(hold) for g, gate in nml.gates.items()}
        inf = {g: gate.inf(step) for g, gate in nml.gates.items()}
        tau = {g: gate.tau(step, celsius=h.celsius) for g, gate in nml.gates.items()}
        targets = sorted({f * t for t in tau.values() for f in (0.3, 1.0, 3.0)})
        for target in targets:
            # v is constant after the first step, so larger steps stay exact
            h.dt = max(0.025, (target - h.t) / 50.0)
            while h.t < target - 1e-9:
                h.fadvance()
            expected = {g: inf[g] + (start[g] - inf[g]) * math.exp(-h.t / tau[g]) for g in inf}
            for g, ref in expected.items():
                ours = getattr(seg, f"{g}_{mech}")
                err = rel_err(ours, ref, INF_FLOOR)
                assert err <= REL_TOL, f"{mech}.{g} at t={h.t} ms, {hold}->{step} mV"
                worst_state = max(worst_state, err)
            h.fcurrent()  # currents from the present states and v
            drive = seg.v - reversal(seg, h, e_name)
            ref_i = GBAR * nml.open_fraction(expected) * drive
            err_i = rel_err(current(seg, i_name), ref_i, GBAR * INF_FLOOR * abs(drive) or 1e-30)
            assert err_i <= REL_TOL, f"{mech} current at t={h.t} ms, {hold}->{step} mV"
            worst_i = max(worst_i, err_i)
        assert abs(seg.v - step) < 1e-3
    print(f"{mech}: clamp max relative error state {worst_state:.2e} current {worst_i:.2e}")


def test_sk_e2_calcium_dependence(h: Any) -> None:
    """SK_E2: zInf is the NML Hill function of cai, zTau 1 ms; z relaxes to a cai step."""
    nml = load_channel("SK_E2")
    gate = nml.gates["z"]
    sec = one_compartment(h, "SK_E2")  # nothing writes cai here: it is a parameter
    seg = sec(0.5)
    seg.gSK_E2bar_SK_E2 = GBAR
    worst = 0.0
    for cai in np.geomspace(1e-5, 1e-2, 31):
        seg.cai = float(cai)
        for v in (-80.0, 0.0):
            h.finitialize(v)
            assert seg.cai == pytest.approx(cai, rel=1e-12)
            err_inf = rel_err(seg.zInf_SK_E2, gate.inf(v, cai), INF_FLOOR)
            err_tau = rel_err(seg.zTau_SK_E2, gate.tau(v, cai, celsius=h.celsius), TAU_FLOOR_MS)
            ref_i = GBAR * gate.inf(v, cai) * (v - seg.ek)
            err_i = rel_err(seg.ik, ref_i, GBAR * INF_FLOOR * abs(v - seg.ek))
            assert max(err_inf, err_tau, err_i) <= REL_TOL, f"SK_E2 at cai={cai} mM, v={v} mV"
            worst = max(worst, err_inf, err_tau, err_i)
    # dynamics: step cai from 1e-4 to 1e-3 mM after initialisation, z relaxes with zTau
    seg.cai = 1e-4
    h.dt = 0.025
    h.finitialize(-70.0)
    seg.cai = 1e-3
    z0, zinf, ztau = gate.inf(-70.0, 1e-4), gate.inf(-70.0, 1e-3), gate.tau(-70.0, 1e-3)
    for target in (0.5, 1.0, 3.0):
        while h.t < target - 1e-9:
            h.fadvance()
        ref = zinf + (z0 - zinf) * math.exp(-h.t / ztau)
        assert rel_err(seg.z_SK_E2, ref, INF_FLOOR) <= REL_TOL
    print(f"SK_E2: max relative error {worst:.2e}")


def _nml_cai(cai0: float, ica: float, t_ms: np.ndarray, **params: float) -> np.ndarray:
    """Integrate the NeuroML TimeDerivative at constant ica (mA/cm2, outward > 0)."""
    model = load_ca_dynamics()
    sol = solve_ivp(
        lambda _t, y: [model.dcai_dt(y[0], ica, **params)],
        (0.0, float(t_ms[-1])),
        [cai0],
        t_eval=t_ms,
        rtol=1e-10,
        atol=1e-14,
        method="LSODA",
    )
    assert sol.success
    return sol.y[0]


def _run_samples(h: Any, seg: Any, t_ms: np.ndarray, dt: float = 0.025) -> np.ndarray:
    out = []
    h.dt = dt
    for target in t_ms:
        while h.t < target - 1e-9:
            h.fadvance()
        out.append(seg.cai)
    return np.asarray(out)


@pytest.mark.parametrize(
    "params",
    [
        {},  # the generic NML pool: gamma 0.05, decay 80 ms, depth 0.1 um, minCai 1e-4 mM
        {"gamma": 5.01e-4, "decay_ms": 460.0},  # soma of the reference parameters
        {"gamma": 5.09e-4, "decay_ms": 122.0, "depth_um": 0.2, "min_cai_mM": 5e-5},
    ],
)
def test_cadynamics_relaxation_to_mincai(h: Any, params: dict[str, float]) -> None:
    """Without Ca2+ current cai decays to minCai with time constant `decay`."""
    model = load_ca_dynamics()
    sec = one_compartment(h, "CaDynamics_E2")
    seg = sec(0.5)
    decay = params.get("decay_ms", model.decay_ms)
    seg.gamma_CaDynamics_E2 = params.get("gamma", model.gamma)
    seg.decay_CaDynamics_E2 = decay
    seg.depth_CaDynamics_E2 = params.get("depth_um", model.depth_um)
    seg.minCai_CaDynamics_E2 = params.get("min_cai_mM", model.min_cai_mM)
    h.cai0_ca_ion = 2e-3
    h.finitialize(-70.0)
    h.cai0_ca_ion = 5e-5
    assert seg.ica == 0.0
    t = np.array([0.1, 0.5, 1.0, 2.0, 3.0]) * decay
    ours = _run_samples(h, seg, t, dt=0.1)
    ref = _nml_cai(2e-3, 0.0, t, **params)
    min_cai = params.get("min_cai_mM", model.min_cai_mM)
    analytic = min_cai + (2e-3 - min_cai) * np.exp(-t / decay)
    np.testing.assert_allclose(ref, analytic, rtol=1e-6)
    errs = [rel_err(a, b, CAI_FLOOR_MM) for a, b in zip(ours, ref, strict=True)]
    assert max(errs) <= REL_TOL
    print(f"CaDynamics_E2 relaxation {params}: max relative error {max(errs):.2e}")


# the LVA window current is small: clamp inside the window with a large density
@pytest.mark.parametrize(
    ("mech", "v_clamp", "gbar"), [("Ca_HVA", -20.0, 0.005), ("Ca_LVAst", -45.0, 1.0)]
)
def test_cadynamics_influx_matches_neuroml(h: Any, mech: str, v_clamp: float, gbar: float) -> None:
    """Clamped Ca2+ channel at steady state with eca held fixed: constant ica drives cai.

    cai(t) from NEURON against the NML TimeDerivative (gamma, depth, Faraday; NML's iCa is
    inward-positive) integrated with the same constant current.
    """
    sec = one_compartment(h, mech, "CaDynamics_E2")
    seg = sec(0.5)
    setattr(seg, f"{CHANNELS[mech][0]}_{mech}", gbar)
    seg.gamma_CaDynamics_E2 = 5.09e-4
    seg.decay_CaDynamics_E2 = 122.0
    # eca as a fixed parameter (not Nernst) so that ica stays constant under the clamp
    h.ion_style("ca_ion", 3, 1, 0, 0, 1, sec=sec)
    clamp = h.SEClamp(seg)
    clamp.rs = 1e-5
    clamp.dur1 = 1e9
    clamp.amp1 = v_clamp
    h.cai0_ca_ion = 1e-4
    h.finitialize(v_clamp)
    ica = seg.ica
    assert ica < 0  # inward
    t = np.array([10.0, 50.0, 122.0, 300.0, 600.0])
    ours = _run_samples(h, seg, t)
    assert seg.ica == pytest.approx(ica, rel=1e-5)
    ref = _nml_cai(1e-4, ica, t, gamma=5.09e-4, decay_ms=122.0)
    errs = [rel_err(a, b, CAI_FLOOR_MM) for a, b in zip(ours, ref, strict=True)]
    assert ref[-1] > 2e-4  # the influx term really moved cai
    assert max(errs) <= REL_TOL
    print(f"CaDynamics_E2 influx via {mech}: max relative error {max(errs):.2e}")
