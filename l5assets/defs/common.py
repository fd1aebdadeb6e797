"""The one asset-step helper every asset uses, and the pieces behind it.

`graph_asset` declares an asset from its node in `l5assets.graph` (key, group, partitions,
deps); `asset_step` runs the step: partition -> validated params -> temp folder beside the
asset's per-partition folder -> manifest + `dg.MaterializeResult`, swapped into place
together. Assets never pass data through an IO manager: downstream assets find upstream files
by the layout of `l5assets.layout`. Nothing is pickled.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from l5assets import graph as G
from l5assets import layout
from l5assets.layout import MissingUpstreamError
from l5assets.lineage.manifest import MANIFEST_NAME, manifest_summary, read_manifest, write_manifest
from l5assets.params import ParamSet
from l5assets.rng import stage_rng
from l5assets.storage import (
    LOCK_SUFFIX,
    LockBusy,
    atomic_dir,
    describe_holder,
    exclusive_lock,
    files_sha256,
    leftover_temps,
    remove_paths,
)

from .partitions import by_param_set, param_set_partitions, partition_of, run_partitions
from .resources import CellModelResource, StorageResource

__all__ = [
    "AssetStep",
    "MissingUpstreamError",
    "PartitionBusyError",
    "SubprocessError",
    "asset_result",
    "asset_step",
    "graph_asset",
    "manifest_metadata",
    "run_logged",
    "step_started_at",
    "upstream_file",
]


class SubprocessError(RuntimeError):
    """A worker subprocess (segments worker, simulation runner) failed or timed out."""


# How long a step waits for its asset partition's lock before refusing (seconds).
_LOCK_PATIENCE_S = 5.0


class PartitionBusyError(RuntimeError):
    """Another live process is materializing the same asset partition."""


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """For Popen(preexec_fn=...): in the child, ask the kernel for SIGKILL when the parent
    dies (Linux PR_SET_PDEATHSIG; it survives exec), and exit at once if the parent is already
    gone. The worker runs in its own session, so without this a `kill -9` of the run would
    leave it running, reparented to init. (The worker also watches its parent itself:
    `l5assets.simulation.runner`, env L5ASSETS_PARENT_PID.)"""

    def preexec() -> None:
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent_pid:
            os._exit(137)

    return preexec


# Modules later steps import, imported in a thread while a step waits on its subprocess (set
# by `l5assets run`, which makes every step in one process: pynwb's import is ~1 s of the
# NWB export). Empty (nothing prefetched) under Dagster's executors.
PREFETCH_MODULES: list[str] = []


def prefetch_modules() -> None:
    """Import PREFETCH_MODULES in a daemon thread (once each; failures are left for the
    step that needs the module to report)."""
    import importlib

    names = [m for m in PREFETCH_MODULES if m not in sys.modules]
    PREFETCH_MODULES.clear()

    def work() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    if names:
        threading.Thread(target=work, name="l5assets-prefetch", daemon=True).start()


def run_logged(
    context: dg.AssetExecutionContext,
    cmd: Sequence[str],
    *,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    keep_lines: int = 60,
    progress_label: str = "NEURON run",
) -> list[str]:
    """Run a subprocess, streaming its output lines to the Dagster log as they come; its
    `L5PROGRESS` lines become progress messages (`l5assets.simulation.progress`).

    Returns the last `keep_lines` lines; raises SubprocessError (with them) on a non-zero exit
    or after `timeout_s` (the process is killed).
    """
    from l5assets.simulation.progress import ProgressMeter, log_line

    # the command line (temp paths) is for debugging, not for the run log's reader
    context.log.debug(f"running: {' '.join(cmd)}")
    meter = ProgressMeter(label=progress_label)
    child_env = dict(env) if env is not None else dict(os.environ)
    child_env["L5ASSETS_PARENT_PID"] = str(os.getpid())
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env,
        cwd=cwd,
        start_new_session=True,  # its own process group: a kill reaches its children too
        preexec_fn=_die_with_parent(os.getpid()),
    )
    prefetch_modules()  # this thread now mostly waits on the subprocess
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
            log_line(context.log, line, meter, tail)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:  # interrupted while reading: do not leave the worker behind
            kill_group()
            proc.wait()
    if timed_out.is_set():
        raise SubprocessError(
            f"{' '.join(cmd[:3])} timed out after {timeout_s} s:\n" + "\n".join(tail)
        )
    if rc != 0:
        raise SubprocessError(
            f"{' '.join(cmd[:3])} failed with exit code {rc}:\n" + "\n".join(tail)
        )
    return list(tail)


def upstream_file(
    storage: StorageResource, asset: str, param_set: str, seed: int | None, name: str
) -> Path:
    """Path of an upstream asset's file for a partition; raises if it was never materialized."""
    return layout.upstream_file(storage.root_path(), asset, param_set, seed, name)


def staged(path: Path, out_dir: Path, tmp_dir: Path) -> Path:
    """Where an output's final path under `out_dir` is while it is still in the temp folder."""
    try:
        return Path(tmp_dir) / Path(path).relative_to(out_dir)
    except ValueError:  # outside the asset folder (e.g. the compiled library in the cache)
        return Path(path)


def content_hash(files: Mapping[str, Path], out_dir: Path, tmp_dir: Path) -> str:
    """Digest of an asset's output files (names relative to its folder, and bytes), read from
    the temp folder before the swap."""
    return files_sha256([staged(Path(p), out_dir, tmp_dir) for p in files.values()], base=tmp_dir)


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
    figures: Mapping[str, bytes] | None = None,
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
    # the data version is the science files': a figure's bytes follow the plotting library
    science = {k: v for k, v in files.items() if k not in (figures or {})}
    digest = digest or content_hash(science, out_dir, tmp_dir)
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
    # the science first (numbers, then figures), the provenance after: the UI lists
    # metadata in this order
    metadata: dict[str, Any] = {}
    for k, v in (extra or {}).items():
        metadata[k] = _metadata_value(v)
    for k, v in (counts or {}).items():
        metadata[f"n_{k}" if not k.startswith("n_") else k] = v
    for name, png in (figures or {}).items():
        metadata[name] = figure_markdown(name, png)
    metadata.update(
        {
            "param_set": params.name,
            "params_hash": params.params_hash,
            "content_hash": digest,
            "dir": dg.MetadataValue.path(str(out_dir)),
        }
    )
    if seed is not None:
        metadata["seed"] = seed
    for name, p in files.items():
        metadata[f"path_{name}"] = dg.MetadataValue.path(str(p))
    metadata.update(manifest_metadata(staged_manifest, out_dir / MANIFEST_NAME))
    for name, p in (inputs or {}).items():
        metadata[f"input_{name}"] = dg.MetadataValue.path(str(p))
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(digest))


def figure_markdown(name: str, png: bytes) -> dg.MarkdownMetadataValue:
    """An inline PNG as Markdown metadata (the UI renders it in the materialization)."""
    import base64

    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


# --------------------------------------------------------------------------------------------
# declaring an asset from the graph spec


def asset_deps(name: str) -> list[dg.AssetDep]:
    """Dagster deps of an asset, from its node in `l5assets.graph`: a param-set-level parent of
    a seed-level asset feeds every seed through the `param_set` dimension."""
    node = G.node(name)
    deps = []
    for parent in node.parents:
        fan_out = node.level == "seed" and G.node(parent).level in ("source", "param_set")
        deps.append(dg.AssetDep(parent, partition_mapping=by_param_set if fan_out else None))
    return deps


def graph_asset(
    name: str,
    *,
    kinds: set[str],
    description: str,
    resources: Iterable[str] = (),
    pool: str | None = None,
) -> Callable[[Callable[[AssetStep], dg.MaterializeResult]], dg.AssetsDefinition]:
    """Declare an asset of `l5assets.graph` whose body is one `asset_step`.

    Key, group, partitions, deps and code version come from the spec (so the offline
    `status` knows the code versions too); the asset gives what only it knows.
    The decorated function receives the AssetStep (outputs go to `step.tmp`, its return value
    is `step.result(...)`); `resources` are the keys it needs besides `storage` (reach them as
    `step.resources.<key>`; "cell_model" is also recorded as the NMODL folder in use);
    `pool` is the Dagster concurrency pool its steps take a slot of (the NEURON runs').
    """
    node = G.node(name)
    keys = {"storage", *resources}

    def decorate(fn: Callable[[AssetStep], dg.MaterializeResult]) -> dg.AssetsDefinition:
        # unannotated: Dagster cannot resolve a postponed (string) annotation of `context`
        def run(context) -> dg.MaterializeResult:
            cell_model = context.resources.cell_model if "cell_model" in keys else None
            with asset_step(context, context.resources.storage, cell_model) as step:
                return fn(step)

        run.__name__, run.__doc__ = fn.__name__, fn.__doc__
        return dg.asset(
            key=name,
            partitions_def=run_partitions if node.level == "seed" else param_set_partitions,
            group_name=node.group,
            kinds=kinds,
            code_version=node.code_version,
            deps=asset_deps(name),
            description=description,
            required_resource_keys=keys,
            pool=pool,
        )(run)

    return decorate


# --------------------------------------------------------------------------------------------
# running one asset step


@dataclass
class AssetStep:
    """One materialization in progress: its partition, params and temp folder.

    Write outputs into `tmp`; `read` finds an upstream file and records it as an input; call
    `result` last, still inside the `asset_step` block.
    """

    context: dg.AssetExecutionContext
    storage: StorageResource
    asset: str
    params: ParamSet
    seed: int | None
    out: Path
    tmp: Path
    mod_dir: Path | None = None
    inputs: dict[str, Path] = field(default_factory=dict)

    @property
    def param_set(self) -> str:
        return self.params.name

    @property
    def root(self) -> Path:
        """The storage root."""
        return self.storage.root_path()

    @property
    def resources(self) -> Any:
        """The step's resources (`storage`, and those the asset declared)."""
        return self.context.resources

    def read(self, asset: str, name: str, *, as_: str | None = None) -> Path:
        """An upstream file of this partition (its shared folder for a param-set-level asset),
        recorded as input `as_` (default: the asset's key)."""
        seed = self.seed if G.node(asset).level == "seed" else None
        path = upstream_file(self.storage, asset, self.param_set, seed, name)
        self.inputs[as_ or asset] = path
        return path

    def rng(self, stage: str) -> np.random.Generator:
        """The random stream of one stage of this partition's seed."""
        if self.seed is None:
            raise ValueError(f"{self.asset}: a param-set-level asset has no seed to draw from")
        return stage_rng(self.seed, stage)

    def outputs_in_tmp(self, files: Sequence[Path] | None = None) -> dict[str, Path]:
        """Final paths of files written into `tmp` (default: every visible file, sorted),
        named by their path relative to the folder without suffix ("a/b.h5" -> "a_b")."""
        if files is None:
            files = sorted(
                p for p in self.tmp.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        names = [Path(p).relative_to(self.tmp) for p in files]  # in the order given
        return {str(n.with_suffix("")).replace("/", "_"): self.out / n for n in names}

    def result(
        self,
        files: Mapping[str, str | Path],
        *,
        counts: Mapping[str, int | float] | None = None,
        extra: Mapping[str, Any] | None = None,
        digest: str | None = None,
        manifest_extra: Mapping[str, Any] | None = None,
        figures: Mapping[str, bytes] | None = None,
    ) -> dg.MaterializeResult:
        """Manifest into the temp folder + the MaterializeResult (`asset_result`). `files` maps
        a short name to an output: a name inside the asset folder, or a Path elsewhere;
        `figures` maps a metadata name to a small inline PNG."""
        return asset_result(
            self.context,
            asset=self.asset,
            params=self.params,
            seed=self.seed,
            out_dir=self.out,
            tmp_dir=self.tmp,
            files={k: self.out / v if isinstance(v, str) else v for k, v in files.items()},
            counts=counts,
            inputs=self.inputs,
            extra=extra,
            digest=digest,
            params_file=self.storage.params_file(self.param_set),
            mod_dir=self.mod_dir,
            manifest_extra=manifest_extra,
            figures=figures,
        )


@contextlib.contextmanager
def asset_step(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    cell_model: CellModelResource | None = None,
) -> Iterator[AssetStep]:
    """Run one asset step: validate the partition's params (a bad params file fails before
    anything is written), then yield an AssetStep whose temp folder is swapped into the
    asset's per-partition folder when the block succeeds (a failure keeps the previous one).
    `cell_model`: recorded as the NMODL folder in use (assets that compile or run NEURON)."""
    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    asset = context.asset_key.to_user_string()
    out = storage.partition_dir(asset, param_set, seed)
    with _one_writer(context, out, asset), atomic_dir(out) as tmp:
        yield AssetStep(
            context=context,
            storage=storage,
            asset=asset,
            params=params,
            seed=seed,
            out=out,
            tmp=tmp,
            mod_dir=cell_model.mod_path() if cell_model is not None else None,
        )


@contextlib.contextmanager
def _one_writer(context: dg.AssetExecutionContext, out: Path, asset: str) -> Iterator[None]:
    """Hold the asset partition's lock file (`<partition>/.<asset>.lock`, pid + host) for the
    step: a second writer of the same asset partition fails at once (PartitionBusyError).
    A lock left by a dead holder is taken over and the temp folders it left beside the
    asset's folder are removed, both logged as warnings."""
    label = f"{asset} [{context.partition_key}]"
    # a few seconds of patience: `status` probes the lock (shared, for an instant)
    lock = exclusive_lock(
        out.parent / f".{asset}{LOCK_SUFFIX}", label, wait=True, timeout_s=_LOCK_PATIENCE_S
    )
    try:
        state = lock.__enter__()
    except LockBusy as e:
        raise PartitionBusyError(f"{e}; refusing a second writer") from None
    try:
        if state.stale:
            context.log.warning(
                f"{label}: took over the lock left by {describe_holder(state.stale)} "
                "(no longer running)"
            )
        # only this step writes this asset partition now: temp folders beside it are a
        # killed run's (their writer is gone, or the lock would be held)
        removed = remove_paths(leftover_temps(out.parent, asset))
        if removed:
            context.log.warning(
                f"{label}: removed temp folders left by a killed run: "
                + ", ".join(p.name for p in removed)
            )
        yield
    except BaseException:
        if not lock.__exit__(*sys.exc_info()):
            raise
    else:
        lock.__exit__(None, None, None)
