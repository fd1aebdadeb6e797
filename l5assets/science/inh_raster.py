"""Inhibitory input spike rasters, PV+ and SOM+ (SPEC section 6).

Without rhythm, all cells of a population share one profile: the excitatory population rate in
1-ms bins over [0, stop), lagged circularly by `inh_shift` ms (inhibition follows excitation),
min-max normalised + 0.5. Each cell's rate = profile * r, r ~ truncated normal(m, s) on
[0, 100] Hz. The reference always lags by 4 ms whatever its inh_shift says; we honour the
parameter. The profile spans all `stop` ms (the reference's histogram has one bin fewer).

With rhythm (f, mod): per cell, offset = its drawn rate, A = offset / (1/mod - 1),
rate(t) = A sin(2 pi f t) + offset at t = 0, 1, 2, ... ms (in s), clipped at 0; the excitatory
profile is not used (as in the reference).

Spikes as in `exc_raster`: at most one per 1-ms bin, Bernoulli with p = 1 - exp(-rate/1000),
at the bin's integer ms, drawn by thinning; inhibitory trains run over [0, stop) like the
reference.

Random draws, in this fixed order, from the generator passed in (stage
"inh_raster_proximal" or "inh_raster_distal"): (1) the n_cells mean rates (scipy
`truncnorm.rvs(random_state=rng)`), (2) the candidate bins' geometric gaps and (3) one uniform
per candidate (`exc_raster.thinned_spikes`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import truncnorm

from l5assets.params import InhRates, ParamSet
from l5assets.science.exc_raster import n_bins, thinned_spikes
from l5assets.science.noise import minmax_plus_half
from l5assets.science.spikes import SpikeTrains

RATE_MIN_HZ = 0.0
RATE_MAX_HZ = 100.0


def inh_profile(exc: SpikeTrains, stop_ms: int, shift_ms: int) -> np.ndarray:
    """Shared inhibitory rate profile (length stop_ms, values in [0.5, 1.5]).

    Excitatory spike counts in bins [k, k+1) ms for k in 0..stop_ms-1 (spikes outside are
    ignored), rolled forward by shift_ms (bin k gets the count of bin k - shift_ms, wrapping
    around), min-max normalised + 0.5. A flat count (e.g. no spikes) gives 1.0 everywhere.
    """
    stop_ms = int(stop_ms)
    if stop_ms < 1:
        raise ValueError(f"inh_profile: stop_ms must be >= 1, got {stop_ms}")
    if not 0 <= int(shift_ms) < stop_ms:
        raise ValueError(f"inh_profile: shift_ms must be in [0, {stop_ms}), got {shift_ms}")
    b = np.floor(exc.timestamps)
    b = b[(b >= 0) & (b < stop_ms)].astype(np.int64)
    counts = np.bincount(b, minlength=stop_ms).astype(np.float64)
    return minmax_plus_half(np.roll(counts, int(shift_ms)))[0]


def draw_inh_rates(n_cells: int, rates: InhRates, rng: np.random.Generator) -> np.ndarray:
    """Per-cell mean rates (Hz): truncated normal(m, s) on [0, 100]."""
    if n_cells == 0:
        return np.zeros(0)
    a = (RATE_MIN_HZ - rates.m) / rates.s
    b = (RATE_MAX_HZ - rates.m) / rates.s
    return np.asarray(
        truncnorm.rvs(a, b, loc=rates.m, scale=rates.s, size=n_cells, random_state=rng),
        dtype=np.float64,
    ).reshape(n_cells)


def rhythm_amplitude(offsets: np.ndarray, mod: float) -> np.ndarray:
    """Per-cell amplitude A = offset / (1/mod - 1) of the rhythmic rates."""
    if not 0 < mod < 1:
        raise ValueError(f"rhythmic_rates: mod must be in (0, 1), got {mod}")
    return np.asarray(offsets, dtype=np.float64) / (1.0 / mod - 1.0)


def rhythmic_rates(offsets: np.ndarray, f_hz: float, mod: float, nb: int) -> np.ndarray:
    """(n_cells, nb) rates A sin(2 pi f t) + offset, A = offset / (1/mod - 1), clipped at 0."""
    amp = rhythm_amplitude(offsets, mod)
    t = np.arange(nb) / 1000.0
    out = amp[:, None] * np.sin(2 * np.pi * f_hz * t)[None, :] + offsets[:, None]
    return np.maximum(out, 0.0, out=out)


def inh_raster(
    n_cells: int,
    rates: InhRates,
    profile: np.ndarray | None,
    stop_s: float,
    rng: np.random.Generator,
) -> SpikeTrains:
    """Spike raster of one inhibitory population (node ids 0..n_cells-1), sorted by time.

    `profile` (from `inh_profile`, length round(stop_s*1000)) is required unless
    `rates.rhythm` is set, in which case it is ignored.
    """
    if n_cells < 0:
        raise ValueError(f"inh_raster: n_cells must be >= 0, got {n_cells}")
    nb = n_bins(0.0, stop_s)
    prof = np.ones(nb)
    if rates.rhythm is None:
        if profile is None:
            raise ValueError("inh_raster: a profile is required without rhythmicity")
        prof = np.asarray(profile, dtype=np.float64)
        if prof.shape != (nb,):
            raise ValueError(f"inh_raster: profile must have shape ({nb},), got {prof.shape}")
    mean = draw_inh_rates(n_cells, rates, rng)
    if n_cells == 0 or nb == 0:
        return SpikeTrains.empty()
    rhythm = rates.rhythm
    if rhythm is not None:
        amp = rhythm_amplitude(mean, rhythm.mod)
        wave = np.sin(2 * np.pi * rhythm.f * (np.arange(nb) / 1000.0))  # as rhythmic_rates
        row_max = amp + mean  # A sin + offset never exceeds A + offset

        def rate_at(rows: np.ndarray, bins: np.ndarray) -> np.ndarray:
            return np.maximum(amp[rows] * wave[bins] + mean[rows], 0.0)
    else:
        row_max = mean * max(float(prof.max()), 0.0)

        def rate_at(rows: np.ndarray, bins: np.ndarray) -> np.ndarray:
            return np.maximum(mean[rows] * prof[bins], 0.0)

    return thinned_spikes(row_max, rate_at, nb, rng).sorted_by_time()


def inh_rasters(
    exc: SpikeTrains,
    params: ParamSet,
    rng_proximal: np.random.Generator,
    rng_distal: np.random.Generator,
) -> tuple[SpikeTrains, SpikeTrains]:
    """Both inhibitory rasters of a param set: (PV+ `prox_inh_stim`, SOM+ `dist_inh_stim`).

    PV+ node ids: the soma cells first, then the proximal-dendrite cells; SOM+: basal first,
    then apical (the populations' node order). The shared profile is computed once from `exc`
    (no draws); each population draws only from its own generator (stages
    "inh_raster_proximal" and "inh_raster_distal").
    """
    stop_ms = n_bins(0.0, params.stop)
    needs_profile = params.proximal.rhythm is None or params.distal.rhythm is None
    profile = inh_profile(exc, stop_ms, params.inh_shift) if needs_profile else None
    c = params.counts
    pv = inh_raster(c.pv_total, params.proximal, profile, params.stop, rng_proximal)
    som = inh_raster(c.som_total, params.distal, profile, params.stop, rng_distal)
    return pv, som
