"""`compiled_mechanisms` and `segments_table`: the seed-independent cell assets."""

import json

import dagster as dg
import pandas as pd

from l5assets import graph as G
from l5assets.layout import MECHANISMS_RECORD, SEGMENTS_FILE

from ..common import AssetStep, graph_asset, run_logged


@graph_asset(
    G.COMPILED_MECHANISMS,
    kinds={"neuron", "nmodl"},
    description=(
        "The project's NMODL (.mod files) compiled by nrnivmodl into a cache keyed by the content "
        "hash of the .mod files; the partition folder holds `mechanisms.json`, a record of the "
        "cache entry. Unchanged .mod files are never recompiled."
    ),
    resources={"cell_model"},
)
def compiled_mechanisms(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.cell.mechanisms import compile_mechanisms
    from l5assets.storage import clean_cache_temps

    cell_model = step.resources.cell_model
    # work folders of compiles that were killed (their cache lock is free) go first
    removed = clean_cache_temps(cell_model.cache_path())
    if removed:
        step.context.log.warning(
            "removed compile work folders left by a killed compile: "
            + ", ".join(p.name for p in removed)
        )
    compiled = compile_mechanisms(
        cell_model.mod_path(), cell_model.cache_path(), on_progress=step.context.log.info
    )
    record = json.dumps(compiled.as_metadata(), indent=2, sort_keys=True) + "\n"
    (step.tmp / MECHANISMS_RECORD).write_text(record)
    return step.result(
        {"record": MECHANISMS_RECORD, "library": compiled.library},
        counts={"mod_files": len(compiled.mod_files)},
        extra={
            "mod_hash": compiled.mod_hash,
            "coreneuron": compiled.coreneuron,
            "mod_files": ", ".join(compiled.mod_files),
        },
        digest=compiled.mod_hash,
    )


@graph_asset(
    G.SEGMENTS_TABLE,
    kinds={"neuron", "parquet"},
    description=(
        "One row per segment of the cell (biophysics, morphology and dL from the param set), "
        "built by NEURON in a subprocess: bmtk_id, x, type, sec_index, distance, coord_x/y/z, "
        "diam, length."
    ),
    resources={"cell_model", "neuron"},
)
def segments_table(step: AssetStep) -> dg.MaterializeResult:
    neuron = step.resources.neuron
    params = step.params
    mech = step.read(G.COMPILED_MECHANISMS, MECHANISMS_RECORD)
    step.inputs["params_file"] = step.storage.params_file(step.param_set)
    cmd = [
        neuron.python_executable(),
        "-m",
        "l5assets.cell.segments_worker",
        str(mech),
        params.biophysics,
        params.morphology or "-",
        repr(params.dL),
        str(step.tmp / SEGMENTS_FILE),
    ]
    run_logged(step.context, cmd, timeout_s=neuron.timeout_s, env=neuron.subprocess_env())
    table = pd.read_parquet(step.tmp / SEGMENTS_FILE)
    by_type = table["type"].value_counts().to_dict()
    return step.result(
        {"segments": SEGMENTS_FILE},
        counts={
            "segments": len(table),
            **{f"{k}_segments": int(v) for k, v in by_type.items()},
        },
        extra={
            "biophysics": params.biophysics,
            "max_distance_um": float(table["distance"].max()),
        },
    )
