"""Staleness helpers of the Dagster layer: data versions of the files assets are built from.

Four observable sources, all partitioned by param set, each the input of exactly the assets
that read it (so a change marks exactly those stale in the UI; `l5assets.lineage.status` uses
the same edges, PARAMS_READERS / COMPONENT_READERS):
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
from pathlib import Path
from typing import Any

import dagster as dg

from l5assets.lineage.manifest import (
    cell_file_records,
    manifest_summary,
    mechanism_hashes,
    read_manifest,
    synaptic_model_hashes,
)
from l5assets.params import ParamsError, list_param_sets, load_param_set
from l5assets.storage import file_sha256

from ..partitions import PARAM_SET_DIM, param_set_partitions
from ..resources import CellModelResource, StorageResource

PARAMS_ASSET = "params_file"
MECHANISMS_ASSET = "mechanism_files"
CELL_FILES_ASSET = "cell_model_files"
SYNAPTIC_MODELS_ASSET = "synaptic_model_files"
# The sources the sensor observes, in the order of `current_versions`' values.
SOURCE_ASSETS = (PARAMS_ASSET, MECHANISMS_ASSET, CELL_FILES_ASSET, SYNAPTIC_MODELS_ASSET)


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
        key=key, partitions_def=param_set_partitions, group_name="params",
        description=description,
    )
    def _source_files(
        context: dg.AssetExecutionContext, storage: StorageResource,
        cell_model: CellModelResource,
    ) -> dg.DataVersionsByPartition:
        return _observe(context, storage, cell_model, key)

    return _source_files


mechanism_files = _source(
    MECHANISMS_ASSET,
    "The NMODL folder (the `cell_model` resource's mod_dir), observed per param set by the "
    "compile-cache hash of its .mod files: editing one marks compiled_mechanisms stale.",
)
cell_model_files = _source(
    CELL_FILES_ASSET,
    "The cell files a param set uses (biophysics JSON, morphology), observed by one digest "
    "per param set: editing one marks exactly the param sets that use it stale "
    "(segments_table, simulation_outputs).",
)
synaptic_model_files = _source(
    SYNAPTIC_MODELS_ASSET,
    "The BMTK synapse dynamics files (biophys_components/synaptic_models/*.json), observed "
    "by one digest: editing one marks network and simulation_outputs stale.",
)

SOURCES = (mechanism_files, cell_model_files, synaptic_model_files)


def manifest_metadata(manifest_path: Path, final_path: Path | None = None) -> dict[str, Any]:
    """Dagster metadata of a manifest: its (final) path, key facts and the whole manifest as
    JSON. `manifest_path` is where it is read now (e.g. the temp folder before the swap)."""
    m = read_manifest(Path(manifest_path))
    meta: dict[str, Any] = {
        "path_manifest": dg.MetadataValue.path(str(final_path or manifest_path)),
        "manifest_json": dg.MetadataValue.json(m),
    }
    for k, v in manifest_summary(m).items():
        if v is not None:
            meta[f"lineage_{k}"] = v
    return meta


def step_started_at(context: dg.AssetExecutionContext) -> float | None:
    """Epoch seconds at which this asset's step started (from the run's event log), to pass
    to `write_manifest(..., extra={"started_at": ...})` so the manifest records the wall time."""
    try:
        key = context.op_execution_context.get_step_execution_context().step.key
        records = context.instance.all_logs(
            context.run.run_id, of_type=dg.DagsterEventType.STEP_START
        )
    except Exception:  # noqa: BLE001 - a missing start time only leaves wall time empty
        return None
    times = [r.timestamp for r in records if r.step_key == key]
    return max(times) if times else None
