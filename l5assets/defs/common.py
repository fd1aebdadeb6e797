"""Helpers shared by the asset domains: partition lookup, upstream files, results, manifests.

Assets never pass data through an IO manager: each writes its files atomically into its own
per-partition folder (`StorageResource.partition_dir`) and returns a `dg.MaterializeResult`;
downstream assets find those files by the same deterministic layout and declare the
dependency with `deps`. Nothing is pickled.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from l5assets.lineage.manifest import MANIFEST_NAME, write_manifest
from l5assets.params import ParamSet
from l5assets.storage import files_sha256

from .lineage.staleness import manifest_metadata, step_started_at
from .resources import StorageResource


class MissingUpstreamError(FileNotFoundError):
    """An upstream asset's file for this partition is not there: materialize it first."""


class SubprocessError(RuntimeError):
    """A worker subprocess (segments worker, simulation runner) failed or timed out."""


def run_logged(
    context: dg.AssetExecutionContext,
    cmd: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    keep_lines: int = 60,
) -> list[str]:
    """Run a subprocess, streaming its output lines to the Dagster log as they come.

    Returns the last `keep_lines` lines; raises SubprocessError (with them) on a non-zero exit
    or after `timeout_s` (the process is killed).
    """
    context.log.info(f"running: {' '.join(cmd)}")
    proc = subprocess.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(env) if env is not None else None, cwd=cwd,
        start_new_session=True,  # its own process group: a kill reaches its children too
    )
    timed_out = threading.Event()

    def kill_group() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def kill() -> None:
        timed_out.set()
        kill_group()

    # The lines are logged from this (the step's) thread; a timer enforces the timeout.
    timer = threading.Timer(timeout_s, kill)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            context.log.debug(tail[-1])
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted while reading: do not leave the worker behind
            kill_group()
            proc.wait()
    if timed_out.is_set():
        raise SubprocessError(f"{' '.join(cmd[:3])} timed out after {timeout_s} s:\n"
                              + "\n".join(tail))
    if rc != 0:
        raise SubprocessError(
            f"{' '.join(cmd[:3])} failed with exit code {rc}:\n" + "\n".join(tail)
        )
    return list(tail)


def upstream_file(
    storage: StorageResource, asset: str, param_set: str, seed: int | None, name: str
) -> Path:
    """Path of an upstream asset's file for a partition; raises if it was never materialized."""
    path = storage.partition_dir(asset, param_set, seed) / name
    if not path.exists():
        part = param_set if seed is None else f"{param_set}|{seed}"
        raise MissingUpstreamError(
            f"{path} is missing: materialize asset '{asset}' for partition '{part}' first"
        )
    return path


def staged(path: Path, out_dir: Path, tmp_dir: Path) -> Path:
    """Where an output's final path under `out_dir` is while it is still in the temp folder."""
    try:
        return Path(tmp_dir) / Path(path).relative_to(out_dir)
    except ValueError:  # outside the asset folder (e.g. the compiled library in the cache)
        return Path(path)


def content_hash(files: Mapping[str, Path], out_dir: Path, tmp_dir: Path) -> str:
    """Digest of an asset's output files (names relative to its folder, and bytes), read from
    the temp folder before the swap."""
    return files_sha256([staged(Path(p), out_dir, tmp_dir) for p in files.values()],
                        base=tmp_dir)


def _metadata_value(v: Any) -> Any:
    if isinstance(v, Path):
        return dg.MetadataValue.path(str(v))
    return v


def _run_id(context: dg.AssetExecutionContext) -> str | None:
    try:
        return context.run.run_id
    except dg.DagsterError:  # direct invocation has no run
        return None


def asset_result(
    context: dg.AssetExecutionContext,
    *,
    asset: str,
    params: ParamSet,
    seed: int | None,
    out_dir: Path,
    tmp_dir: Path,
    files: Mapping[str, Path],
    counts: Mapping[str, int | float] | None = None,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    digest: str | None = None,
    params_file: Path | None = None,
    mod_dir: Path | None = None,
    manifest_extra: Mapping[str, Any] | None = None,
) -> dg.MaterializeResult:
    """Write the lineage manifest into the temp folder and build the MaterializeResult:
    metadata common to every asset (paths, counts, hashes) plus a content-hash DataVersion.

    Call it inside `with storage.atomic_dir(out_dir) as tmp_dir:`, after the outputs are
    written into `tmp_dir`: the manifest then appears together with the outputs in one swap
    (a crash leaves the previous outputs and manifest, never outputs without a manifest).
    `files` maps a short name to each output file by its FINAL path (under `out_dir`, or
    elsewhere, e.g. the compiled library in the cache); `digest` overrides the content hash
    (e.g. the .mod hash of the compiled mechanisms); `mod_dir` is the NMODL folder in use (the
    `cell_model` resource's); `manifest_extra` goes to the lineage manifest only (e.g.
    "engine", "wall_time_s").
    """
    digest = digest or content_hash(files, out_dir, tmp_dir)
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    staged_manifest = write_manifest(
        out_dir,
        asset=asset,
        params=params,
        seed=seed,
        code_version=code_version,
        outputs=[Path(p) for p in files.values()],
        inputs=dict(inputs or {}),
        extra={
            "content_hash": digest,
            "partition_key": str(context.partition_key),
            "run_id": _run_id(context),
            "started_at": step_started_at(context),
            **({"params_file": params_file} if params_file is not None else {}),
            **({"mod_dir": mod_dir} if mod_dir is not None else {}),
            "counts": dict(counts or {}),
            **dict(extra or {}),
            **dict(manifest_extra or {}),
        },
        staging_dir=tmp_dir,
    )
    metadata: dict[str, Any] = {
        "param_set": params.name,
        "params_hash": params.params_hash,
        "content_hash": digest,
        "dir": dg.MetadataValue.path(str(out_dir)),
    }
    if seed is not None:
        metadata["seed"] = seed
    for name, p in files.items():
        metadata[f"path_{name}"] = dg.MetadataValue.path(str(p))
    metadata.update(manifest_metadata(staged_manifest, out_dir / MANIFEST_NAME))
    for name, p in (inputs or {}).items():
        metadata[f"input_{name}"] = dg.MetadataValue.path(str(p))
    for k, v in (counts or {}).items():
        metadata[f"n_{k}" if not k.startswith("n_") else k] = v
    for k, v in (extra or {}).items():
        metadata[k] = _metadata_value(v)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(digest))
