"""Provenance manifests: one `manifest.json` beside every output.

A manifest says exactly what produced an output: the param set (name, fully resolved values,
content hash, derived counts), the seed and every per-stage seed, the code versions of this
asset and of every upstream asset in its chain, the project's git commit, library versions,
hashes of the cell components (mechanisms, biophysics, morphology), engine settings, and the
path + sha256 of every upstream file actually read (with the upstream's own manifest, so that
`trace` can walk the chain back to the params file offline).

Everything that varies between two materializations of the same partition with the same code
and inputs (host, wall time, timestamps, run id, the absolute folder written) lives under the
single key `run` (`VOLATILE_KEYS`): two manifests of one partition compare equal once it is
removed, even when written into two storage roots. Files inside the storage tree are recorded
by their path relative to the manifest only (no absolute path), files outside it (params file,
components, the compile cache) by their absolute path; upstream-manifest digests are over
path-free content, so they too are equal.

No Dagster import here: the Dagster layer turns a manifest into metadata
(`l5assets.defs.lineage.manifest_metadata`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l5assets import paths, storage
from l5assets.params import ParamSet, param_set_path, params_hash
from l5assets.rng import all_stage_seeds

MANIFEST_NAME = "manifest.json"
SCHEMA = "l5assets.manifest/1"
# Keys whose values legitimately differ between two runs of the same partition.
VOLATILE_KEYS = ("run",)
# Keys of `extra` that say where a step ran (they differ between runs): kept under "run".
# where (and how) the step ran: volatile, not part of what identical runs share
RUN_KEYS = ("executor", "slurm_job_id", "slurm_node", "segments_cache")
# Libraries whose versions are recorded (distribution names on PyPI).
LIBRARIES = ("neuron", "bmtk", "numpy", "scipy", "dagster", "pandas", "h5py", "l5assets")
# How many folder levels above an input file to look for the upstream's manifest.
_MANIFEST_SEARCH_DEPTH = 3


# --------------------------------------------------------------------------------------------
# JSON helpers


def _jsonable(obj: Any) -> Any:
    """Plain-JSON form of values callers may pass in `extra` (numpy scalars, Paths, tuples)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()  # numpy scalar -> Python scalar
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # JSON has no NaN/inf; keep the information as text
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)


def canonical_dumps(obj: Any) -> str:
    """The manifest's on-disk text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def strip_volatile(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest without time/host/run-id fields: equal for identical re-materializations."""
    return {k: v for k, v in manifest.items() if k not in VOLATILE_KEYS}


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the non-volatile part (a reproducibility fingerprint)."""
    return hashlib.sha256(canonical_dumps(strip_volatile(manifest)).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# environment: code, libraries, components


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(paths.PROJECT_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def code_revision() -> dict[str, Any]:
    """The project's git commit (None outside a checkout or before the first commit),
    whether tracked code files differ from it, and the installed package version."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit:
        status = _git(
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "l5assets",
            "biophys_components",
            "pyproject.toml",
        )
        dirty = bool(status) if status is not None else None
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "package_version": _dist_version("l5assets"),
    }


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape the results (from package metadata: no imports)."""
    versions: dict[str, str | None] = {name: _dist_version(name) for name in LIBRARIES}
    versions["python"] = platform.python_version()
    return versions


def tree_root(out_dir: Path) -> Path:
    """The storage root of an asset folder (`<root>/<param_set>/<shared|seed-n>/<asset>`,
    `<root>/_cells/<cell>/<asset>`): files below it are recorded by relative path only."""
    d = Path(out_dir).resolve()
    return d.parents[2] if len(d.parents) > 2 else d


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def file_record(path: Path, rel_to: Path | None = None, tree: Path | None = None) -> dict[str, Any]:
    """Path plus content hash of a file or folder. The path is absolute, and also relative to
    the manifest's folder `rel_to` when given. With `tree` (the storage root), a file inside
    the tree is recorded by its relative path only and one outside it by its absolute path
    only: two identical runs into two storage roots then record the same text (the absolute
    folder of the manifest is under `run.dir`, for the fallback of a moved tree)."""
    p = Path(path).resolve()
    rec: dict[str, Any] = {"path": str(p)}
    if rel_to is not None:
        rec["relpath"] = os.path.relpath(p, Path(rel_to).resolve())
        if tree is not None:
            del rec["path" if _inside(p, Path(tree).resolve()) else "relpath"]
    if p.is_dir():
        # manifests are excluded: their `run` section differs between identical runs
        files = [
            f
            for f in p.rglob("*")
            if f.is_file() and not f.name.startswith(".") and f.name != MANIFEST_NAME
        ]
        rec.update(
            kind="dir",
            sha256=storage.files_sha256(files, base=p),
            n_files=len(files),
            bytes=sum(f.stat().st_size for f in files),
        )
    elif p.is_file():
        rec.update(kind="file", sha256=storage.file_sha256(p), bytes=p.stat().st_size)
    else:
        rec.update(kind="missing", sha256=None)
    return rec


def mechanism_hashes(mod_dir: Path | None = None) -> dict[str, Any]:
    """sha256 of every .mod file plus the combined hash used as the compile-cache key."""
    from l5assets.cell.mechanisms import mod_hash

    d = Path(mod_dir or paths.mechanisms_dir())
    files = sorted(d.glob("*.mod"))
    return {
        "dir": str(d.resolve()),
        "files": {f.name: storage.file_sha256(f) for f in files},
        # the .mod part of the compile-cache key (extra compiler flags, if any, are the
        # other part: see the compiled_mechanisms metadata); None without .mod files
        "sha256": mod_hash(d) if files else None,
    }


def synaptic_model_hashes(models_dir: Path | None = None) -> dict[str, Any]:
    """sha256 of every synapse dynamics JSON (read by the network builder and the runner),
    plus one digest over them (names and bytes)."""
    d = Path(models_dir or paths.synaptic_models_dir())
    files = sorted(d.glob("*.json"))
    return {
        "dir": str(d.resolve()),
        "files": {f.name: storage.file_sha256(f) for f in files},
        "sha256": storage.files_sha256(files, base=d) if files else None,
    }


def resolve_morphology(params: ParamSet) -> Path | None:
    """The morphology file a param set uses: its own path, else the biophysics default."""
    if params.morphology:
        return Path(params.morphology)
    from l5assets.components import packaged_morphology

    try:
        return packaged_morphology(params.biophysics)
    except Exception:  # noqa: BLE001 - a missing default is recorded as null, not fatal
        return None


def cell_file_records(params: ParamSet) -> dict[str, dict[str, Any]]:
    """File records (path, sha256) of the biophysics JSON and the morphology a param set uses.

    The one place these are hashed: manifests, `status` and the Dagster source
    `cell_model_files` all use it.
    """
    biophys = paths.cells_dir() / f"{params.biophysics}.json"
    morph = resolve_morphology(params)
    return {
        "biophysics": {"name": params.biophysics, **file_record(biophys)},
        "morphology": file_record(morph) if morph is not None else {"path": None, "sha256": None},
    }


def component_hashes(params: ParamSet | None, mod_dir: Path | None = None) -> dict[str, Any]:
    """Hashes of the model components: mechanisms, synaptic models, biophysics, morphology."""
    comps: dict[str, Any] = {
        "mechanisms": mechanism_hashes(mod_dir),
        "synaptic_models": synaptic_model_hashes(),
    }
    if params is not None:
        comps.update(cell_file_records(params))
    return comps


# --------------------------------------------------------------------------------------------
# params


def params_file_content_hash(path: Path) -> str | None:
    """Canonical params hash of a params file as it is on disk now (None if unreadable).

    Equals `ParamSet.params_hash` when the file still holds the params that were used.
    """
    from l5assets.params import normalise  # same normalisation ("None" -> null) as loading

    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return params_hash(normalise(raw))


def _params_section(params: ParamSet, params_file: Path | None) -> dict[str, Any]:
    resolved = {
        f.name: getattr(params, f.name)
        for f in dataclasses.fields(params)
        if f.name not in ("raw", "name")
    }
    pfile = Path(params_file) if params_file else param_set_path(params.name)
    file_rec: dict[str, Any] = file_record(pfile)
    if file_rec.get("kind") == "file":
        # False if the file was edited between loading the params and writing this manifest
        file_rec["matches_params"] = params_file_content_hash(pfile) == params.params_hash
    return {
        "name": params.name,
        "hash": params.params_hash,
        "values": dict(params.raw),
        "resolved": resolved,
        "counts": params.counts.as_dict(),
        "file": file_rec,
    }


# --------------------------------------------------------------------------------------------
# manifests on disk


def find_manifest(path: Path, *, strict: bool = False) -> Path | None:
    """The manifest describing `path` (a manifest, an output folder, or a file inside one).

    Looks in the folder itself and up to three parents, and accepts a manifest only if it
    lists `path` (or a folder containing it) among its outputs, or `path` is its own folder.
    An unreadable manifest on the way is skipped, or, with `strict`, raises ValueError (a
    writer recording its inputs must not silently lose the link to an upstream).
    """
    p = Path(path).resolve()
    if p.name == MANIFEST_NAME and p.is_file():
        return p
    cands = [p] if p.is_dir() else []
    cands += list(p.parents)[:_MANIFEST_SEARCH_DEPTH]
    for folder in cands:
        m = folder / MANIFEST_NAME
        if not m.is_file():
            continue
        if folder == p:
            return m
        try:
            data = read_manifest(m)
        except (OSError, ValueError) as e:
            if strict:
                raise ValueError(
                    f"{m} is not a readable l5assets manifest ({e}): "
                    "re-materialize the asset that wrote it"
                ) from e
            continue
        for out in data.get("outputs", []):
            op = resolve_recorded_path(out, m.parent)
            if op is not None and (op == p or op in p.parents):
                return m
    return None


def read_manifest(path: Path) -> dict[str, Any]:
    """Load a manifest file (or the manifest describing `path`)."""
    p = Path(path)
    if p.name != MANIFEST_NAME or not p.is_file():
        found = find_manifest(p)
        if found is None:
            raise FileNotFoundError(f"no {MANIFEST_NAME} describes {p}")
        p = found
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(
        "l5assets.manifest/"
    ):
        raise ValueError(f"{p} is not an l5assets manifest")
    return data


def resolve_recorded_path(
    rec: Mapping[str, Any], manifest_dir: Path, fallbacks: list[str] | None = None
) -> Path | None:
    """A recorded path, preferring its location relative to the manifest (so a moved storage
    tree still resolves), else the absolute path as recorded. When a recorded `relpath` does
    not resolve but the absolute path exists, the fallback is appended to `fallbacks` (a
    moved tree then reads the original tree's file: never silently)."""
    rel = rec.get("relpath")
    cand = None
    if rel:
        cand = (Path(manifest_dir) / rel).resolve()
        if cand.exists():
            return cand
    absolute = rec.get("path")
    if not absolute and rel:
        written = _written_dir(Path(manifest_dir))  # where the manifest was written
        absolute = str(Path(written) / rel) if written else None
    if not absolute:
        return cand
    found = Path(absolute).resolve()
    if cand is not None and found != cand and found.exists() and fallbacks is not None:
        fallbacks.append(f"{rel} is not found beside {manifest_dir}: using the recorded {found}")
    return found if found.exists() or cand is None else cand


def _written_dir(manifest_dir: Path) -> str | None:
    """The absolute folder a manifest was written for (`run.dir`), if recorded."""
    try:
        data = json.loads((Path(manifest_dir) / MANIFEST_NAME).read_text())
        return (data.get("run") or {}).get("dir")
    except (OSError, ValueError, AttributeError):
        return None


def _input_record(name: str, path: Path, out_dir: Path) -> dict[str, Any]:
    rec = file_record(path, rel_to=out_dir, tree=tree_root(out_dir))
    rec["name"] = name
    up = find_manifest(Path(path), strict=True)
    if up is not None and up.resolve() != (out_dir / MANIFEST_NAME).resolve():
        try:
            upstream = read_manifest(up)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{up} (manifest of input {name!r}) is not a readable l5assets "
                f"manifest ({e}): re-materialize the asset that wrote it"
            ) from e
        rec["manifest"] = {
            **_path_fields(up, out_dir),
            "asset": upstream.get("asset"),
            "digest": manifest_digest(upstream),
        }
        rec["_code_versions"] = upstream.get("code_versions", {})
    else:
        rec["manifest"] = None
    return rec


def _path_fields(p: Path, out_dir: Path) -> dict[str, str]:
    """A path as `file_record` records it: relative inside the storage tree, else absolute."""
    p = Path(p).resolve()
    if _inside(p, tree_root(out_dir)):
        return {"relpath": os.path.relpath(p, Path(out_dir).resolve())}
    return {"path": str(p)}


def _is_timing(key: str) -> bool:
    """Extra keys that hold durations (volatile: they go under `run`)."""
    return key.endswith(("_seconds", "_time_s", "_elapsed_s")) or key in (
        "elapsed_s",
        "duration_s",
        "seconds",
    )


def _as_datetime(value: Any) -> _dt.datetime | None:
    """A start time given as epoch seconds, ISO text or datetime (UTC if naive)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    if isinstance(value, str):
        value = _dt.datetime.fromisoformat(value)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
    raise TypeError(f"started_at: expected epoch seconds, ISO text or datetime, got {value!r}")


def write_manifest(
    out_dir: Path,
    *,
    asset: str,
    params: ParamSet | None,
    seed: int | None,
    code_version: str | None,
    outputs: list[Path],
    inputs: dict[str, Path],
    extra: dict[str, Any] | None = None,
    staging_dir: Path | None = None,
) -> Path:
    """Write `out_dir/manifest.json` atomically and return its path.

    staging_dir: the temp folder (`storage.atomic_dir`) that will become `out_dir`: the
    manifest is then written into it, the outputs under `out_dir` are hashed from it, and the
    final paths are recorded, so that outputs and manifest appear together in one swap.
    The path returned is then the staged manifest.

    asset: asset key (e.g. "exc_raster"); params: the ParamSet used (None for assets not
    partitioned by param set); seed: the partition seed (None if not seed-partitioned);
    code_version: this asset's Dagster code_version; outputs: files/folders this asset wrote
    (hashed); inputs: upstream files/folders actually read, by a short name -- each is hashed
    and linked to the upstream's manifest when one describes it.

    extra (all optional): "engine" (dict, e.g. {"engine": "neuron", "threads": 1}; dt is added
    from the params), "wall_time_s" or "started_at" (epoch s / ISO / datetime: the wall time is
    then computed), "run_id", "partition_key", "params_file" (path, if the params were not
    loaded from data/params/<name>.json), "mod_dir" (the NMODL folder, if not the default),
    "reads_components" (list of "mechanisms"/"biophysics"/"morphology"/"synaptic_models" this
    asset's output depends on, for staleness). Keys ending in "_seconds" / "_time_s" are
    timings. Time, host, run id, timings and where the step ran (`RUN_KEYS`: "executor",
    "slurm_job_id", "slurm_node", "segments_cache" hit/miss) go under "run" (see
    VOLATILE_KEYS); every other key is stored under "extra".
    """
    out_dir = Path(out_dir)
    write_dir = Path(staging_dir) if staging_dir is not None else out_dir
    write_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    engine = dict(extra.pop("engine", None) or {})
    params_file = extra.pop("params_file", None)
    mod_dir = extra.pop("mod_dir", None)
    now = _dt.datetime.now(_dt.UTC)
    started = _as_datetime(extra.pop("started_at", None))
    wall = extra.pop("wall_time_s", None)
    if wall is None and started is not None:
        wall = round((now - started).total_seconds(), 3)
    run = {
        "host": socket.gethostname(),
        "written_at": now.isoformat(timespec="seconds"),
        "started_at": started.isoformat(timespec="seconds") if started else None,
        "wall_time_s": wall,
        "run_id": extra.pop("run_id", None),
        "pid": os.getpid(),
        # other timings callers put in extra (e.g. "build_seconds") vary from run to run
        "timings": {k: extra.pop(k) for k in sorted(extra) if _is_timing(k)},
        **{k: extra.pop(k) for k in RUN_KEYS if k in extra},
    }
    run["dir"] = str(out_dir.resolve())
    partition_key = extra.pop("partition_key", None)
    # paths in extra (e.g. "path_result"): relative inside the storage tree, as the records
    for k, v in list(extra.items()):
        if isinstance(v, Path):
            extra[k] = next(iter(_path_fields(v, out_dir).values()))

    input_recs = {name: _input_record(name, Path(p), out_dir) for name, p in inputs.items()}
    code_versions: dict[str, Any] = {}
    for rec in input_recs.values():
        code_versions.update(rec.pop("_code_versions", {}) or {})
    code_versions[asset] = code_version

    output_recs = [_output_record(Path(p), out_dir, staging_dir) for p in outputs]
    outputs_sha = hashlib.sha256(
        canonical_dumps(
            [(r.get("relpath") or r["path"], r["sha256"]) for r in output_recs]
        ).encode()
    ).hexdigest()

    manifest: dict[str, Any] = {
        "schema": SCHEMA,
        "asset": asset,
        "partition": {
            "param_set": params.name if params is not None else None,
            "seed": int(seed) if seed is not None else None,
            "key": partition_key,
        },
        "params": _params_section(params, params_file) if params is not None else None,
        "seed": int(seed) if seed is not None else None,
        "stage_seeds": all_stage_seeds(int(seed)) if seed is not None else {},
        "code_version": code_version,
        "code_versions": code_versions,
        "code": code_revision(),
        "versions": library_versions(),
        "components": component_hashes(params, Path(mod_dir) if mod_dir else None),
        "engine": ({"dt": params.dt} if params is not None else {}) | engine,
        "inputs": input_recs,
        "outputs": output_recs,
        "outputs_sha256": outputs_sha,
        "extra": extra,
        "run": run,
    }
    path = write_dir / MANIFEST_NAME
    storage.atomic_write_text(path, canonical_dumps(manifest))
    return path


def _output_record(final: Path, out_dir: Path, staging_dir: Path | None) -> dict[str, Any]:
    """File record of an output at its final path, hashed where it is now (the staging
    folder for files under `out_dir` that are not swapped into place yet)."""
    tree = tree_root(out_dir)
    if staging_dir is None:
        return file_record(final, rel_to=out_dir, tree=tree)
    try:
        rel = final.resolve().relative_to(out_dir.resolve())
    except ValueError:  # outside the asset folder (e.g. the compiled library in the cache)
        return file_record(final, rel_to=out_dir, tree=tree)
    # inside the asset folder, so inside the tree: the relative path only
    rec = file_record(Path(staging_dir) / rel, rel_to=staging_dir)
    del rec["path"]  # the staging folder's
    return rec


def manifest_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Flat key facts of a manifest (for Dagster metadata and one-line listings)."""
    params = manifest.get("params") or {}
    comps = manifest.get("components") or {}
    return {
        "asset": manifest.get("asset"),
        "param_set": params.get("name"),
        "params_hash": params.get("hash"),
        "seed": manifest.get("seed"),
        "code_version": manifest.get("code_version"),
        "git_commit": (manifest.get("code") or {}).get("git_commit"),
        "mechanisms_sha256": (comps.get("mechanisms") or {}).get("sha256"),
        "biophysics_sha256": (comps.get("biophysics") or {}).get("sha256"),
        "morphology_sha256": (comps.get("morphology") or {}).get("sha256"),
        "synaptic_models_sha256": (comps.get("synaptic_models") or {}).get("sha256"),
        "outputs_sha256": manifest.get("outputs_sha256"),
        "manifest_digest": manifest_digest(manifest),
    }
