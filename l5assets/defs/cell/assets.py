"""`compiled_mechanisms` and `segments_table`: the seed-independent cell assets."""

import hashlib
import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd

from l5assets import graph as G
from l5assets.layout import MECHANISMS_RECORD, SEGMENTS_FILE
from l5assets.lineage.manifest import canonical_dumps, cell_file_records, mechanism_hashes
from l5assets.params import ParamSet
from l5assets.storage import atomic_path, atomic_write_text, file_sha256

from ..common import AssetStep, graph_asset, run_logged


@graph_asset(
    G.COMPILED_MECHANISMS,
    kinds={"neuron", "nmodl"},
    description=(
        "The project's NMODL (.mod files) compiled by nrnivmodl into a cache keyed by the content "
        "hash of the .mod files; the partition folder holds `mechanisms.json`, a record of the "
        "cache entry. Unchanged .mod files are never recompiled. The compiler flags (the "
        "cell_model resource's cflags, or L5ASSETS_MECH_CFLAGS, else -O3 -march=native "
        "-ffast-math; `none`: nrnivmodl's own) are part of the cache key."
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
        cell_model.mod_path(),
        cell_model.cache_path(),
        on_progress=step.context.log.info,
        cflags=cell_model.cflags,
    )
    record = json.dumps(compiled.as_metadata(), indent=2, sort_keys=True) + "\n"
    (step.tmp / MECHANISMS_RECORD).write_text(record)
    return step.result(
        {"record": MECHANISMS_RECORD, "library": compiled.library},
        counts={"mod_files": len(compiled.mod_files)},
        extra={
            "mod_hash": compiled.mod_hash,
            "coreneuron": compiled.coreneuron,
            "cflags": compiled.cflags or "(nrnivmodl's defaults)",
            "mod_files": ", ".join(compiled.mod_files),
        },
        # same .mod files, other flags: another library (and data version)
        digest=_digest(compiled.mod_hash, compiled.cflags),
    )


def _digest(mod_hash: str, cflags: str) -> str:
    """The build's data version: the .mod hash, with the flags' key (and CPU) if any."""
    if not cflags:
        return mod_hash
    from l5assets.cell.mechanisms import flags_key

    return hashlib.sha256(f"{mod_hash}{flags_key(cflags)}".encode()).hexdigest()


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
    key = segments_cache_key(step.params, step.mod_dir)
    cached = step.resources.cell_model.cache_path() / "segments" / f"{key}.parquet"
    digest = cached.with_suffix(".sha256")
    # a hit only if the cached table is intact (its hash written after it)
    hit = cached.is_file() and digest.is_file() and file_sha256(cached) == digest.read_text()
    if hit:  # the same cell model was tabulated before: no NEURON run
        shutil.copyfile(cached, step.tmp / SEGMENTS_FILE)
    else:
        run_logged(step.context, cmd, timeout_s=neuron.timeout_s, env=neuron.subprocess_env())
        with atomic_path(cached) as tmp:
            shutil.copyfile(step.tmp / SEGMENTS_FILE, tmp)
        atomic_write_text(digest, file_sha256(cached))
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
            "segments_cache": "hit" if hit else "miss",
            "segments_cache_key": key,
        },
    )


def segments_cache_key(params: ParamSet, mod_dir: Path | None) -> str:
    """Key of the segments-table cache: what the table depends on (the .mod files' hash, the
    biophysics and morphology contents, dL, the NEURON version, the cell-building code and
    the table's code version), not file paths."""
    from importlib.metadata import version

    cell = cell_file_records(params)
    code = hashlib.sha256()
    for f in sorted((Path(__file__).parents[2] / "cell").glob("*.py")):  # l5assets/cell/
        code.update(f.name.encode() + b"\0" + f.read_bytes())
    rec = {
        "neuron": version("neuron"),  # the wheel's version, without loading NEURON here
        "cell_code": code.hexdigest(),
        "mechanisms": mechanism_hashes(mod_dir)["sha256"],
        "biophysics": cell["biophysics"]["sha256"],
        "morphology": cell["morphology"]["sha256"],
        "dL": params.dL,
        "code_version": G.CODE_VERSIONS[G.SEGMENTS_TABLE],
    }
    return hashlib.sha256(canonical_dumps(rec).encode()).hexdigest()
