"""Cell validation assets: one per protocol, partitioned by cell, plus a per-cell summary.

Each protocol asset simulates its protocol in a fresh NEURON subprocess
(`l5assets.cell.validation.run_protocols`), writes traces, features and a plot with a lineage
manifest into `<storage root>/_cells/<cell>/<asset>/` (not a param set's folder), and reports
every feature next to its target in the materialization metadata. One non-blocking asset
check per gating target reads the written features back, so a failing target shows as a
failed check, not a failed run.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from l5assets import paths
from l5assets.cell import validation as V
from l5assets.lineage.manifest import write_manifest
from l5assets.storage import atomic_dir, cell_dir, dir_sha256, file_sha256

from ..common import figure_markdown, manifest_metadata, step_started_at
from ..instance import NEURON_POOL
from ..resources import CellModelResource, StorageResource
from ..slurm import SlurmJob, SlurmResource, job_metadata

GROUP = "cell_validation"
FEATURES_FILE = "features.json"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
MORPHOLOGY_ENV = "L5ASSETS_REFERENCE_MORPHOLOGY"


def cell_spec(cell: str) -> Any:
    """The cell's validation spec (target family, site rule, informational rows)."""
    from l5assets.cell.biophysics import load_biophysics

    return load_biophysics(cell).validation


def cell_names() -> list[str]:
    """Partition keys: the stems of biophys_components/cells/*.json."""
    return sorted(p.stem for p in paths.cells_dir().glob("*.json"))


cell_partitions = dg.StaticPartitionsDefinition(cell_names())


class CellValidationConfig(dg.Config):
    """Run configuration of a validation asset."""

    morphology: str | None = Field(
        default=None,
        description=(
            "Morphology file (.asc/.swc). Default: the cell's packaged morphology; cells without "
            f"one (L5PC_reference) read the env var {MORPHOLOGY_ENV}."
        ),
    )


def asset_key(protocol: str) -> str:
    return f"validation_{protocol}"


def check_name(feature: str) -> str:
    return feature.replace(".", "__")


def _out_dir(storage: StorageResource, asset: str, cell: str) -> Path:
    return cell_dir(storage.root_path(), asset, cell)


@contextlib.contextmanager
def _cell_outputs(
    context: dg.AssetExecutionContext,
    out: Path,
    cell: str,
    *,
    inputs: Mapping[str, Path],
    mod_dir: Path | None = None,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Temp folder for one cell's outputs; on success, writes the lineage manifest into it and
    swaps both into `out` together. The dict yielded is filled on exit with the data version
    (outputs only: the manifest's run section varies) and the manifest's metadata."""
    done: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        yield tmp, done
        digest = dir_sha256(tmp)
        outputs = sorted(p for p in tmp.rglob("*") if p.is_file() and not p.name.startswith("."))
        staged = write_manifest(
            out,
            asset=context.asset_key.to_user_string(),
            params=None,
            seed=None,
            code_version=V.CODE_VERSION,
            outputs=[out / p.relative_to(tmp) for p in outputs],
            inputs={k: v for k, v in inputs.items() if v is not None},
            extra={
                "cell": cell,
                "partition_key": cell,
                "content_hash": digest,
                "started_at": step_started_at(context),
                **({"mod_dir": mod_dir} if mod_dir is not None else {}),
            },
            staging_dir=tmp,
        )
        done["data_version"] = dg.DataVersion(digest)
        done["metadata"] = manifest_metadata(staged, out / "manifest.json")


def _cell_inputs(cell: str, morph: Path | None) -> dict[str, Path]:
    """The cell files a validation asset reads, as manifest inputs."""
    bio = paths.cells_dir() / f"{cell}.json"
    return {"biophysics": bio, **({"morphology": morph} if morph is not None else {})}


def _resolve_morphology(cell: str, morphology: str | None) -> Path | None:
    try:
        return V.resolve_morphology(cell, morphology or os.environ.get(MORPHOLOGY_ENV) or None)
    except V.ValidationError as exc:
        raise dg.Failure(
            description=(
                f"cell '{cell}' needs a morphology: set run config `morphology` on the asset or "
                f"the environment variable {MORPHOLOGY_ENV} ({exc})"
            )
        ) from exc


def _feature_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| feature | value | target | unit | result |", "|---|---|---|---|---|"]
    for r in rows:
        val = "n/a" if r["value"] is None else f"{r['value']:.4g}"
        verdict = "PASS" if r["passed"] else "FAIL"
        if not r["gating"]:
            verdict += " (info)"
        lines.append(f"| {r['label']} | {val} | {r['target']} | {r['unit']} | {verdict} |")
    return "\n".join(lines)


def _provenance(cell: str, morph: Path | None, mod_dir: Path) -> dict[str, Any]:
    from l5assets.cell.mechanisms import mod_hash

    bio = paths.cells_dir() / f"{cell}.json"
    return {
        "cell": cell,
        "biophysics": str(bio),
        "biophysics_sha256": file_sha256(bio) if bio.exists() else None,
        "morphology": None if morph is None else str(morph),
        "morphology_sha256": None if morph is None else file_sha256(morph),
        "mod_hash": mod_hash(mod_dir),
        "code_version": V.CODE_VERSION,
        "dL": V.VALIDATION_DL,
    }


def _simulate(
    context: dg.AssetExecutionContext,
    protocol: str,
    cell: str,
    morph: Path | None,
    cell_model: CellModelResource,
    storage: StorageResource,
    slurm: SlurmResource,
) -> tuple[V.ProtocolTraces, SlurmJob | None]:
    """The protocol's traces: simulated here, or by a SLURM job (through Pipes) that runs the
    same `run_protocols` and saves them on the shared filesystem; the job, if any."""
    if not slurm.enabled:
        traces = V.run_protocols(
            cell,
            morph,
            [protocol],
            mod_dir=cell_model.mod_path(),
            cache_root=cell_model.cache_path(),
        )[protocol]
        return traces, None
    root = storage.root_path()
    folder = Path(tempfile.mkdtemp(prefix=f"validation-{protocol}-", dir=slurm.scratch_path(root)))
    try:
        cmd = [sys.executable, "-m", "l5assets.simulation.pipes_report", "--module"]
        cmd += ["l5assets.cell.validation.job", "--cell", cell, "--protocol", protocol]
        cmd += ["--output-dir", str(folder), "--mod-dir", str(cell_model.mod_path())]
        cmd += ["--cache-root", str(cell_model.cache_path())]
        cmd += ["--morphology", str(morph)] if morph is not None else []
        t0 = time.monotonic()
        job = slurm.run(
            context, cmd, cwd=folder, env=dict(os.environ), storage_root=root, timeout_s=3600.0
        )
        traces = V.ProtocolTraces.load(folder, protocol)
        traces.runtime_s = time.monotonic() - t0
        context.log.info(f"SLURM job {job.job_id} {job.state} on {job.node or '?'}")
        return traces, job
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _make_protocol_asset(protocol: str) -> dg.AssetsDefinition:
    proto = V.PROTOCOLS[protocol]
    key = asset_key(protocol)

    @dg.asset(
        name=key,
        partitions_def=cell_partitions,
        group_name=GROUP,
        kinds={"neuron", "python"},
        code_version=V.CODE_VERSION,
        pool=NEURON_POOL,
        description=(
            f"Cell validation, {proto.title}. Simulated in a fresh NEURON subprocess; writes "
            f"traces (.npy/.json), {FEATURES_FILE} (every feature, its target, pass/fail) and a "
            "PNG plot."
        ),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: CellValidationConfig,
        storage: StorageResource,
        cell_model: CellModelResource,
        slurm: SlurmResource,
    ) -> dg.MaterializeResult:
        cell = context.partition_key
        spec = cell_spec(cell)
        out = _out_dir(storage, key, cell)
        if protocol not in V.FAMILY_PROTOCOLS[spec.targets]:
            # e.g. BluePyOpt's steps for a Hay-family cell: recorded as not applicable
            with _cell_outputs(context, out, cell, inputs=_cell_inputs(cell, None)) as (tmp, done):
                (tmp / FEATURES_FILE).write_text(
                    json.dumps(
                        {
                            "cell": cell,
                            "protocol": protocol,
                            "applies": False,
                            "features": [],
                            "measures": {},
                            "passed": True,
                            "targets": spec.targets,
                        },
                        indent=2,
                        sort_keys=True,
                    )
                    + "\n"
                )
            return dg.MaterializeResult(
                metadata={
                    "cell": cell,
                    "applies": False,
                    "why": f"not a protocol of the '{spec.targets}' target family",
                    **done["metadata"],
                },
                data_version=done["data_version"],
            )
        morph = _resolve_morphology(cell, config.morphology)
        traces, job = _simulate(context, protocol, cell, morph, cell_model, storage, slurm)
        ev = V.evaluate(traces, spec.targets, spec.informational)
        record = {
            **_provenance(cell, morph, cell_model.mod_path()),
            **ev,
            "applies": True,
            "targets": spec.targets,
        }
        with _cell_outputs(
            context, out, cell, inputs=_cell_inputs(cell, morph), mod_dir=cell_model.mod_path()
        ) as (tmp, done):
            traces.save(tmp)
            V.plot_protocol(traces, ev, tmp / f"{protocol}.png")
            (tmp / FEATURES_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        plot = out / f"{protocol}.png"
        rows = ev["features"]
        # the science first (verdict, features, plot), the provenance after
        metadata: dict[str, Any] = {
            "passed": ev["passed"],
            "n_targets": sum(r["gating"] for r in rows),
            "n_passed": sum(r["passed"] for r in rows if r["gating"]),
            "features": dg.MetadataValue.md(_feature_table(rows)),
        }
        if protocol == "fi":
            c = ev["measures"]["fi.curve"]
            metadata["fi_curve"] = dg.MetadataValue.md(
                "| I (nA) | rate (Hz) |\n|---|---|\n"
                + "\n".join(
                    f"| {a:g} | {r:g} |" for a, r in zip(c["amps_nA"], c["rates_Hz"], strict=True)
                )
            )
        small = V.inline_copy(tmp / f"{protocol}.png")
        if small is not None:
            metadata["plot_image"] = figure_markdown("plot", small)
        for r in rows:
            if r["gating"]:
                val = "n/a" if r["value"] is None else f"{r['value']:.4g}"
                metadata[f"feature/{r['feature']}"] = (
                    f"{val} {r['unit']} (target {r['target']}) {'PASS' if r['passed'] else 'FAIL'}"
                )
        metadata.update(
            {
                "cell": cell,
                "morphology": dg.MetadataValue.path(str(morph)) if morph else "none",
                "runtime_s": round(traces.runtime_s, 2),
                **job_metadata(job),
                "plot": dg.MetadataValue.path(str(plot)),
                "path_features": dg.MetadataValue.path(str(out / FEATURES_FILE)),
                "dir": dg.MetadataValue.path(str(out)),
                **done["metadata"],
            }
        )
        return dg.MaterializeResult(metadata=metadata, data_version=done["data_version"])

    return _asset


def _make_check(protocol: str, target: V.Target) -> dg.AssetChecksDefinition:
    key = asset_key(protocol)

    @dg.asset_check(
        asset=key,
        name=check_name(target.feature),
        description=f"{target.label}: target {target.text()} {target.unit} ({target.source})",
        blocking=False,
        partitions_def=cell_partitions,
    )
    def _check(
        context: dg.AssetCheckExecutionContext, storage: StorageResource
    ) -> dg.AssetCheckResult:
        return evaluate_check(storage, key, context.partition_key, target)

    return _check


def evaluate_check(
    storage: StorageResource, asset: str, cell: str, target: V.Target
) -> dg.AssetCheckResult:
    """Judge one target from the features file an asset wrote for a cell."""
    path = _out_dir(storage, asset, cell) / FEATURES_FILE
    if not path.exists():
        return dg.AssetCheckResult(
            passed=False, metadata={"error": f"{path} missing: materialize {asset} first"}
        )
    rec = json.loads(path.read_text())
    rows = {r["feature"]: r for r in rec["features"]}
    if target.feature not in rows and (
        not rec.get("applies", True)
        or target.feature
        not in {t.feature for t in V.targets_for(target.protocol, rec.get("targets", "bluepyopt"))}
    ):
        return dg.AssetCheckResult(
            passed=True,
            metadata={
                "applies": f"no: not a target of the cell's family "
                f"({rec.get('targets', 'bluepyopt')})"
            },
        )
    row = rows.get(target.feature) or V.judge(target, None)
    informational = not row.get("gating", True)
    return dg.AssetCheckResult(
        passed=bool(row["passed"]),
        # a target the cell reports without gating (its biophysics file says why) only warns
        severity=dg.AssetCheckSeverity.WARN if informational else dg.AssetCheckSeverity.ERROR,
        metadata={
            **({"informational": row.get("note") or "yes"} if informational else {}),
            "value": row["value"] if row["value"] is not None else "n/a",
            "target": f"{row['target']} {row['unit']}".strip(),
            "lower": row["lower"],
            "upper": row["upper"],
            "source": row["source"],
            "method": row["method"],
        },
    )


protocol_assets = [_make_protocol_asset(p) for p in V.PROTOCOL_NAMES]
with warnings.catch_warnings():
    # partitioned asset checks are a Dagster "preview" feature (1.13): we rely on them so each
    # cell's checks are judged on that cell's files
    warnings.simplefilter("ignore", dg.PreviewWarning)
    # one check per target that gates some family (a cell of another family: not applicable)
    _gating = {t.feature: t for fam in V.FAMILIES for t in V.targets_for(None, fam) if t.gating}
    protocol_checks = [
        _make_check(t.protocol, V.TARGETS_BY_FEATURE[f]) for f, t in sorted(_gating.items())
    ]


@dg.asset(
    name="validation_summary",
    partitions_def=cell_partitions,
    group_name=GROUP,
    kinds={"python"},
    code_version=V.CODE_VERSION,
    deps=[asset_key(p) for p in V.PROTOCOL_NAMES],
    description=(
        "Every validation feature of a cell with its target and pass/fail, gathered from the "
        f"protocol assets: {SUMMARY_FILE} and a text report ({REPORT_FILE})."
    ),
)
def validation_summary(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    cell = context.partition_key
    spec = cell_spec(cell)
    features: list[dict[str, Any]] = []
    measures: dict[str, Any] = {}
    morphology = None
    names = list(V.FAMILY_PROTOCOLS[spec.targets])
    inputs: dict[str, Path] = {}
    for p in names:
        path = inputs[asset_key(p)] = _out_dir(storage, asset_key(p), cell) / FEATURES_FILE
        if not path.exists():
            raise dg.Failure(description=f"{path} missing: materialize {asset_key(p)} first")
        rec = json.loads(path.read_text())
        features.extend(rec["features"])
        measures[p] = rec["measures"]
        morphology = rec.get("morphology", morphology)
    summary = {
        "cell": cell,
        "morphology": morphology,
        "protocols": names,
        "targets": spec.targets,
        "features": features,
        "measures": measures,
        "passed": all(r["passed"] for r in features if r["gating"]),
    }
    report = V.format_validation(summary)
    out = _out_dir(storage, "validation_summary", cell)
    with _cell_outputs(context, out, cell, inputs=inputs) as (tmp, done):
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        (tmp / REPORT_FILE).write_text(report + "\n")
    gating = [r for r in features if r["gating"]]
    return dg.MaterializeResult(
        metadata={
            "cell": cell,
            "passed": summary["passed"],
            "n_targets": len(gating),
            "n_passed": sum(r["passed"] for r in gating),
            "failed": ", ".join(r["feature"] for r in gating if not r["passed"]) or "none",
            "features": dg.MetadataValue.md(_feature_table(features)),
            "path_summary": dg.MetadataValue.path(str(out / SUMMARY_FILE)),
            "path_report": dg.MetadataValue.path(str(out / REPORT_FILE)),
            **done["metadata"],
        },
        data_version=done["data_version"],
    )
