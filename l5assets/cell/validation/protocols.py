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
- ``ca_train``: five somatic APs (2 ms x 6 nA pulses) at 50 .. 150 Hz; the critical frequency is
  the lowest one that triggers a dendritic Ca2+ spike (Larkum et al. 1999: ~100 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

DT = 0.025  # ms, output sampling and the fixed step
CVODE_ATOL = 1e-3  # NEURON's default absolute tolerance
CELSIUS = 34.0
V_INIT = -80.0  # mV, starting guess for the rest relaxation
E_FAR = 1e6  # mV, reversal of the Exp2Syn used as a current source
BAC_SITE_UM = 620.0  # Hay 2011's distal site (EPSP injection and Ca2+ recording)
DEFAULT_CELL = "L5PC_bbp"
CODE_VERSION = "1"


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

    def trunk_distances(self) -> list[float]:
        return [d for _, d in self.sites if d is not None]


FI_AMPS = tuple(round(0.1 * k, 1) for k in range(1, 16))
FI_START, FI_DURATION = 300.0, 1000.0
STEP_AMPS = (0.458, 0.562, 0.95)
TRAIN_FREQS = (50.0, 70.0, 90.0, 100.0, 120.0, 150.0)
TRAIN_PULSE = (2.0, 6.0)  # ms, nA: one AP per pulse, also late in a 150 Hz train
TRAIN_START = 295.0


def _train(freq: float) -> Sweep:
    period = 1000.0 / freq
    pulses = tuple(
        Pulse("soma", TRAIN_START + k * period, TRAIN_PULSE[0], TRAIN_PULSE[1]) for k in range(5)
    )
    return Sweep(f"{freq:g}Hz", pulses=pulses, value=freq)


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
    "steps": Protocol(
        name="steps",
        title="BluePyOpt Step1-3: 2 s steps on a -0.126 nA holding current",
        tstop=3000.0,
        lead_in=700.0,
        holding=-0.126,
        sites=(("soma", None),),
        sweeps=tuple(
            Sweep(f"step{i + 1}", pulses=(Pulse("soma", 700.0, 2000.0, a),), value=a)
            for i, a in enumerate(STEP_AMPS)
        ),
        stim_window=(700.0, 2700.0),
    ),
    "bap": Protocol(
        name="bap",
        title="Back-propagating AP: 1.9 nA x 5 ms somatic pulse",
        tstop=600.0,
        lead_in=295.0,
        sites=(("soma", None), ("dend660", 660.0), ("dend800", 800.0)),
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
    "ca_train": Protocol(
        name="ca_train",
        title="Ca2+ spike after 5 somatic APs: 2 ms x 6 nA pulses at 50-150 Hz",
        tstop=600.0,
        lead_in=TRAIN_START,
        sites=(("soma", None), ("dend", BAC_SITE_UM)),
        sweeps=tuple(_train(f) for f in TRAIN_FREQS),
        stim_window=(TRAIN_START, 600.0),
    ),
}
PROTOCOL_NAMES = tuple(PROTOCOLS)
