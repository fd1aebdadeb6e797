"""Feature extraction from protocol traces (eFEL and the dendritic Ca2+ spike; no NEURON).

Dendritic Ca2+ spike (our measurable criterion): at the Ca2+ recording site (620 um on the trunk)
the dendritic event after the stimulus peaks above ``CA_SPIKE_MIN_PEAK`` mV and stays above half
its amplitude (over the pre-stimulus base) for a contiguous ``CA_SPIKE_MIN_WIDTH`` ms or more.
A back-propagating AP is a few ms wide at half amplitude there; a Ca2+ spike plateau is tens of
ms wide (Hay 2011: 37 ms at -55 mV). Hay's own width at -55 mV is reported too, but it cannot
be the criterion on every cell: the passive tail of a bAP in a dendrite with cm = 2 uF/cm2
(BluePyOpt's L5PC) stays above -55 mV for ~16 ms with no Ca2+ current at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from l5assets.cell.validation.protocols import (
    FI_DURATION,
    PROTOCOLS,
    REF_FI_THRESHOLD,
    REF_FI_WINDOW,
    ap_windows,
)
from l5assets.cell.validation.traces import ProtocolTraces

SOMA_THRESHOLD = -20.0  # mV, BluePyOpt's somatic spike threshold
DEND_THRESHOLD = -55.0  # mV, BluePyOpt's dendritic threshold and Hay's Ca2+ spike level
CA_SPIKE_MIN_WIDTH = 15.0  # ms above DEND_THRESHOLD, contiguous
CA_SPIKE_MIN_PEAK = -30.0  # mV


def _efel(
    t: np.ndarray,
    v: np.ndarray,
    window: tuple[float, float],
    names: Sequence[str],
    threshold: float,
) -> dict[str, np.ndarray | None]:
    import efel

    efel.reset()
    efel.set_setting("Threshold", float(threshold))
    trace = {"T": t, "V": v, "stim_start": [float(window[0])], "stim_end": [float(window[1])]}
    out = efel.get_feature_values([trace], list(names), raise_warnings=False)[0]
    efel.reset()
    return {k: (None if val is None else np.asarray(val, dtype=float)) for k, val in out.items()}


def _first(arr: np.ndarray | None) -> float | None:
    return None if arr is None or len(arr) == 0 else float(arr[0])


def _mean(arr: np.ndarray | None) -> float | None:
    return None if arr is None or len(arr) == 0 else float(np.mean(arr))


def spike_count(
    t: np.ndarray, v: np.ndarray, window: tuple[float, float], threshold: float = SOMA_THRESHOLD
) -> int:
    """Number of APs in the stimulus window (eFEL spike_count_stimint)."""
    val = _first(_efel(t, v, window, ["spike_count_stimint"], threshold)["spike_count_stimint"])
    return int(val or 0)


def _longest_run(mask: np.ndarray) -> int:
    """Length (samples) of the longest run of True."""
    if not mask.any():
        return 0
    padded = np.concatenate(([False], mask, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max())


def ca_spike(t: np.ndarray, v_dend: np.ndarray, after: float) -> dict[str, float | bool]:
    """Dendritic Ca2+ spike measures after time `after` (the stimulus onset).

    peak: max dendritic V (mV); width: Hay's Ca2+ spike width, the longest contiguous time above
    -55 mV (ms); half_width: longest contiguous time above half the event's amplitude over the
    pre-stimulus base (ms). The criterion uses the half width: a back-propagating AP, even
    with the slow passive tail of a high-capacitance dendrite, is a few ms wide at half
    amplitude, a Ca2+ plateau tens of ms.
    """
    dt = float(t[1] - t[0])
    pre = (t >= after - 20.0) & (t < after)
    base = float(v_dend[pre].mean()) if pre.any() else float(v_dend[0])
    vv = v_dend[t >= after]
    peak = float(vv.max()) if vv.size else float("nan")
    half = base + 0.5 * (peak - base)
    width = _longest_run(vv > DEND_THRESHOLD) * dt
    half_width = _longest_run(vv > half) * dt
    present = bool(half_width >= CA_SPIKE_MIN_WIDTH and peak >= CA_SPIKE_MIN_PEAK)
    return {
        "peak": peak,
        "base": base,
        "width": width,
        "half_width": half_width,
        "present": present,
    }


def ca_spike_events(t: np.ndarray, v_dend: np.ndarray, after: float = 0.0) -> dict[str, Any]:
    """Dendritic Ca2+ spikes in a continuous trace (the simulation's hot-zone recording), by
    the validation's criterion: an event peaks above CA_SPIKE_MIN_PEAK and stays above half
    its amplitude over the base for >= CA_SPIKE_MIN_WIDTH ms. The base is the trace's median
    after `after` ms (its resting level under the drive); an event is one contiguous episode
    above -30 mV, judged around its peak. Returns count, times (ms, of the peaks), widths."""
    t = np.asarray(t, dtype=float)
    v = np.asarray(v_dend, dtype=float)
    keep = t >= after
    t, v = t[keep], v[keep]
    if t.size < 2:
        return {"count": 0, "times_ms": [], "half_widths_ms": [], "base_mv": None}
    dt = float(t[1] - t[0])
    base = float(np.median(v))
    above = np.concatenate(([False], v > CA_SPIKE_MIN_PEAK, [False]))
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    times, widths = [], []
    last_end = -1
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if a <= last_end:  # inside the previous event's half-amplitude episode
            continue
        k = a + int(np.argmax(v[a:b]))
        half = base + 0.5 * (v[k] - base)
        lo = k
        while lo > 0 and v[lo - 1] > half:
            lo -= 1
        hi = k
        while hi < v.size - 1 and v[hi + 1] > half:
            hi += 1
        last_end = hi
        width = (hi - lo + 1) * dt
        if width >= CA_SPIKE_MIN_WIDTH:
            times.append(float(t[k]))
            widths.append(float(width))
    return {"count": len(times), "times_ms": times, "half_widths_ms": widths, "base_mv": base}


def _sweeps(tr: ProtocolTraces) -> list[Any]:
    """The protocol's sweeps that the traces hold, in their order (a subset is fine: the fit
    runs some sweeps only)."""
    by_name = {s.name: s for s in PROTOCOLS[tr.protocol].sweeps}
    return [by_name[name] for name in tr.sweeps]


def _features_fi(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    p = PROTOCOLS["fi"]
    counts = [spike_count(t, tr.v(s.name, "soma"), p.stim_window) for s in _sweeps(tr)]
    rates = [c / (FI_DURATION / 1000.0) for c in counts]
    amps = [float(s.value or 0.0) for s in _sweeps(tr)]
    firing = [a for a, c in zip(amps, counts, strict=True) if c > 0]
    monotonic = all(b >= a for a, b in zip(counts[:-1], counts[1:], strict=True))
    return {
        "fi.monotonic": 1.0 if monotonic else 0.0,
        "fi.rheobase": firing[0] if firing else None,
        "fi.curve": {"amps_nA": amps, "rates_Hz": rates, "counts": counts},
    }


def _features_steps(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    p = PROTOCOLS[tr.protocol]
    names = [
        "mean_frequency",
        "spike_count_stimint",
        "AP_height",
        "AHP_depth_abs",
        "AHP_depth_abs_slow",
        "AHP_slow_time",
        "AP_width",
        "ISI_CV",
        "adaptation_index2",
        "doublet_ISI",
        "time_to_first_spike",
    ]
    out: dict[str, Any] = {}
    for s in _sweeps(tr):
        f = _efel(t, tr.v(s.name, "soma"), p.stim_window, names, SOMA_THRESHOLD)
        pre = f"{tr.protocol}.{s.name}"
        for n in names:
            if n in ("AP_height", "AHP_depth_abs", "AP_width"):
                out[f"{pre}.{n}"] = _mean(f[n])  # BluePyOpt scores per-spike values by mean
            else:
                out[f"{pre}.{n}"] = _first(f[n])
        cnt = out[f"{pre}.spike_count_stimint"] or 0.0
        out[f"{pre}.rate_count"] = cnt / ((p.stim_window[1] - p.stim_window[0]) / 1000.0)
    return out


def _features_bap(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    p = PROTOCOLS["bap"]
    out: dict[str, Any] = {}
    soma = _efel(
        t,
        tr.v("bap", "soma"),
        p.stim_window,
        ["AP_height", "AP_width", "spike_count"],
        SOMA_THRESHOLD,
    )
    out["bap.soma.AP_height"] = _mean(soma["AP_height"])
    out["bap.soma.AP_width"] = _mean(soma["AP_width"])
    out["bap.soma.Spikecount"] = _first(soma["spike_count"])
    for site in ("dend1", "dend2"):
        v = tr.v("bap", site)
        f = _efel(
            t, v, p.stim_window, ["AP_amplitude_from_voltagebase", "voltage_base"], DEND_THRESHOLD
        )
        amp = _first(f["AP_amplitude_from_voltagebase"])
        out[f"bap.{site}.amplitude"] = amp
        # The same quantity without a threshold (peak minus pre-stimulus base), so a bAP that
        # never reaches -55 mV still shows its size in the report.
        base = float(np.mean(v[(t >= 0.9 * p.stim_window[0]) & (t < p.stim_window[0])]))
        out[f"bap.{site}.peak_minus_base"] = float(v[t >= p.stim_window[0]].max() - base)
        out[f"bap.{site}.distance_um"] = tr.site_info.get(site, {}).get("distance")
    return out


def _features_bac(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    p = PROTOCOLS["bac"]
    out: dict[str, Any] = {}
    for s in _sweeps(tr):
        pre = f"bac.{s.name}"
        out[f"{pre}.spikecount"] = float(spike_count(t, tr.v(s.name, "soma"), p.stim_window))
        ca = ca_spike(t, tr.v(s.name, "dend"), p.stim_window[0])
        out[f"{pre}.ca_spike"] = 1.0 if ca["present"] else 0.0
        # Hay's Ca2+ spike height and width exist only if there is a Ca2+ spike
        out[f"{pre}.caSpike_height"] = ca["peak"] if ca["present"] else None
        out[f"{pre}.caSpike_width"] = ca["width"] if ca["present"] else None
        out[f"{pre}.dend_peak"] = ca["peak"]
        out[f"{pre}.dend_width_55"] = ca["width"]
        out[f"{pre}.ca_half_width"] = ca["half_width"]
    f = _efel(
        t,
        tr.v("paired", "soma"),
        p.stim_window,
        ["spike_count_stimint", "peak_time", "peak_voltage", "AHP_depth_abs"],
        SOMA_THRESHOLD,
    )
    out["bac.paired.BAC_spikecount"] = _first(f["spike_count_stimint"])
    # all ISIs of the burst from the peak times (eFEL's ISI_values skips the first one)
    times = f["peak_time"]
    isi = np.diff(times) if times is not None and len(times) > 1 else None
    out["bac.paired.BAC_ISI"] = _mean(isi)
    out["bac.paired.BAC_APheight"] = _mean(f["peak_voltage"])
    out["bac.paired.BAC_ahpdepth"] = _mean(f["AHP_depth_abs"])
    return out


def _features_ca_train(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    p = PROTOCOLS["ca_train"]
    out: dict[str, Any] = {}
    critical = None
    pulses_nA = tr.site_info.get("soma", {}).get("pulse_nA") or {}
    for s in _sweeps(tr):
        pre = f"ca_train.{s.name}"
        v_soma = tr.v(s.name, "soma")
        out[f"{pre}.spikecount"] = float(spike_count(t, v_soma, p.stim_window))
        up = threshold_crossings(t, v_soma, SOMA_THRESHOLD)
        # pulses that evoked their AP (within `ap_windows`): one AP per pulse means all of them
        out[f"{pre}.pulse_aps"] = float(
            sum(bool(((up >= a) & (up < b)).any()) for a, b in ap_windows(s))
        )
        if s.name in pulses_nA:
            out[f"{pre}.pulse_nA"] = [float(a) for a in pulses_nA[s.name]]
        ca = ca_spike(t, tr.v(s.name, "dend"), p.stim_window[0])
        out[f"{pre}.ca_spike"] = 1.0 if ca["present"] else 0.0
        out[f"{pre}.ca_width"] = ca["width"]
        out[f"{pre}.ca_half_width"] = ca["half_width"]
        out[f"{pre}.ca_peak"] = ca["peak"]
        if s.name != "single" and ca["present"] and critical is None:
            critical = float(s.value or 0.0)
    out["ca_train.critical_frequency"] = critical
    single = pulses_nA.get("single")
    out["ca_train.pulse_nA"] = float(single[0]) if single else None  # the single pulse's
    return out


def threshold_crossings(t: np.ndarray, v: np.ndarray, threshold: float) -> np.ndarray:
    """Times (ms) of upward crossings of `threshold` (the reference pipeline's spike detector)."""
    up = np.flatnonzero((v[:-1] < threshold) & (v[1:] >= threshold)) + 1
    return t[up]


def _features_ref_fi(tr: ProtocolTraces) -> dict[str, Any]:
    t = tr.t
    lo, hi = REF_FI_WINDOW
    amps, rates = [], []
    for s in _sweeps(tr):
        times = threshold_crossings(t, tr.v(s.name, "soma"), REF_FI_THRESHOLD)
        n = int(((times >= lo) & (times < hi)).sum())
        amps.append(float(s.value or 0.0))
        rates.append(n / ((hi - lo) / 1000.0))
    return {
        "ref_fi.curve": {"amps_nA": amps, "rates_Hz": rates},
        **{f"ref_fi.{a:.1f}nA.rate": r for a, r in zip(amps, rates, strict=True)},
    }


_EXTRACT = {
    "fi": _features_fi,
    "steps": _features_steps,
    "hay_steps": _features_steps,
    "ref_fi": _features_ref_fi,
    "bap": _features_bap,
    "bac": _features_bac,
    "ca_train": _features_ca_train,
}
