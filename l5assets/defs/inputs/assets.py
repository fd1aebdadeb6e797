"""`functional_groups`, `exc_raster`, `inh_rasters`: where the excitatory synapses go and the
input spike trains of every virtual cell."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from l5assets.network.build import DIST_POP, EXC_POP, PROX_POP
from l5assets.rng import stage_rng
from l5assets.storage import atomic_dir

from ..common import asset_result, upstream_file
from ..partitions import PARAMS_DEP, by_param_set, partition_of, run_partitions
from ..resources import StorageResource

SYNAPSES_FILE = "synapses.parquet"
GROUPS_FILE = "groups.parquet"
CLUSTERS_FILE = "clusters.parquet"
EXC_SPIKES = f"{EXC_POP}_spikes.h5"
PROX_SPIKES = f"{PROX_POP}_spikes.h5"
DIST_SPIKES = f"{DIST_POP}_spikes.h5"


@dg.asset(
    key="functional_groups",
    partitions_def=run_partitions,
    group_name="inputs",
    kinds={"parquet", "numpy"},
    code_version="1",
    deps=[PARAMS_DEP, dg.AssetDep("segments_table", partition_mapping=by_param_set)],
    description=(
        "Excitatory functional groups and clusters (SPEC 4): `synapses.parquet`, one row per "
        "excitatory synapse (node_id, group, cluster, region, bmtk_id, x, distance, coords), and "
        "`groups.parquet`, one row per group (centre, first_node_id, n_cells, n_clusters), "
        "`clusters.parquet`, one row per cluster."
    ),
)
def functional_groups(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    from l5assets.science.functional_groups import build_functional_groups

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    seg_path = upstream_file(storage, "segments_table", param_set, None, "segments.parquet")
    segments = pd.read_parquet(seg_path)
    fg = build_functional_groups(segments, params, stage_rng(seed, "functional_groups"))
    out = storage.partition_dir("functional_groups", param_set, seed)
    with atomic_dir(out) as tmp:
        fg.synapses.to_parquet(tmp / SYNAPSES_FILE, index=False)
        fg.groups.to_parquet(tmp / GROUPS_FILE, index=False)
        fg.clusters.to_parquet(tmp / CLUSTERS_FILE, index=False)
        syn, groups = fg.synapses, fg.groups
        return asset_result(
            context,
            asset="functional_groups",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files={"synapses": out / SYNAPSES_FILE, "groups": out / GROUPS_FILE,
                   "clusters": out / CLUSTERS_FILE},
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
            inputs={"segments_table": seg_path},
            params_file=storage.params_file(param_set),
        )


def load_functional_groups(storage: StorageResource, param_set: str, seed: int):
    """The FunctionalGroups of a partition, read back from its Parquet files, and the paths
    read, by name (to record as inputs)."""
    from l5assets.science.functional_groups import FunctionalGroups

    syn = upstream_file(storage, "functional_groups", param_set, seed, SYNAPSES_FILE)
    grp = upstream_file(storage, "functional_groups", param_set, seed, GROUPS_FILE)
    cl = upstream_file(storage, "functional_groups", param_set, seed, CLUSTERS_FILE)
    fg = FunctionalGroups(
        synapses=pd.read_parquet(syn), groups=pd.read_parquet(grp), clusters=pd.read_parquet(cl)
    )
    return fg, {"functional_groups_synapses": syn, "functional_groups_groups": grp,
                "functional_groups_clusters": cl}


def _rate_hz(n_spikes: int, n_cells: int, duration_s: float) -> float:
    return float(n_spikes / n_cells / duration_s) if n_cells and duration_s > 0 else 0.0


@dg.asset(
    key="exc_raster",
    partitions_def=run_partitions,
    group_name="inputs",
    kinds={"hdf5", "numpy"},
    code_version="1",
    deps=[PARAMS_DEP, "functional_groups"],
    description=(
        "Excitatory input spike trains (SPEC 6): one 1/f-noise rate trace per functional group, "
        "scaled per cell by a Levy-stable draw, Poisson per 1-ms bin; SONATA spike file of "
        f"population `{EXC_POP}`."
    ),
)
def exc_raster(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    from l5assets.science.exc_raster import exc_raster as make_exc_raster
    from l5assets.science.spikes import write_sonata_spikes

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    grp = upstream_file(storage, "functional_groups", param_set, seed, GROUPS_FILE)
    groups = pd.read_parquet(grp)
    trains = make_exc_raster(groups, params, stage_rng(seed, "exc_raster"))
    out = storage.partition_dir("exc_raster", param_set, seed)
    with atomic_dir(out) as tmp:
        write_sonata_spikes(tmp / EXC_SPIKES, EXC_POP, trains)
        n_cells = int(groups["n_cells"].sum())
        return asset_result(
            context,
            asset="exc_raster",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files={"spikes": out / EXC_SPIKES},
            counts={"exc_cells": n_cells, "exc_spikes": len(trains),
                    "active_cells": int(np.unique(trains.node_ids).size)},
            inputs={"functional_groups": grp},
            extra={"population": EXC_POP,
                   "mean_rate_hz": _rate_hz(len(trains), n_cells, params.stop - params.start)},
            params_file=storage.params_file(param_set),
        )


@dg.asset(
    key="inh_rasters",
    partitions_def=run_partitions,
    group_name="inputs",
    kinds={"hdf5", "numpy"},
    code_version="1",
    deps=[PARAMS_DEP, "exc_raster"],
    description=(
        "Inhibitory input spike trains (SPEC 6): PV+ (proximal: soma then proximal dendrites, "
        f"population `{PROX_POP}`) and SOM+ (distal: basal then apical, population "
        f"`{DIST_POP}`), both following the excitatory population rate lagged by inh_shift ms "
        "(or a sinusoidal rhythm when the param set gives one)."
    ),
)
def inh_rasters(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    from l5assets.science.inh_raster import inh_profile, inh_raster
    from l5assets.science.spikes import read_sonata_spikes, write_sonata_spikes

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    exc_path = upstream_file(storage, "exc_raster", param_set, seed, EXC_SPIKES)
    exc = read_sonata_spikes(exc_path)[EXC_POP]
    profile = inh_profile(exc, int(round(params.stop * 1000.0)), params.inh_shift)
    c = params.counts
    prox = inh_raster(c.pv_total, params.proximal, profile, params.stop,
                      stage_rng(seed, "inh_raster_proximal"))
    dist = inh_raster(c.som_total, params.distal, profile, params.stop,
                      stage_rng(seed, "inh_raster_distal"))
    out = storage.partition_dir("inh_rasters", param_set, seed)
    with atomic_dir(out) as tmp:
        write_sonata_spikes(tmp / PROX_SPIKES, PROX_POP, prox)
        write_sonata_spikes(tmp / DIST_SPIKES, DIST_POP, dist)
        duration = params.stop
        return asset_result(
            context,
            asset="inh_rasters",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files={"pv_spikes": out / PROX_SPIKES, "som_spikes": out / DIST_SPIKES},
            counts={"pv_cells": c.pv_total, "som_cells": c.som_total,
                    "pv_spikes": len(prox), "som_spikes": len(dist)},
            inputs={"exc_raster": exc_path},
            extra={"pv_mean_rate_hz": _rate_hz(len(prox), c.pv_total, duration),
                   "som_mean_rate_hz": _rate_hz(len(dist), c.som_total, duration)},
            params_file=storage.params_file(param_set),
        )


def raster_files(storage: StorageResource, param_set: str, seed: int) -> dict[str, Path]:
    """The three input spike files of a partition, by population."""
    return {
        EXC_POP: upstream_file(storage, "exc_raster", param_set, seed, EXC_SPIKES),
        PROX_POP: upstream_file(storage, "inh_rasters", param_set, seed, PROX_SPIKES),
        DIST_POP: upstream_file(storage, "inh_rasters", param_set, seed, DIST_SPIKES),
    }
