"""`functional_groups`, `exc_raster`, `inh_rasters`: where the excitatory synapses go and the
input spike trains of every virtual cell."""

import dagster as dg
import numpy as np
import pandas as pd

from l5assets import graph as G
from l5assets.layout import (
    CLUSTERS_FILE,
    DIST_SPIKES,
    EXC_SPIKES,
    GROUPS_FIGURE,
    GROUPS_FILE,
    PROX_SPIKES,
    RASTER_FIGURE,
    SEGMENTS_FILE,
    SYNAPSES_FILE,
)
from l5assets.network.build import DIST_POP, EXC_POP, PROX_POP

from ..common import AssetStep, graph_asset


@graph_asset(
    G.FUNCTIONAL_GROUPS,
    kinds={"parquet", "numpy"},
    description=(
        "Excitatory functional groups and clusters (SPEC 4): `synapses.parquet`, one row per "
        "excitatory synapse (node_id, group, cluster, region, bmtk_id, x, distance, coords), and "
        "`groups.parquet`, one row per group (centre, first_node_id, n_cells, n_clusters), "
        "`clusters.parquet`, one row per cluster."
    ),
)
def functional_groups(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.science.functional_groups import build_functional_groups

    segments = pd.read_parquet(step.read(G.SEGMENTS_TABLE, SEGMENTS_FILE))
    fg = build_functional_groups(segments, step.params, step.rng("functional_groups"))
    fg.synapses.to_parquet(step.tmp / SYNAPSES_FILE, index=False)
    fg.groups.to_parquet(step.tmp / GROUPS_FILE, index=False)
    fg.clusters.to_parquet(step.tmp / CLUSTERS_FILE, index=False)
    syn, groups = fg.synapses, fg.groups
    from l5assets.simulation.figures import groups_figure, render

    inline = render(
        groups_figure(segments, syn, groups, f"{step.param_set} seed {step.seed}"),
        step.tmp / GROUPS_FIGURE,
    )
    return step.result(
        {
            "synapses": SYNAPSES_FILE,
            "groups": GROUPS_FILE,
            "clusters": CLUSTERS_FILE,
            "plot": GROUPS_FIGURE,
        },
        figures={"plot": inline},
        counts={
            "exc_synapses": len(syn),
            "exc_cells": int(groups["n_cells"].sum()),
            "groups": len(groups),
            "clusters": len(fg.clusters),
            "basal_groups": int((groups["region"] == "basal").sum()),
            "apic_groups": int((groups["region"] == "apic").sum()),
            "basal_synapses": int((syn["region"] == "basal").sum()),
            "apic_synapses": int((syn["region"] == "apic").sum()),
        },
    )


def _raster_plot(step: AssetStep, trains: dict, name: str) -> bytes:
    """A raster sample and population rates, full size into the asset folder; inline copy."""
    from l5assets.simulation.figures import raster_figure, render

    title = f"{step.param_set} seed {step.seed}: " + ", ".join(
        f"{pop} {len(t)} spikes" for pop, t in trains.items()
    )
    return render(raster_figure(trains, step.params.stop * 1000.0, title), step.tmp / name)


def _rate_hz(n_spikes: int, n_cells: int, duration_s: float) -> float:
    return float(n_spikes / n_cells / duration_s) if n_cells and duration_s > 0 else 0.0


@graph_asset(
    G.EXC_RASTER,
    kinds={"hdf5", "numpy"},
    description=(
        "Excitatory input spike trains (SPEC 6): one 1/f-noise rate trace per functional group, "
        "scaled per cell by a Levy-stable draw, Poisson per 1-ms bin; SONATA spike file of "
        f"population `{EXC_POP}`."
    ),
)
def exc_raster(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.science.exc_raster import exc_raster as make_exc_raster
    from l5assets.science.spikes import write_sonata_spikes

    params = step.params
    groups = pd.read_parquet(step.read(G.FUNCTIONAL_GROUPS, GROUPS_FILE))
    trains = make_exc_raster(groups, params, step.rng("exc_raster"))
    write_sonata_spikes(step.tmp / EXC_SPIKES, EXC_POP, trains)
    n_cells = int(groups["n_cells"].sum())
    inline = _raster_plot(step, {EXC_POP: trains}, RASTER_FIGURE)
    return step.result(
        {"spikes": EXC_SPIKES, "plot": RASTER_FIGURE},
        figures={"plot": inline},
        counts={
            "exc_cells": n_cells,
            "exc_spikes": len(trains),
            "active_cells": int(np.count_nonzero(trains.counts(n_cells))),
        },
        extra={
            "population": EXC_POP,
            "mean_rate_hz": _rate_hz(len(trains), n_cells, params.stop - params.start),
        },
    )


@graph_asset(
    G.INH_RASTERS,
    kinds={"hdf5", "numpy"},
    description=(
        "Inhibitory input spike trains (SPEC 6): PV+ (proximal: soma then proximal dendrites, "
        f"population `{PROX_POP}`) and SOM+ (distal: basal then apical, population "
        f"`{DIST_POP}`), both following the excitatory population rate lagged by inh_shift ms "
        "(or a sinusoidal rhythm when the param set gives one)."
    ),
)
def inh_rasters(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.science.inh_raster import inh_rasters as make_inh_rasters
    from l5assets.science.spikes import read_sonata_spikes, write_sonata_spikes

    params = step.params
    exc = read_sonata_spikes(step.read(G.EXC_RASTER, EXC_SPIKES))[EXC_POP]
    prox, dist = make_inh_rasters(
        exc, params, step.rng("inh_raster_proximal"), step.rng("inh_raster_distal")
    )
    write_sonata_spikes(step.tmp / PROX_SPIKES, PROX_POP, prox)
    write_sonata_spikes(step.tmp / DIST_SPIKES, DIST_POP, dist)
    c = params.counts
    inline = _raster_plot(step, {EXC_POP: exc, PROX_POP: prox, DIST_POP: dist}, RASTER_FIGURE)
    return step.result(
        {"pv_spikes": PROX_SPIKES, "som_spikes": DIST_SPIKES, "plot": RASTER_FIGURE},
        figures={"plot": inline},
        counts={
            "pv_cells": c.pv_total,
            "som_cells": c.som_total,
            "pv_spikes": len(prox),
            "som_spikes": len(dist),
        },
        extra={
            "pv_mean_rate_hz": _rate_hz(len(prox), c.pv_total, params.stop),
            "som_mean_rate_hz": _rate_hz(len(dist), c.som_total, params.stop),
        },
    )
