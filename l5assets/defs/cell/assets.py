"""`compiled_mechanisms` and `segments_table`: the seed-independent cell assets."""

import json
from pathlib import Path

import dagster as dg
import pandas as pd

from l5assets.storage import atomic_dir

from ..common import asset_result, run_logged, upstream_file
from ..partitions import param_set_partitions
from ..resources import CellModelResource, NeuronRuntime, StorageResource

MECHANISMS_RECORD = "mechanisms.json"
SEGMENTS_FILE = "segments.parquet"


@dg.asset(
    key="compiled_mechanisms",
    partitions_def=param_set_partitions,
    group_name="cell",
    kinds={"neuron", "nmodl"},
    code_version="1",
    deps=["mechanism_files"],  # the .mod files only: params / cell-file edits leave it fresh
    description=(
        "The project's NMODL (.mod files) compiled by nrnivmodl into a cache keyed by the content "
        "hash of the .mod files; the partition folder holds `mechanisms.json`, a record of the "
        "cache entry. Unchanged .mod files are never recompiled."
    ),
)
def compiled_mechanisms(
    context: dg.AssetExecutionContext, storage: StorageResource, cell_model: CellModelResource
) -> dg.MaterializeResult:
    from l5assets.cell.mechanisms import compile_mechanisms

    param_set = context.partition_key
    params = storage.load_params(param_set)  # validate before writing anything
    compiled = compile_mechanisms(cell_model.mod_path(), cell_model.cache_path())
    record = compiled.as_metadata()
    out = storage.partition_dir("compiled_mechanisms", param_set)
    with atomic_dir(out) as tmp:
        (tmp / MECHANISMS_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return asset_result(
            context,
            asset="compiled_mechanisms",
            params=params,
            seed=None,
            out_dir=out,
            tmp_dir=tmp,
            files={"record": out / MECHANISMS_RECORD, "library": compiled.library},
            counts={"mod_files": len(compiled.mod_files)},
            extra={"mod_hash": compiled.mod_hash, "coreneuron": compiled.coreneuron,
                   "mod_files": ", ".join(compiled.mod_files)},
            digest=compiled.mod_hash,
            params_file=storage.params_file(param_set),
            mod_dir=cell_model.mod_path(),
        )


@dg.asset(
    key="segments_table",
    partitions_def=param_set_partitions,
    group_name="cell",
    kinds={"neuron", "parquet"},
    code_version="1",
    deps=["params_file", "cell_model_files", "compiled_mechanisms"],
    description=(
        "One row per segment of the cell (biophysics, morphology and dL from the param set), "
        "built by NEURON in a subprocess: bmtk_id, x, type, sec_index, distance, coord_x/y/z, "
        "diam, length."
    ),
)
def segments_table(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    neuron: NeuronRuntime,
    cell_model: CellModelResource,
) -> dg.MaterializeResult:
    param_set = context.partition_key
    params = storage.load_params(param_set)
    mech = upstream_file(storage, "compiled_mechanisms", param_set, None, MECHANISMS_RECORD)
    out = storage.partition_dir("segments_table", param_set)
    with atomic_dir(out) as tmp:
        cmd = [
            neuron.python_executable(), "-m", "l5assets.defs.cell.segments_worker",
            str(mech), params.biophysics, params.morphology or "-", repr(params.dL),
            str(tmp / SEGMENTS_FILE),
        ]
        run_logged(context, cmd, timeout_s=neuron.timeout_s, env=neuron.subprocess_env())
        table = pd.read_parquet(tmp / SEGMENTS_FILE)
        by_type = table["type"].value_counts().to_dict()
        return asset_result(
            context,
            asset="segments_table",
            params=params,
            seed=None,
            out_dir=out,
            tmp_dir=tmp,
            files={"segments": out / SEGMENTS_FILE},
            counts={"segments": len(table),
                    **{f"{k}_segments": int(v) for k, v in by_type.items()}},
            inputs={"compiled_mechanisms": mech, "params_file": storage.params_file(param_set)},
            params_file=storage.params_file(param_set),
            mod_dir=cell_model.mod_path(),
            extra={
                "biophysics": params.biophysics,
                "max_distance_um": float(table["distance"].max()),
            },
        )


def mechanisms_record(storage: StorageResource, param_set: str) -> Path:
    """The compiled_mechanisms record file of a param set (for downstream assets)."""
    return upstream_file(storage, "compiled_mechanisms", param_set, None, MECHANISMS_RECORD)
