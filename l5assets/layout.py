"""Where every asset's files are, and the readers downstream assets use (no Dagster).

Outputs live under the storage root (`l5assets.storage` lays out the folders):
    <root>/<param_set>/shared/<asset>/       param-set-level assets
    <root>/<param_set>/seed-<seed>/<asset>/  param set x seed assets
    <root>/_cells/<cell>/<asset>/            cell-validation assets (partitioned by cell)
each with a `manifest.json`. The file names below are the assets' contract: an asset writes
them, downstream assets find them with the readers here (never through an IO manager).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from l5assets import graph as G
from l5assets.network.build import DIST_POP, EXC_POP, PROX_POP
from l5assets.storage import partition_dir

# compiled_mechanisms
MECHANISMS_RECORD = "mechanisms.json"
# segments_table
SEGMENTS_FILE = "segments.parquet"
# functional_groups
SYNAPSES_FILE = "synapses.parquet"
GROUPS_FILE = "groups.parquet"
CLUSTERS_FILE = "clusters.parquet"
# exc_raster, inh_rasters: one SONATA spike file per population
EXC_SPIKES = f"{EXC_POP}_spikes.h5"
PROX_SPIKES = f"{PROX_POP}_spikes.h5"
DIST_SPIKES = f"{DIST_POP}_spikes.h5"
# simulation_config, simulation_outputs, simulation_summary
CONFIG_FILE = "config.json"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"
SUMMARY_FIGURE = "summary.png"  # the run at a glance (full size; a small copy is inline)
GROUPS_FIGURE = "groups.png"  # functional groups on the morphology
RASTER_FIGURE = "raster.png"  # a sample of the input spike trains and the population rates
# nwb_export
NWB_FILE = "run.nwb"
# Outputs of the runner that hold wall times / log lines: kept, but not content-hashed.
VOLATILE_OUTPUTS = (RESULT_FILE, "log.txt")


class MissingUpstreamError(FileNotFoundError):
    """An upstream asset's file for this partition is not there: materialize it first."""


def upstream_file(root: Path, asset: str, param_set: str, seed: int | None, name: str) -> Path:
    """Path of an upstream asset's file for a partition (seed None: the param set's shared
    folder); raises MissingUpstreamError if it was never materialized."""
    path = partition_dir(root, asset, param_set, seed) / name
    if not path.exists():
        part = param_set if seed is None else f"{param_set}|{seed}"
        raise MissingUpstreamError(
            f"{path} is missing: materialize asset '{asset}' for partition '{part}' first"
        )
    return path


def mechanisms_record(root: Path, param_set: str) -> Path:
    """The compiled_mechanisms record file of a param set."""
    return upstream_file(root, G.COMPILED_MECHANISMS, param_set, None, MECHANISMS_RECORD)


def functional_groups_files(root: Path, param_set: str, seed: int) -> dict[str, Path]:
    """The three functional_groups tables of a partition, by input name."""
    return {
        f"functional_groups_{kind}": upstream_file(root, G.FUNCTIONAL_GROUPS, param_set, seed, f)
        for kind, f in (
            ("synapses", SYNAPSES_FILE),
            ("groups", GROUPS_FILE),
            ("clusters", CLUSTERS_FILE),
        )
    }


def load_functional_groups(root: Path, param_set: str, seed: int):
    """The FunctionalGroups of a partition, read back from its Parquet files, and the paths
    read, by name (to record as inputs)."""
    from l5assets.science.functional_groups import FunctionalGroups

    files = functional_groups_files(root, param_set, seed)
    fg = FunctionalGroups(
        synapses=pd.read_parquet(files["functional_groups_synapses"]),
        groups=pd.read_parquet(files["functional_groups_groups"]),
        clusters=pd.read_parquet(files["functional_groups_clusters"]),
    )
    return fg, files


def network_node_files(root: Path, param_set: str, seed: int) -> dict[str, Path]:
    """The SONATA node file of each input population of a partition's network."""
    return {
        pop: upstream_file(root, G.NETWORK, param_set, seed, f"{pop}_nodes.h5")
        for pop in (EXC_POP, PROX_POP, DIST_POP)
    }


def raster_files(root: Path, param_set: str, seed: int) -> dict[str, Path]:
    """The three input spike files of a partition, by population."""
    return {
        EXC_POP: upstream_file(root, G.EXC_RASTER, param_set, seed, EXC_SPIKES),
        PROX_POP: upstream_file(root, G.INH_RASTERS, param_set, seed, PROX_SPIKES),
        DIST_POP: upstream_file(root, G.INH_RASTERS, param_set, seed, DIST_SPIKES),
    }
