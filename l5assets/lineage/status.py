"""Which param set x seed partitions are missing, fresh or stale, and why.

The state of a partition is computed from the manifests on disk, offline: an output is stale
when what its manifest recorded no longer matches what would be used now --
  params      the params file's values changed (the changed fields are named)
  params_file the file's bytes changed but not its values (Dagster's data version still moves)
  mechanisms  a .mod file changed (named)
  biophysics  the cell's biophysics JSON changed
  morphology  the morphology file changed
  synaptic_models a synapse dynamics JSON (biophys_components/synaptic_models) changed
  code_version an asset's code_version differs from the current definitions
  upstream    an upstream output it read has been re-materialized with other content since
Params and model-component changes count only for the assets that read them directly
(PARAMS_READERS, COMPONENT_READERS: the same edges as the Dagster deps on the observable
sources, so `status` and the UI flag the same assets; `status` rows are then transitive).
A Dagster instance, when given, adds the partitions it knows (dynamic partitions), notes
materializations whose files are gone, and (with the definitions) Dagster's own stale status.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from l5assets import paths, storage
from l5assets.lineage.diff import flatten
from l5assets.lineage.manifest import (
    MANIFEST_NAME,
    cell_file_records,
    file_record,
    mechanism_hashes,
    params_file_content_hash,
    read_manifest,
    resolve_recorded_path,
    synaptic_model_hashes,
)

# The asset graph's default asset lists (also the Dagster jobs' selections, l5assets.defs.jobs)
# used when no Dagster definitions are given.
DEFAULT_SHARED_ASSETS = ("compiled_mechanisms", "segments_table")
DEFAULT_SEED_ASSETS = (
    "functional_groups",
    "exc_raster",
    "inh_rasters",
    "network",
    "simulation_config",
    "simulation_outputs",
    "simulation_summary",
)
# Names of the two partition dimensions (l5assets.defs.partitions uses these).
PARAM_SET_DIM = "param_set"
SEED_DIM = "seed"
CELL_COMPONENTS = ("mechanisms", "biophysics", "morphology", "synaptic_models")
# Which model components each asset's output depends on directly. Every manifest records all
# of them (provenance), but only these make an asset stale -- the same edges as the Dagster
# deps on the observable sources `mechanism_files`, `cell_model_files` and
# `synaptic_model_files`, so that `status` and the UI flag the same assets. (Assets that read
# a component only through an upstream output, e.g. the segments table through the compiled
# library, become stale when that upstream is re-made with other content.) An asset may
# declare its own list in the manifest's extra["reads_components"]; unknown assets count as
# reading everything.
COMPONENT_READERS: dict[str, tuple[str, ...]] = {
    "compiled_mechanisms": ("mechanisms",),
    "segments_table": ("biophysics", "morphology"),  # NEURON builds the cell
    "functional_groups": (),
    "exc_raster": (),
    "inh_rasters": (),
    "network": ("synaptic_models",),  # BMTK edge types read the synapse dynamics files
    "simulation_config": (),
    "simulation_outputs": ("biophysics", "morphology", "synaptic_models"),  # the runner
    "simulation_summary": (),
}
# Whether an asset's output depends on the param set's values: the same edges as the Dagster
# deps on `params_file` (PARAMS_DEP). The compiled mechanisms only validate the params, so a
# params edit leaves them fresh. Unknown assets count as reading the params.
PARAMS_READERS: dict[str, bool] = {
    a: a != "compiled_mechanisms" for a in (*DEFAULT_SHARED_ASSETS, *DEFAULT_SEED_ASSETS)
}


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Dotted names of the params fields that differ between two params dicts."""
    fa, fb = flatten(old or {}), flatten(new or {})
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


class _Current:
    """What would be used now for one param set (computed once per param set)."""

    def __init__(self, name: str, params_dir: Path, mod_dir: Path | None = None):
        from l5assets.params import ParamsError, _normalise, load_param_set

        self.name = name
        self.file = params_dir / f"{name}.json"
        self.mod_dir = Path(mod_dir) if mod_dir else paths.mechanisms_dir()
        self.exists = self.file.is_file()
        self.file_sha256 = storage.file_sha256(self.file) if self.exists else None
        self.hash = params_file_content_hash(self.file) if self.exists else None
        self.values: dict[str, Any] | None = None
        self.error: str | None = None
        self.params = None
        if self.exists:
            try:
                self.values = _normalise(json.loads(self.file.read_text()))
                self.params = load_param_set(self.file)
            except (ParamsError, json.JSONDecodeError, OSError) as e:
                self.error = str(e)
        self._mech: dict[str, Any] | None = None
        self._comp: dict[str, Any] | None = None

    def mechanisms(self) -> dict[str, Any]:
        """Hashes of the .mod files in the mechanism folder in use now (not the recorded one:
        a moved or re-configured folder is a change)."""
        if self._mech is None:
            self._mech = mechanism_hashes(self.mod_dir)
        return self._mech

    def cell_files(self) -> dict[str, Any]:
        """sha256 of the biophysics, morphology and synaptic model files used now."""
        if self._comp is None:
            self._comp = {"biophysics": None, "morphology": None,
                          "synaptic_models": synaptic_model_hashes()["sha256"]}
            if self.params is not None:
                recs = cell_file_records(self.params)
                self._comp.update({k: v.get("sha256") for k, v in recs.items()})
        return self._comp


def _upstream_content(
    upstream: Mapping[str, Any], upath: Path, rec: Mapping[str, Any], here: Path
) -> str | None:
    """Current sha256 of an input as its upstream manifest records it (hashing the file only
    when the input is not one of the recorded outputs, e.g. a file inside an output folder)."""
    ip = resolve_recorded_path(rec, here)
    for out in upstream.get("outputs", []):
        if resolve_recorded_path(out, upath.parent) == ip:
            return out.get("sha256")
    return file_record(ip).get("sha256") if ip is not None and ip.exists() else None


def _reads(asset: str, manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """Cell components an asset's output depends on (all of them for unknown assets)."""
    declared = (manifest.get("extra") or {}).get("reads_components")
    if isinstance(declared, list):
        return tuple(declared)
    return COMPONENT_READERS.get(asset, CELL_COMPONENTS)


def _reasons_for(
    asset: str, manifest_path: Path, current: _Current, code_versions: Mapping[str, str | None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stale reasons of one asset's manifest against the current state."""
    m = read_manifest(manifest_path)
    reasons: list[dict[str, Any]] = []

    def add(kind: str, detail: str, **more: Any) -> None:
        reasons.append({"asset": asset, "kind": kind, "detail": detail, **more})

    params = m.get("params") or {}
    if params and PARAMS_READERS.get(asset, True):
        if not current.exists:
            add("params", f"params file {current.file} is gone")
        elif current.hash != params.get("hash"):
            fields = changed_fields(params.get("values"), current.values)
            add("params", "params changed: " + ", ".join(fields), fields=fields)
        elif current.file_sha256 != (params.get("file") or {}).get("sha256"):
            add("params_file", "params file rewritten (values unchanged)")
    comps = m.get("components") or {}
    reads = _reads(asset, m)
    mech = comps.get("mechanisms") or {}
    if mech and "mechanisms" in reads:
        now = current.mechanisms()
        if now.get("sha256") != mech.get("sha256"):
            old_f, new_f = mech.get("files") or {}, now.get("files") or {}
            files = sorted(k for k in set(old_f) | set(new_f) if old_f.get(k) != new_f.get(k))
            add("mechanisms", "mechanisms changed: " + ", ".join(files), files=files)
    if current.params is not None:
        cell_now = current.cell_files()
        for part in ("biophysics", "morphology", "synaptic_models"):
            rec = comps.get(part) if part in reads else None
            if rec is not None and rec.get("sha256") != cell_now[part]:
                add(part, f"{part} file changed ({rec.get('path')})")
    for a, cv in sorted((m.get("code_versions") or {}).items()):
        if a in code_versions and code_versions[a] != cv:
            add("code_version", f"code_version of {a}: {cv} -> {code_versions[a]}",
                code_asset=a)
    for name, rec in sorted((m.get("inputs") or {}).items()):
        up = rec.get("manifest")
        if not up:
            continue
        upath = resolve_recorded_path(up, manifest_path.parent)
        if upath is None or not upath.is_file():
            add("upstream", f"upstream {up.get('asset')} ({name}) is gone")
            continue
        now = _upstream_content(read_manifest(upath), upath, rec, manifest_path.parent)
        if now != rec.get("sha256"):
            # content, not the manifest, decides: a re-run that rewrote identical bytes
            # (e.g. after an unrelated component edit) does not make downstream stale
            add("upstream", f"upstream {up.get('asset')} ({name}) re-materialized with "
                            "different content since")
    return reasons, m


def asset_graph_of(defs: Any) -> Any:
    """The asset graph of Dagster Definitions, a RepositoryDefinition, or an asset graph."""
    if hasattr(defs, "resolve_asset_graph"):
        return defs.resolve_asset_graph()
    if hasattr(defs, "asset_graph"):
        return defs.asset_graph
    return defs


def _definitions_info(defs: Any) -> tuple[list[str], list[str], dict[str, str | None]]:
    """(shared assets, seed assets, code versions) from Dagster definitions."""
    import dagster as dg

    graph = asset_graph_of(defs)
    shared, seeded, cvs = [], [], {}
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        name = key.to_user_string()
        cvs[name] = node.code_version
        pdef = node.partitions_def
        if isinstance(pdef, dg.MultiPartitionsDefinition):
            dims = {d.name for d in pdef.partitions_defs}
            if dims == {PARAM_SET_DIM, SEED_DIM}:
                seeded.append(name)
        elif isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == PARAM_SET_DIM:
            shared.append(name)
    return sorted(shared), sorted(seeded), cvs


def _instance_materialized(instance: Any, assets: Iterable[str]) -> dict[str, dict[str, str]]:
    """asset -> {partition key -> run id of its latest materialization}."""
    import dagster as dg
    from dagster._core.events import DagsterEventType

    out: dict[str, dict[str, str]] = {}
    for name in assets:
        key = dg.AssetKey.from_user_string(name)
        ids = instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION
        )
        runs: dict[str, str] = {}
        if ids:
            res = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())),
                limit=len(ids),
            )
            for rec in res.records:
                runs[str(rec.partition_key)] = rec.run_id
        out[name] = runs
    return out


def _dagster_stale(instance: Any, defs: Any, keys: list[tuple[str, str]]) -> dict[tuple, str]:
    """Dagster's own stale status (what the UI shows) for (asset, partition key) pairs."""
    import dagster as dg
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    graph = asset_graph_of(defs)
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=graph,
                                          loading_context=view)
    out = {}
    for asset, pk in keys:
        st = resolver.get_status(dg.AssetKey.from_user_string(asset), pk)
        out[(asset, pk)] = st.value.lower()
    return out


def _asset_state(
    root: Path, asset: str, name: str, seed: int | None, current: _Current,
    code_versions: Mapping[str, str | None], reasons: list[dict[str, Any]],
) -> str:
    """"missing" | "fresh" | "stale" of one asset partition; its stale reasons are appended."""
    mp = storage.partition_dir(root, asset, name, seed) / MANIFEST_NAME
    if not mp.is_file():
        return "missing"
    found, _ = _reasons_for(asset, mp, current, code_versions)
    reasons += found
    return "stale" if found else "fresh"


def status(
    instance: Any = None,
    defs: Any = None,
    *,
    root: Path | None = None,
    params_dir: Path | None = None,
    code_versions: Mapping[str, str | None] | None = None,
    param_sets: Iterable[str] | None = None,
    with_dagster_status: bool = True,
    shared_assets: Iterable[str] | None = None,
    seed_assets: Iterable[str] | None = None,
    mod_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per param set x seed: state "missing" | "fresh" | "stale", with reasons.

    instance: a DagsterInstance (optional): its dynamic partitions are listed too, and its
    materialization records are checked against the files on disk. defs: the Dagster
    Definitions, a RepositoryDefinition or an asset graph (optional): which assets exist,
    their partitioning and current code_versions (else DEFAULT_SHARED_ASSETS /
    DEFAULT_SEED_ASSETS and `code_versions`); with an instance, also Dagster's own per-asset
    stale status ("dagster" field). root / params_dir default to l5assets.paths. param_sets
    restricts the listing (names are validated: ParamsError). shared_assets / seed_assets
    override the asset lists. mod_dir: the NMODL folder in use now (the `cell_model`
    resource's; default l5assets.paths.mechanisms_dir()).

    Row keys: param_set, seed (None if no seed exists for that param set), state, reasons
    (list of {asset, kind, detail, ...}), missing (assets without a manifest), assets
    ({asset: "missing" | "fresh" | "stale"}), notes (instance vs disk remarks), dagster
    ({asset: Dagster stale status}, only with instance and defs).
    """
    root = Path(root) if root else paths.storage_root()
    params_dir = Path(params_dir) if params_dir else paths.params_dir()
    if defs is not None:
        shared, seeded, cvs = _definitions_info(defs)
        cvs = {**cvs, **dict(code_versions or {})}
    else:
        shared, seeded = list(DEFAULT_SHARED_ASSETS), list(DEFAULT_SEED_ASSETS)
        cvs = dict(code_versions or {})
    if shared_assets is not None:
        shared = list(shared_assets)
    if seed_assets is not None:
        seeded = list(seed_assets)

    from l5assets.params import PARTITION_KEY_RE

    names: set[str] = {p.stem for p in params_dir.glob("*.json") if PARTITION_KEY_RE.match(p.stem)}
    seeds_of: dict[str, set[int]] = {}
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and PARTITION_KEY_RE.match(d.name):
                names.add(d.name)
                for s in d.glob("seed-*"):
                    if s.name[5:].isdigit():
                        seeds_of.setdefault(d.name, set()).add(int(s.name[5:]))
    inst_seeds: set[int] = set()
    if instance is not None:
        names |= set(instance.get_dynamic_partitions(PARAM_SET_DIM))
        inst_seeds = {int(s) for s in instance.get_dynamic_partitions(SEED_DIM) if s.isdigit()}
    if param_sets is not None:
        from l5assets.params import validate_param_set_name

        names &= {validate_param_set_name(p) for p in param_sets}

    materialized = (
        _instance_materialized(instance, shared + seeded) if instance is not None else {}
    )
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    for name in sorted(names):
        current = _Current(name, params_dir, mod_dir)
        shared_state: dict[str, Any] = {}
        shared_reasons: list[dict[str, Any]] = []
        for asset in shared:
            shared_state[asset] = _asset_state(root, asset, name, None, current, cvs,
                                               shared_reasons)
            pairs.append((asset, name))
        seeds = sorted(seeds_of.get(name, set()) | inst_seeds) or [None]
        for seed in seeds:
            assets = dict(shared_state)
            reasons = list(shared_reasons)
            notes: list[str] = []
            if current.error:
                notes.append(f"params file invalid: {current.error}")
            for asset in seeded if seed is not None else []:
                assets[asset] = _asset_state(root, asset, name, seed, current, cvs, reasons)
                pairs.append((asset, f"{name}|{seed}"))
            for asset, state in assets.items():
                pk = name if asset in shared else f"{name}|{seed}"
                run = (materialized.get(asset) or {}).get(pk)
                if instance is not None and state == "missing" and run:
                    notes.append(f"{asset}: materialized in run {run[:8]} but its files are gone")
                if instance is not None and state != "missing" and not run:
                    notes.append(f"{asset}: files on disk but no materialization in the instance")
            missing = sorted(a for a, s in assets.items() if s == "missing")
            if reasons:
                state = "stale"
            elif missing:
                state = "missing"
            else:
                state = "fresh"
            rows.append({
                "param_set": name,
                "seed": seed,
                "state": state,
                "reasons": reasons,
                "missing": missing,
                "assets": assets,
                "notes": sorted(set(notes)),
            })
    if instance is not None and defs is not None and with_dagster_status:
        try:
            ds = _dagster_stale(instance, defs, pairs)
        except Exception as e:  # noqa: BLE001 - Dagster internals: report, never fail status
            for row in rows:
                row["notes"].append(f"Dagster stale status unavailable: {e}")
        else:
            for row in rows:
                row["dagster"] = {
                    a: ds.get((a, row["param_set"] if a in shared
                               else f"{row['param_set']}|{row['seed']}"))
                    for a in row["assets"]
                }
    return rows


def format_status(rows: Iterable[Mapping[str, Any]], verbose: bool = False) -> str:
    """A table: param set, seed, state, then one indented line per distinct reason."""
    rows = list(rows)
    if not rows:
        return "no param sets found"
    lines = [f"{'param_set':<24} {'seed':>10}  state    detail"]
    for r in rows:
        seed = "-" if r["seed"] is None else str(r["seed"])
        detail = ""
        if r["state"] == "missing":
            n = len(r["assets"])
            detail = f"{len(r['missing'])}/{n} assets not materialized"
            if r["seed"] is None:
                detail += " (no seed registered yet)"
        elif r["state"] == "stale":
            kinds = sorted({x["kind"] for x in r["reasons"]})
            detail = "why: " + ", ".join(kinds)
        lines.append(f"{r['param_set']:<24} {seed:>10}  {r['state']:<7}  {detail}".rstrip())
        seen: set[str] = set()
        for x in r["reasons"]:
            # the same cause shows up in every asset of the chain: print it once
            key = x["detail"]
            if key in seen and not verbose:
                continue
            seen.add(key)
            lines.append(f"{'':<24} {'':>10}    - {x['asset']}: {x['detail']}")
        if verbose:
            lines.extend(f"{'':<24} {'':>10}    note: {note}" for note in r.get("notes", []))
            if r.get("missing") and r["state"] != "missing":
                lines.append(f"{'':<24} {'':>10}    missing: {', '.join(r['missing'])}")
    return "\n".join(lines)
