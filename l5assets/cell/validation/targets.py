"""Published targets of the validation features (mean +- SD or a [lower, upper] criterion)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from l5assets.cell.validation.protocols import FAMILIES

N_SD = 2.0  # pass band: mean +- N_SD * SD


@dataclass(frozen=True)
class Target:
    """A published target: mean +- SD (pass within N_SD SDs) or a [lower, upper] criterion."""

    feature: str
    protocol: str
    label: str
    unit: str
    mean: float | None = None
    sd: float | None = None
    lower: float | None = None
    upper: float | None = None
    gating: bool = True  # part of the cell's pass/fail (SPEC section 8); else informational
    source: str = ""
    method: str = ""
    families: tuple[str, ...] = FAMILIES  # target families the row applies to
    gating_for: tuple[str, ...] | None = None  # families where it gates (None: all, if gating)
    note: str = ""  # why a row is informational for this cell (set per cell)

    def bounds(self) -> tuple[float, float]:
        if self.mean is not None and self.sd is not None:
            return self.mean - N_SD * self.sd, self.mean + N_SD * self.sd
        lo = -math.inf if self.lower is None else self.lower
        hi = math.inf if self.upper is None else self.upper
        return lo, hi

    def text(self) -> str:
        if self.mean is not None and self.sd is not None:
            return f"{self.mean:g} ± {self.sd:g}"
        lo, hi = self.bounds()
        if lo == hi:
            return f"= {lo:g}"
        if math.isinf(hi):
            return f">= {lo:g}"
        if math.isinf(lo):
            return f"<= {hi:g}"
        return f"{lo:g} .. {hi:g}"


_BPO = "BluePyOpt L5PC example (features.json; Hay et al. 2011)"
_HAY = "Hay et al. 2011 (BAC firing features)"
_EFEL_SOMA = "eFEL, threshold -20 mV"


def _exact(
    feature: str, protocol: str, label: str, value: float, source: str, method: str, unit: str = ""
) -> Target:
    return Target(
        feature, protocol, label, unit, lower=value, upper=value, source=source, method=method
    )


def _step_extras(step: int) -> list[Target]:
    # BluePyOpt features.json, Step1/2/3 soma (mean, SD); reported, not part of the pass/fail.
    table = {
        1: {
            "AP_height": (25.0141, 3.1463),
            "AHP_depth_abs": (-60.3636, 2.3018),
            "AHP_depth_abs_slow": (-61.1513, 2.3385),
            "AHP_slow_time": (0.1599, 0.0483),
            "AP_width": (3.5312, 0.8592),
            "ISI_CV": (0.109, 0.1217),
            "adaptation_index2": (0.0047, 0.0514),
            "doublet_ISI": (62.75, 9.6667),
            "time_to_first_spike": (27.25, 5.7222),
        },
        2: {
            "AP_height": (27.1003, 3.1463),
            "AHP_depth_abs": (-59.9055, 1.8329),
            "AHP_depth_abs_slow": (-60.2471, 1.8972),
            "AHP_slow_time": (0.1676, 0.0339),
            "AP_width": (2.7917, 0.7499),
            "ISI_CV": (0.0674, 0.075),
            "adaptation_index2": (0.005, 0.0067),
            "doublet_ISI": (44.0, 7.1327),
            "time_to_first_spike": (19.75, 2.8776),
        },
        3: {
            "AP_height": (19.7207, 3.7204),
            "AHP_depth_abs": (-57.0905, 2.3427),
            "AHP_depth_abs_slow": (-61.1513, 2.3385),
            "AHP_slow_time": (0.1968, 0.0112),
            "AP_width": (3.5347, 0.8788),
            "ISI_CV": (0.0737, 0.0292),
            "adaptation_index2": (0.0055, 0.0015),
            "doublet_ISI": (22.75, 4.14),
            "time_to_first_spike": (10.5, 1.36),
        },
    }
    units = {
        "AP_height": "mV",
        "AHP_depth_abs": "mV",
        "AHP_depth_abs_slow": "mV",
        "AP_width": "ms",
        "doublet_ISI": "ms",
        "time_to_first_spike": "ms",
    }
    return [
        Target(
            f"steps.step{step}.{name}",
            "steps",
            f"Step{step} {name}",
            units.get(name, ""),
            mean=m,
            sd=s,
            gating=False,
            source=_BPO,
            method=_EFEL_SOMA,
            families=("bluepyopt",),
        )
        for name, (m, s) in table[step].items()
    ]


_HAY_STEPS = "Hay et al. 2011 (step features, Table 1)"
# Hay 2011's three steps: (mean, SD) per feature; mean_frequency gates, spike-time features
# (measured from spike times exactly as Hay defined them) gate too, shape features are reported.
HAY_STEP_TABLE: dict[str, tuple[tuple[float, float], ...]] = {
    "mean_frequency": ((9.0, 0.88), (14.5, 0.56), (22.5, 2.2222)),
    "adaptation_index2": ((0.0036, 0.0091), (0.0023, 0.0056), (0.0046, 0.0026)),
    "ISI_CV": ((0.1204, 0.0321), (0.1083, 0.0368), (0.0954, 0.014)),
    "doublet_ISI": ((57.75, 33.48), (6.625, 8.65), (5.38, 0.83)),
    "time_to_first_spike": ((43.25, 7.32), (19.125, 7.31), (7.25, 1.0)),
    "AP_height": ((26.23, 4.97), (16.52, 6.11), (16.44, 6.93)),
    "AHP_depth_abs": ((-51.95, 5.82), (-54.19, 5.57), (-56.56, 3.58)),
    "AHP_depth_abs_slow": ((-58.04, 4.58), (-60.51, 4.67), (-59.99, 3.92)),
    "AHP_slow_time": ((0.2376, 0.0299), (0.2787, 0.0266), (0.2131, 0.0368)),
    "AP_width": ((1.3077, 0.1665), (1.3833, 0.2843), (1.8647, 0.4119)),
}
HAY_STEP_GATING = ("mean_frequency",)
_HAY_UNITS = {
    "mean_frequency": "Hz",
    "doublet_ISI": "ms",
    "time_to_first_spike": "ms",
    "AP_height": "mV",
    "AHP_depth_abs": "mV",
    "AHP_depth_abs_slow": "mV",
    "AP_width": "ms",
}


def _hay_steps() -> list[Target]:
    amps = (0.619, 0.793, 1.507)
    rows = []
    for name, stats in HAY_STEP_TABLE.items():
        for k, (m, sd) in enumerate(stats):
            rows.append(
                Target(
                    f"hay_steps.step{k + 1}.{name}",
                    "hay_steps",
                    f"Hay step{k + 1} {amps[k]} nA {name}",
                    _HAY_UNITS.get(name, ""),
                    mean=m,
                    sd=sd,
                    gating=name in HAY_STEP_GATING,
                    source=_HAY_STEPS,
                    method=f"eFEL {name}, 700-2700 ms, -20 mV",
                    families=("hay2011",),
                )
            )
    return rows


TARGETS: tuple[Target, ...] = (
    # --- SPEC section 8 targets (gating) ---
    Target(
        "bap.dend1.amplitude",
        "bap",
        "bAP amplitude at trunk site 1 (660 um on cell1)",
        "mV",
        mean=45.0,
        sd=10.0,
        source=_BPO,
        method="eFEL AP_amplitude_from_voltagebase, threshold -55 mV",
    ),
    Target(
        "bap.dend2.amplitude",
        "bap",
        "bAP amplitude at trunk site 2 (800 um on cell1)",
        "mV",
        mean=36.0,
        sd=9.33,
        source=_BPO,
        method="eFEL AP_amplitude_from_voltagebase, threshold -55 mV",
    ),
    Target(
        "steps.step1.mean_frequency",
        "steps",
        "Step1 0.458 nA mean frequency",
        "Hz",
        mean=6.0,
        sd=1.2,
        source=_BPO,
        method="eFEL mean_frequency, 700-2700 ms, -20 mV",
        families=("bluepyopt",),
    ),
    Target(
        "steps.step2.mean_frequency",
        "steps",
        "Step2 0.562 nA mean frequency",
        "Hz",
        mean=8.5,
        sd=1.0,
        source=_BPO,
        method="eFEL mean_frequency, 700-2700 ms, -20 mV",
        families=("bluepyopt",),
    ),
    Target(
        "steps.step3.mean_frequency",
        "steps",
        "Step3 0.95 nA mean frequency",
        "Hz",
        mean=17.5,
        sd=0.8,
        source=_BPO,
        method="eFEL mean_frequency, 700-2700 ms, -20 mV",
        families=("bluepyopt",),
    ),
    *_hay_steps(),
    Target(
        "fi.monotonic",
        "fi",
        "F-I curve non-decreasing (1 = yes)",
        "",
        lower=1.0,
        upper=1.0,
        source="criterion",
        method="spike counts of successive steps never decrease",
    ),
    Target(
        "fi.rheobase",
        "fi",
        "Rheobase (lowest 1 s step with a spike)",
        "nA",
        lower=0.1,
        upper=0.5,
        source="criterion (L5b PCs: a few hundred pA)",
        method="eFEL spike_count_stimint, -20 mV",
    ),
    _exact(
        "bac.soma_only.spikecount",
        "bac",
        "BAC: somatic pulse alone, somatic APs",
        1.0,
        _HAY,
        "eFEL spike_count_stimint, -20 mV",
    ),
    _exact(
        "bac.soma_only.ca_spike",
        "bac",
        "BAC: somatic pulse alone, Ca2+ spike (0 = none)",
        0.0,
        _HAY,
        "dendritic Ca2+ spike criterion at the Ca2+ site (620 um on cell1)",
    ),
    _exact(
        "bac.epsp_only.spikecount",
        "bac",
        "BAC: distal EPSP alone, somatic APs",
        0.0,
        _HAY,
        "eFEL spike_count_stimint, -20 mV",
    ),
    _exact(
        "bac.epsp_only.ca_spike",
        "bac",
        "BAC: distal EPSP alone, Ca2+ spike (0 = none)",
        0.0,
        _HAY,
        "dendritic Ca2+ spike criterion at the Ca2+ site (620 um on cell1)",
    ),
    _exact(
        "bac.paired.ca_spike",
        "bac",
        "BAC: paired, Ca2+ spike (1 = yes)",
        1.0,
        _HAY,
        "dendritic Ca2+ spike criterion at the Ca2+ site (620 um on cell1)",
    ),
    Target(
        "bac.paired.spikecount",
        "bac",
        "BAC: paired, somatic burst (APs)",
        "",
        lower=2.0,
        source=_HAY,
        method="eFEL spike_count_stimint, -20 mV",
    ),
    Target(
        "ca_train.critical_frequency",
        "ca_train",
        "Critical frequency of 5 somatic APs for a Ca2+ spike",
        "Hz",
        lower=60.0,
        upper=120.0,
        source="Larkum et al. 1999; Hay et al. 2011 (~100 Hz)",
        method=(
            "lowest tested train frequency (50-150 Hz) giving a Ca2+ spike at the Ca2+ site; "
            "every pulse 2 ms, 1% above its own AP threshold"
        ),
    ),
    _exact(
        "ca_train.single.spikecount",
        "ca_train",
        "Ca2+ train: one pulse alone, somatic APs",
        1.0,
        "protocol check (one AP per pulse)",
        "eFEL spike_count_stimint, -20 mV",
    ),
    _exact(
        "ca_train.single.ca_spike",
        "ca_train",
        "Ca2+ train: one pulse alone, Ca2+ spike (0 = none)",
        0.0,
        "Larkum et al. 1999 (a single AP fires no Ca2+ spike)",
        "dendritic Ca2+ spike criterion at the Ca2+ site (620 um on cell1)",
    ),
    _exact(
        "ca_train.50Hz.pulse_aps",
        "ca_train",
        "5-pulse train at 50 Hz: pulses that evoked their AP",
        5.0,
        "Larkum et al. 1999 (one AP per pulse)",
        "upward -20 mV crossing from each pulse's onset to 3 ms after its end",
    ),
    _exact(
        "ca_train.50Hz.ca_spike",
        "ca_train",
        "5-pulse train at 50 Hz: Ca2+ spike (0 = none)",
        0.0,
        "Larkum et al. 1999 (no Ca2+ spike below the critical frequency)",
        "dendritic Ca2+ spike criterion at the Ca2+ site (620 um on cell1)",
    ),
    # --- informational: the rest of the published feature sets ---
    Target(
        "bap.soma.AP_height",
        "bap",
        "bAP somatic AP peak",
        "mV",
        mean=25.0,
        sd=5.0,
        gating=False,
        source=_BPO,
        method=_EFEL_SOMA,
    ),
    Target(
        "bap.soma.AP_width",
        "bap",
        "bAP somatic AP width",
        "ms",
        mean=2.0,
        sd=0.5,
        gating=False,
        source=_BPO,
        method=_EFEL_SOMA,
    ),
    Target(
        "bap.soma.Spikecount",
        "bap",
        "bAP somatic AP count",
        "",
        mean=1.0,
        sd=0.01,
        gating=False,
        source=_BPO,
        method=_EFEL_SOMA,
    ),
    *_step_extras(1),
    *_step_extras(2),
    *_step_extras(3),
    Target(
        "bac.paired.BAC_spikecount",
        "bac",
        "BAC somatic AP count (Hay)",
        "",
        mean=3.0,
        sd=0.01,
        gating=False,
        source=_HAY,
        method=_EFEL_SOMA,
    ),
    Target(
        "bac.paired.BAC_ISI",
        "bac",
        "BAC mean ISI in the burst",
        "ms",
        mean=9.901,
        sd=0.8517,
        source=_HAY,
        method=_EFEL_SOMA,
        gating_for=("hay2011",),
    ),
    Target(
        "bac.paired.BAC_APheight",
        "bac",
        "BAC somatic AP peak",
        "mV",
        mean=25.0,
        sd=5.0,
        gating=False,
        source=_HAY,
        method=_EFEL_SOMA,
    ),
    Target(
        "bac.paired.BAC_ahpdepth",
        "bac",
        "BAC AHP depth",
        "mV",
        mean=-65.0,
        sd=4.0,
        source=_HAY,
        method="eFEL AHP_depth_abs, -20 mV",
        gating_for=("hay2011",),
    ),
    Target(
        "bac.paired.caSpike_height",
        "bac",
        "BAC Ca2+ spike peak at the Ca2+ site",
        "mV",
        mean=6.73,
        sd=2.54,
        source=_HAY,
        method="max dendritic V",
        gating_for=("hay2011",),
    ),
    Target(
        "bac.paired.caSpike_width",
        "bac",
        "BAC Ca2+ spike width at -55 mV",
        "ms",
        mean=37.43,
        sd=1.27,
        source=_HAY,
        method="longest contiguous time above -55 mV at the Ca2+ site (620 um on cell1)",
        gating_for=("hay2011",),
    ),
)
TARGETS_BY_FEATURE = {t.feature: t for t in TARGETS}


def resolve(t: Target, family: str, informational: Mapping[str, str] | None = None) -> Target:
    """The row as it applies to a cell of `family`, with the cell's informational overrides."""
    gating = t.gating and (t.gating_for is None or family in t.gating_for)
    note = ""
    if gating and informational and t.feature in informational:
        gating, note = False, informational[t.feature]
    return replace(t, gating=gating, note=note)


def targets_for(
    protocol: str | None = None,
    family: str = "bluepyopt",
    informational: Mapping[str, str] | None = None,
) -> list[Target]:
    """The targets (of one protocol, or all) that judge a cell of `family`."""
    return [
        resolve(t, family, informational)
        for t in TARGETS
        if (protocol is None or t.protocol == protocol) and family in t.families
    ]


GATING_TARGETS = tuple(t for t in targets_for(None, "bluepyopt") if t.gating)
