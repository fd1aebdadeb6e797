"""Validation protocols (SPEC section 8; Hay et al. 2011, BluePyOpt's L5PC example, Larkum et
al. 1999) as pure data, shared by the parent process and the NEURON worker:

- ``fi``: somatic steps 0.1 .. 1.5 nA (0.1 nA apart, 1 s each) -> F-I curve.
- ``steps``: BluePyOpt's Step1/2/3: -0.126 nA holding from t = 0, a 2 s step of 0.458 / 0.562 /
  0.95 nA at 700 ms, 3 s in all; eFEL ``mean_frequency`` between 700 and 2700 ms, threshold
  -20 mV (BluePyOpt's somatic threshold).
- ``bap``: BluePyOpt's bAP: 1.9 nA x 5 ms at 295 ms; eFEL ``AP_amplitude_from_voltagebase`` at
  660 and 800 um on the apical trunk (threshold -55 mV as BluePyOpt uses for dendrites).
- ``bac``: Hay's BAC firing: the same somatic pulse, an EPSP-shaped current (double exponential,
  rise 0.5 ms, decay 5 ms, peak 0.5 nA) on the trunk at 620 um starting 5 ms after the pulse;
  three sweeps: pulse alone, EPSP alone, both.
- ``hay_steps``: Hay 2011's three 2 s somatic steps of 0.619 / 0.793 / 1.507 nA from 700 ms
  (no holding current), 3 s in all; eFEL features between 700 and 2700 ms.
- ``ca_train``: a single somatic pulse, then trains of five 2 ms pulses at 50 .. 150 Hz. Each
  pulse is set just above its own AP threshold (Larkum et al. 1999 adjusted theirs to evoke one
  AP per pulse): the worker finds, pulse after pulse, the weakest amplitude that evokes an AP
  within 3 ms of the pulse's end, and applies it with a 1% margin. The critical frequency is the
  lowest train frequency that triggers a dendritic Ca2+ spike (Larkum et al. 1999: 60-200 Hz,
  typically ~100 Hz). One amplitude for all pulses cannot do this: a pulse strong enough for the
  5th AP of a train fires a doublet and the Ca2+ spike on its own, even in Hay's own model.
- ``ref_fi``: the reference pipeline's own F-I protocol: 3 s runs at a fixed dt of 0.1 ms, a
  step from 500 to 3000 ms at 0.4 / 0.8 / 1.2 / 2.0 / 3.0 nA, spikes counted as upward crossings
  of -10 mV at the soma, rate over 1000-3000 ms.

Trunk sites are given as distances on Hay's cell1 (the BAC/Ca2+ site 620 um, the bAP sites 660
and 800 um); a cell's biophysics file says how they map onto its morphology (`site_shift`).
Which protocols a cell runs, and which targets gate it, follow its target family
(``FAMILY_PROTOCOLS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DT = 0.025  # ms, output sampling and the fixed step
CVODE_ATOL = 1e-3  # NEURON's default absolute tolerance
CELSIUS = 34.0
V_INIT = -80.0  # mV, starting guess for the rest relaxation
E_FAR = 1e6  # mV, reversal of the Exp2Syn used as a current source
BAC_SITE_UM = 620.0  # Hay 2011's distal site (EPSP injection and Ca2+ recording)
DEFAULT_CELL = "L5PC_hay_C060114A7"
# Validation discretisation: Hay's own, nseg = 1 + 2*int(L/40) (BMTK's rule with dL = 20 um),
# on which Hay's targets were fitted; `validate-cell --dL 5` validates at the study's dL.
VALIDATION_DL = 20.0
CODE_VERSION = "3"  # 3: ca_train pulses each just above threshold


class ValidationError(RuntimeError):
    """A validation run could not be carried out (bad cell name, missing morphology, crash)."""


@dataclass(frozen=True)
class Pulse:
    """Square current pulse (nA) at a recording site."""

    site: str
    delay: float
    duration: float
    amp: float


@dataclass(frozen=True)
class EpspCurrent:
    """Double-exponential current, normalised so its peak is `peak` nA."""

    site: str
    onset: float
    tau_rise: float
    tau_decay: float
    peak: float


@dataclass(frozen=True)
class Sweep:
    """One stimulus condition; all its stimuli start at or after the protocol's lead-in."""

    name: str
    pulses: tuple[Pulse, ...] = ()
    epsps: tuple[EpspCurrent, ...] = ()
    value: float | None = None  # the swept quantity (nA, Hz), for tables and plots


@dataclass(frozen=True)
class Protocol:
    """A protocol: sites to record (None = soma centre, else trunk distance in um), a somatic
    holding current on from t = 0, a shared lead-in and the sweeps."""

    name: str
    title: str
    tstop: float
    lead_in: float
    sites: tuple[tuple[str, float | None], ...]
    sweeps: tuple[Sweep, ...]
    holding: float = 0.0
    stim_window: tuple[float, float] = (0.0, 0.0)  # eFEL stim_start, stim_end
    fixed_dt: float | None = None  # integrate with this fixed step instead of CVode

    def trunk_distances(self) -> list[float]:
        return [d for _, d in self.sites if d is not None]


FI_AMPS = tuple(round(0.1 * k, 1) for k in range(1, 16))
FI_START, FI_DURATION = 300.0, 1000.0
STEP_AMPS = (0.458, 0.562, 0.95)
HAY_STEP_AMPS = (0.619, 0.793, 1.507)
# every train's pulses are calibrated one by one: six frequencies bracket [60, 120] Hz
TRAIN_FREQS = (50.0, 60.0, 80.0, 100.0, 120.0, 150.0)
TRAIN_PULSE = (2.0, 4.0)  # ms, nA: placeholder amplitude; the worker calibrates every pulse
TRAIN_CALIBRATION = (0.0, 8.0, 0.01)  # nA: search range and resolution of a pulse's threshold
TRAIN_MARGIN = 1.01  # applied amplitude / threshold amplitude ("just suprathreshold")
TRAIN_AP_WINDOW = 3.0  # ms after a pulse's end within which its AP must start
TRAIN_START = 295.0
REF_FI_AMPS = (0.4, 0.8, 1.2, 2.0, 3.0)
REF_FI_START, REF_FI_STOP = 500.0, 3000.0
REF_FI_WINDOW = (1000.0, 3000.0)  # rate over the last 2 s of the step
REF_FI_DT = 0.1
REF_FI_THRESHOLD = -10.0  # mV


def _amps(amp: float | Sequence[float], n: int) -> list[float]:
    return [float(amp)] * n if isinstance(amp, int | float) else [float(a) for a in amp]


def _train(freq: float, amp: float | Sequence[float] = TRAIN_PULSE[1]) -> Sweep:
    period = 1000.0 / freq
    pulses = tuple(
        Pulse("soma", TRAIN_START + k * period, TRAIN_PULSE[0], a)
        for k, a in enumerate(_amps(amp, 5))
    )
    return Sweep(f"{freq:g}Hz", pulses=pulses, value=freq)


def ap_windows(sweep: Sweep) -> list[tuple[float, float]]:
    """Per pulse of a train sweep, the window (ms) in which the AP it evokes must start: from
    its onset to TRAIN_AP_WINDOW after its end, cut at the next pulse's onset."""
    onsets = [p.delay for p in sweep.pulses]
    out = []
    for k, p in enumerate(sweep.pulses):
        end = p.delay + p.duration + TRAIN_AP_WINDOW
        if k + 1 < len(onsets):
            end = min(end, onsets[k + 1])
        out.append((p.delay, end))
    return out


def train_protocol(
    amp: float | Mapping[str, Sequence[float]],
    freqs: tuple[float, ...] = TRAIN_FREQS,
    single: bool = True,
    tstop: float = 600.0,
) -> Protocol:
    """The ca_train protocol: pulses of `amp` nA, or per sweep name the amplitude of each
    pulse (what the worker's calibration finds; a sweep it did not calibrate keeps the
    placeholder)."""

    def of(name: str, n: int) -> float | Sequence[float]:
        if isinstance(amp, Mapping):
            return _amps(amp.get(name, TRAIN_PULSE[1]), n)
        return amp

    sweeps = (
        (
            Sweep(
                "single",
                pulses=(Pulse("soma", TRAIN_START, TRAIN_PULSE[0], _amps(of("single", 1), 1)[0]),),
                value=0.0,
            ),
        )
        if single
        else ()
    )
    return Protocol(
        name="ca_train",
        title="Ca2+ spike after 5 somatic APs: 2 ms pulses just above threshold, 50-150 Hz",
        tstop=tstop,
        lead_in=TRAIN_START,
        sites=(("soma", None), ("dend", BAC_SITE_UM)),
        sweeps=sweeps + tuple(_train(f, of(f"{f:g}Hz", 5)) for f in freqs),
        stim_window=(TRAIN_START, tstop),
    )


def _steps(name: str, title: str, amps: tuple[float, ...], holding: float) -> Protocol:
    return Protocol(
        name=name,
        title=title,
        tstop=3000.0,
        lead_in=700.0,
        holding=holding,
        sites=(("soma", None),),
        sweeps=tuple(
            Sweep(f"step{i + 1}", pulses=(Pulse("soma", 700.0, 2000.0, a),), value=a)
            for i, a in enumerate(amps)
        ),
        stim_window=(700.0, 2700.0),
    )


_BAC_PULSE = Pulse("soma", 295.0, 5.0, 1.9)
_BAC_EPSP = EpspCurrent("dend", 300.0, 0.5, 5.0, 0.5)

PROTOCOLS: dict[str, Protocol] = {
    "fi": Protocol(
        name="fi",
        title="F-I curve: 1 s somatic steps, 0.1-1.5 nA",
        tstop=FI_START + FI_DURATION + 100.0,
        lead_in=FI_START,
        sites=(("soma", None),),
        sweeps=tuple(
            Sweep(f"{a:.1f}nA", pulses=(Pulse("soma", FI_START, FI_DURATION, a),), value=a)
            for a in FI_AMPS
        ),
        stim_window=(FI_START, FI_START + FI_DURATION),
    ),
    "steps": _steps(
        "steps", "BluePyOpt Step1-3: 2 s steps on a -0.126 nA holding current", STEP_AMPS, -0.126
    ),
    "hay_steps": _steps(
        "hay_steps", "Hay 2011 steps: 2 s of 0.619 / 0.793 / 1.507 nA", HAY_STEP_AMPS, 0.0
    ),
    "bap": Protocol(
        name="bap",
        title="Back-propagating AP: 1.9 nA x 5 ms somatic pulse",
        tstop=600.0,
        lead_in=295.0,
        sites=(("soma", None), ("dend1", 660.0), ("dend2", 800.0)),
        sweeps=(Sweep("bap", pulses=(Pulse("soma", 295.0, 5.0, 1.9),), value=1.9),),
        stim_window=(295.0, 600.0),
    ),
    "bac": Protocol(
        name="bac",
        title="BAC firing: somatic pulse + distal EPSP-shaped current (Hay 2011)",
        tstop=600.0,
        lead_in=295.0,
        sites=(("soma", None), ("dend", BAC_SITE_UM)),
        sweeps=(
            Sweep("soma_only", pulses=(_BAC_PULSE,)),
            Sweep("epsp_only", epsps=(_BAC_EPSP,)),
            Sweep("paired", pulses=(_BAC_PULSE,), epsps=(_BAC_EPSP,)),
        ),
        stim_window=(295.0, 600.0),
    ),
    "ca_train": train_protocol(TRAIN_PULSE[1]),
    "ref_fi": Protocol(
        name="ref_fi",
        title="Reference pipeline F-I: 2.5 s steps from 500 ms, dt 0.1 ms, rate over 1-3 s",
        tstop=REF_FI_STOP,
        lead_in=REF_FI_START,
        sites=(("soma", None),),
        sweeps=tuple(
            Sweep(
                f"{a:.1f}nA",
                pulses=(Pulse("soma", REF_FI_START, REF_FI_STOP - REF_FI_START, a),),
                value=a,
            )
            for a in REF_FI_AMPS
        ),
        stim_window=REF_FI_WINDOW,
        fixed_dt=REF_FI_DT,
    ),
}
PROTOCOL_NAMES = tuple(PROTOCOLS)
# Target families: which protocols a cell runs by default (its biophysics file names the family).
FAMILIES = ("bluepyopt", "hay2011")
FAMILY_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "bluepyopt": ("fi", "steps", "bap", "bac", "ca_train", "ref_fi"),
    "hay2011": ("fi", "hay_steps", "bap", "bac", "ca_train", "ref_fi"),
}
