"""Staleness helpers of the Dagster layer: data versions of the files assets are built from.

`params_file` (defined in the params domain) is observed by the sha256 of each file's bytes;
`cell_model_files` (defined here) is observed, per param set, by one digest over the cell
components that param set uses: the .mod files, the biophysics JSON and the morphology.
Making `compiled_mechanisms` and `segments_table` depend on `cell_model_files` lets the UI flag
exactly the partitions whose cell model changed. The lineage sensor reports both observations
whenever a file changes, so no one has to click "Observe".
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg

from l5assets.lineage.manifest import (
    MANIFEST_NAME,
    file_record,
    manifest_summary,
    mechanism_hashes,
    read_manifest,
    resolve_morphology,
)
from l5assets.params import ParamsError, ParamSet, list_param_sets, load_param_set
from l5assets.storage import file_sha256

from ..partitions import PARAM_SET_DIM, param_set_partitions
from ..resources import CellModelResource, StorageResource

PARAMS_ASSET = "params_file"
CELL_FILES_ASSET = "cell_model_files"


def params_data_version(path: Path) -> str:
    """Data version of one params file: sha256 of its bytes (as the params_file asset)."""
    return file_sha256(path)


def cell_model_version(params: ParamSet, mod_dir: Path | None = None) -> str:
    """One digest over the cell components a param set uses: mechanisms, biophysics, morphology.

    Whatever changes in any of them changes the digest; the parts are in each manifest.
    """
    from l5assets import paths

    mech = mechanism_hashes(mod_dir)
    bio = file_record(paths.cells_dir() / f"{params.biophysics}.json")
    morph = resolve_morphology(params)
    morph_sha = file_record(morph).get("sha256") if morph else None
    text = f"mechanisms={mech['sha256']}\nbiophysics={bio.get('sha256')}\nmorphology={morph_sha}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def current_versions(
    storage: StorageResource, cell_model: CellModelResource, names: list[str]
) -> dict[str, tuple[str, str | None]]:
    """param set -> (params data version, cell model version or None if the params are
    invalid), for the names whose file exists."""
    out: dict[str, tuple[str, str | None]] = {}
    on_disk = set(list_param_sets(storage.params_path()))
    for name in names:
        if name not in on_disk:
            continue
        path = storage.params_file(name)
        try:
            cell = cell_model_version(load_param_set(path), cell_model.mod_path())
        except ParamsError:
            cell = None
        out[name] = (params_data_version(path), cell)
    return out


@dg.observable_source_asset(
    key=CELL_FILES_ASSET,
    partitions_def=param_set_partitions,
    group_name="params",
    description=(
        "The cell-model files a param set uses (NMODL mechanisms, biophysics JSON, morphology), "
        "observed by one content digest per param set: editing any of them marks exactly the "
        "param sets that use it stale."
    ),
)
def cell_model_files(
    context: dg.AssetExecutionContext, storage: StorageResource, cell_model: CellModelResource
) -> dg.DataVersionsByPartition:
    """Digest of the cell components of every registered param set with a valid file."""
    registered = list(context.instance.get_dynamic_partitions(PARAM_SET_DIM))
    versions = current_versions(storage, cell_model, registered)
    return dg.DataVersionsByPartition(
        {name: dg.DataVersion(cell) for name, (_, cell) in versions.items() if cell is not None}
    )


def manifest_metadata(manifest_path: Path) -> dict[str, Any]:
    """Dagster metadata of a manifest: its path, key facts and the whole manifest as JSON."""
    m = read_manifest(Path(manifest_path))
    meta: dict[str, Any] = {
        "manifest": dg.MetadataValue.path(str(manifest_path)),
        "manifest_json": dg.MetadataValue.json(m),
    }
    for k, v in manifest_summary(m).items():
        if v is not None:
            meta[f"lineage_{k}"] = v
    return meta


def manifest_path(storage: StorageResource, asset: str, param_set: str, seed: int | None) -> Path:
    """Where an asset partition's manifest lives."""
    return storage.partition_dir(asset, param_set, seed) / MANIFEST_NAME


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
