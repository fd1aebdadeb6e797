"""The model-component observable sources (group "params"): data versions of the files the
assets are built from.

Four observable sources, all partitioned by param set, each the input of exactly the assets
that read it (`l5assets.graph`: a change marks exactly those stale in the UI, and `status`
uses the same readers):
  params_file           sha256 of the params file (params domain)      -> every asset but
                                                                          compiled_mechanisms
  mechanism_files       compile-cache hash of the .mod folder          -> compiled_mechanisms
  cell_model_files      digest of the biophysics JSON + morphology     -> segments_table,
                                                                          simulation_outputs
  synaptic_model_files  digest of the synapse dynamics JSON files      -> network,
                                                                          simulation_outputs
The lineage sensor reports new versions whenever a file changes, so no one has to click
"Observe".
"""

from __future__ import annotations

import hashlib
from typing import Any

import dagster as dg

from l5assets import graph as G
from l5assets.lineage.manifest import cell_file_records, mechanism_hashes, synaptic_model_hashes
from l5assets.params import ParamsError, list_param_sets, load_param_set
from l5assets.storage import file_sha256

from ..partitions import PARAM_SET_DIM, param_set_partitions
from ..resources import CellModelResource, StorageResource

# The sources the sensor observes, in the order of `current_versions`' values.
SOURCE_ASSETS = G.SOURCE_ASSETS


def cell_files_version(records: dict[str, dict[str, Any]]) -> str:
    """One digest over the biophysics and morphology hashes (`cell_file_records`)."""
    text = "".join(f"{k}={records[k].get('sha256')}\n" for k in ("biophysics", "morphology"))
    return hashlib.sha256(text.encode()).hexdigest()


def current_versions(
    storage: StorageResource, cell_model: CellModelResource, names: list[str]
) -> dict[str, list[str | None]]:
    """param set -> data versions of SOURCE_ASSETS now (None where there is none: no .mod
    files, no synaptic models, or params too invalid to know their cell), for the names whose
    params file exists."""
    mech = mechanism_hashes(cell_model.mod_path())["sha256"]
    syn = synaptic_model_hashes()["sha256"]
    out: dict[str, list[str | None]] = {}
    on_disk = set(list_param_sets(storage.params_path()))
    for name in names:
        if name not in on_disk:
            continue
        path = storage.params_file(name)
        try:
            cell = cell_files_version(cell_file_records(load_param_set(path)))
        except ParamsError:
            cell = None
        out[name] = [file_sha256(path), mech, cell, syn]
    return out


def _observe(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    cell_model: CellModelResource,
    asset: str,
) -> dg.DataVersionsByPartition:
    """Data versions of one source for every registered param set whose params file exists."""
    registered = list(context.instance.get_dynamic_partitions(PARAM_SET_DIM))
    i = SOURCE_ASSETS.index(asset)
    versions = current_versions(storage, cell_model, registered)
    return dg.DataVersionsByPartition(
        {name: dg.DataVersion(v[i]) for name, v in versions.items() if v[i] is not None}
    )


def _source(key: str, description: str) -> dg.AssetsDefinition:
    """An observable source, partitioned by param set, whose data versions are the
    `current_versions` column of `key`."""

    @dg.observable_source_asset(
        key=key,
        partitions_def=param_set_partitions,
        group_name=G.node(key).group,
        description=description,
    )
    def _source_files(
        context: dg.AssetExecutionContext,
        storage: StorageResource,
        cell_model: CellModelResource,
    ) -> dg.DataVersionsByPartition:
        return _observe(context, storage, cell_model, key)

    return _source_files


mechanism_files = _source(
    G.MECHANISM_FILES,
    "The NMODL folder (the `cell_model` resource's mod_dir), observed per param set by the "
    "compile-cache hash of its .mod files: editing one marks compiled_mechanisms stale.",
)
cell_model_files = _source(
    G.CELL_MODEL_FILES,
    "The cell files a param set uses (biophysics JSON, morphology), observed by one digest "
    "per param set: editing one marks exactly the param sets that use it stale "
    "(segments_table, simulation_outputs).",
)
synaptic_model_files = _source(
    G.SYNAPTIC_MODEL_FILES,
    "The BMTK synapse dynamics files (biophys_components/synaptic_models/*.json), observed "
    "by one digest: editing one marks network and simulation_outputs stale.",
)

SOURCES = (mechanism_files, cell_model_files, synaptic_model_files)
