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
from typing import Any, Protocol

from l5assets import graph as G
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

# The asset graph's lists and readers, spelled once in l5assets.graph.
DEFAULT_SHARED_ASSETS = G.SHARED_ASSETS
DEFAULT_SEED_ASSETS = G.SEED_ASSETS
PARAM_SET_DIM = G.PARAM_SET_DIM
SEED_DIM = G.SEED_DIM
CELL_COMPONENTS = G.CELL_COMPONENTS
# Which model components each asset's output depends on directly. Every manifest records all
# of them (provenance), but only these make an asset stale: the same edges as the Dagster deps
# on the observable sources, so that `status` and the UI flag the same assets. An asset may
# declare its own list in the manifest's extra["reads_components"]; unknown assets count as
# reading everything.
COMPONENT_READERS = G.COMPONENT_READERS
# Whether an asset's output depends on the param set's values (a dep on `params_file`).
# Unknown assets count as reading the params.
PARAMS_READERS = G.PARAMS_READERS


class InstanceView(Protocol):
    """What `status` asks of an orchestrator (the Dagster layer implements it:
    `l5assets.defs.lineage.status`); the core itself never imports Dagster."""

    def assets(self) -> tuple[list[str], list[str], dict[str, str | None]] | None:
        """(param-set-level assets, seed assets, code versions), or None to use the graph's."""

    def param_sets(self) -> set[str]:
        """Registered param sets."""

    def seeds(self) -> set[int]:
        """Registered seeds."""

    def materialized(self, assets: Iterable[str]) -> dict[str, dict[str, str]]:
        """asset -> {partition key -> run id of its latest materialization}."""

    def stale(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The orchestrator's own stale status of (asset, partition key) pairs."""


def changed_fields(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Dotted names of the params fields that differ between two params dicts."""
    fa, fb = flatten(old or {}), flatten(new or {})
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))


class _Current:
    """What would be used now for one param set (computed once per param set)."""

    def __init__(self, name: str, params_dir: Path, mod_dir: Path | None = None):
        from l5assets.params import ParamsError, load_param_set, normalise

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
                self.values = normalise(json.loads(self.file.read_text()))
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
            self._comp = {
                "biophysics": None,
                "morphology": None,
                "synaptic_models": synaptic_model_hashes()["sha256"],
            }
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


def _params_reasons(m: Mapping[str, Any], current: _Current) -> list[tuple[str, str, dict]]:
    params = m.get("params") or {}
    if not params:
        return []
    if not current.exists:
        return [("params", f"params file {current.file} is gone", {})]
    if current.hash != params.get("hash"):
        fields = changed_fields(params.get("values"), current.values)
        return [("params", "params changed: " + ", ".join(fields), {"fields": fields})]
    if current.file_sha256 != (params.get("file") or {}).get("sha256"):
        return [("params_file", "params file rewritten (values unchanged)", {})]
    return []


def _component_reasons(
    m: Mapping[str, Any], reads: tuple[str, ...], current: _Current
) -> list[tuple[str, str, dict]]:
    out: list[tuple[str, str, dict]] = []
    comps = m.get("components") or {}
    mech = comps.get("mechanisms") or {}
    if mech and "mechanisms" in reads:
        now = current.mechanisms()
        if now.get("sha256") != mech.get("sha256"):
            old_f, new_f = mech.get("files") or {}, now.get("files") or {}
            files = sorted(k for k in set(old_f) | set(new_f) if old_f.get(k) != new_f.get(k))
            out.append(("mechanisms", "mechanisms changed: " + ", ".join(files), {"files": files}))
    if current.params is not None:
        cell_now = current.cell_files()
        for part in ("biophysics", "morphology", "synaptic_models"):
            rec = comps.get(part) if part in reads else None
            if rec is not None and rec.get("sha256") != cell_now[part]:
                out.append((part, f"{part} file changed ({rec.get('path')})", {}))
    return out


def _upstream_reasons(m: Mapping[str, Any], here: Path) -> list[tuple[str, str, dict]]:
    out: list[tuple[str, str, dict]] = []
    for name, rec in sorted((m.get("inputs") or {}).items()):
        up = rec.get("manifest")
        if not up:
            continue
        upath = resolve_recorded_path(up, here)
        if upath is None or not upath.is_file():
            out.append(("upstream", f"upstream {up.get('asset')} ({name}) is gone", {}))
            continue
        now = _upstream_content(read_manifest(upath), upath, rec, here)
        if now != rec.get("sha256"):
            # content, not the manifest, decides: a re-run that rewrote identical bytes
            # (e.g. after an unrelated component edit) does not make downstream stale
            out.append(
                (
                    "upstream",
                    f"upstream {up.get('asset')} ({name}) re-materialized "
                    "with different content since",
                    {},
                )
            )
    return out


def _output_reasons(m: Mapping[str, Any], mpath: Path, verify: bool) -> list[tuple[str, str, dict]]:
    """An output that is gone or resized (always checked: cheap), or whose sha256 differs
    from its manifest (with `verify`): the partition must be re-made."""
    from l5assets.lineage.trace import check_outputs

    problems: list[str] = []
    check_outputs(m, mpath, problems, verify=verify)
    return [("outputs", p, {}) for p in problems]


def _reasons_for(
    asset: str,
    manifest_path: Path,
    current: _Current,
    code_versions: Mapping[str, str | None],
    verify: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stale reasons of one asset's manifest against the current state."""
    m = read_manifest(manifest_path)
    found = _output_reasons(m, manifest_path, verify)
    found += _params_reasons(m, current) if PARAMS_READERS.get(asset, True) else []
    found += _component_reasons(m, _reads(asset, m), current)
    for a, cv in sorted((m.get("code_versions") or {}).items()):
        if a in code_versions and code_versions[a] != cv:
            found.append(
                (
                    "code_version",
                    f"code_version of {a}: {cv} -> {code_versions[a]}",
                    {"code_asset": a},
                )
            )
    found += _upstream_reasons(m, manifest_path.parent)
    reasons = [{"asset": asset, "kind": k, "detail": d, **more} for k, d, more in found]
    return reasons, m


def _asset_state(
    root: Path,
    asset: str,
    name: str,
    seed: int | None,
    current: _Current,
    code_versions: Mapping[str, str | None],
    reasons: list[dict[str, Any]],
    verify: bool = False,
) -> str:
    """ "missing" | "fresh" | "stale" of one asset partition; its stale reasons are appended."""
    mp = storage.partition_dir(root, asset, name, seed) / MANIFEST_NAME
    if not mp.is_file():
        return "missing"
    found, _ = _reasons_for(asset, mp, current, code_versions, verify)
    reasons += found
    return "stale" if found else "fresh"


def _param_set_names(
    root: Path, params_dir: Path, view: InstanceView | None, param_sets: Iterable[str] | None
) -> tuple[set[str], dict[str, set[int]]]:
    """Param sets to list (params files, output folders, registered) and the seeds on disk."""
    from l5assets.params import is_param_set_name, validate_param_set_name

    names = {p.stem for p in params_dir.glob("*.json") if is_param_set_name(p.stem)}
    seeds_of: dict[str, set[int]] = {}
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and is_param_set_name(d.name):  # not the cell-validation folder
                names.add(d.name)
                seeds = {int(s.name[5:]) for s in d.glob("seed-*") if s.name[5:].isdigit()}
                if seeds:
                    seeds_of[d.name] = seeds
    if view is not None:
        names |= view.param_sets()
    if param_sets is not None:
        names &= {validate_param_set_name(p) for p in param_sets}
    return names, seeds_of


def _instance_notes(
    assets: Mapping[str, str],
    shared: list[str],
    name: str,
    seed: int | None,
    materialized: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Where the instance and the files on disk disagree."""
    notes = []
    for asset, state in assets.items():
        pk = name if asset in shared else f"{name}|{seed}"
        run = (materialized.get(asset) or {}).get(pk)
        if state == "missing" and run:
            notes.append(f"{asset}: materialized in run {run[:8]} but its files are gone")
        if state != "missing" and not run:
            notes.append(f"{asset}: files on disk but no materialization in the instance")
    return notes


def _row(
    name: str,
    seed: int | None,
    assets: dict[str, str],
    reasons: list[dict[str, Any]],
    notes: list[str],
    error: str | None = None,
) -> dict[str, Any]:
    missing = sorted(a for a, s in assets.items() if s == "missing")
    # an unreadable params file cannot be run: that, not what is on disk, is its state
    state = "invalid" if error else "stale" if reasons else "missing" if missing else "fresh"
    return {
        "param_set": name,
        "seed": seed,
        "state": state,
        "error": error,
        "reasons": reasons,
        "missing": missing,
        "assets": assets,
        "notes": sorted(set(notes)),
    }


def _add_stale_status(
    rows: list[dict[str, Any]], view: InstanceView, shared: list[str], pairs: list[tuple[str, str]]
) -> None:
    """The orchestrator's own stale status per asset ("dagster" field of each row)."""
    try:
        ds = view.stale(pairs)
    except Exception as e:  # noqa: BLE001 - orchestrator internals: report, never fail status
        for row in rows:
            row["notes"].append(f"Dagster stale status unavailable: {e}")
        return
    for row in rows:
        row["dagster"] = {
            a: ds.get((a, row["param_set"] if a in shared else f"{row['param_set']}|{row['seed']}"))
            for a in row["assets"]
        }


def status(
    view: InstanceView | None = None,
    *,
    root: Path | None = None,
    params_dir: Path | None = None,
    code_versions: Mapping[str, str | None] | None = None,
    param_sets: Iterable[str] | None = None,
    with_dagster_status: bool = True,
    shared_assets: Iterable[str] | None = None,
    seed_assets: Iterable[str] | None = None,
    mod_dir: Path | None = None,
    verify: bool = False,
    cache_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """One row per param set x seed: state "invalid" | "missing" | "fresh" | "stale", with
    reasons ("invalid": the params file cannot be loaded; its error is the row's `error`).

    view: the orchestrator (optional; `l5assets.defs.lineage.status.status` passes the Dagster
    instance and definitions): its registered partitions are listed too, its materialization
    records are checked against the files on disk, its asset lists and code versions replace
    the graph's, and (with_dagster_status) its own per-asset stale status is added ("dagster"
    field). root / params_dir default to l5assets.paths. param_sets restricts the listing
    (names are validated: ParamsError). shared_assets / seed_assets override the asset lists.
    mod_dir: the NMODL folder in use now (default l5assets.paths.mechanisms_dir()).
    Every recorded output is checked to exist with its recorded size (kind "outputs");
    `verify` also re-hashes it against its manifest's sha256. cache_dir: the compile cache
    (default l5assets.paths.cache_dir()) whose leftover work folders are listed.

    Row keys: param_set, seed (None if no seed exists for that param set), state, error
    (the params file's one-line error, else None), reasons
    (list of {asset, kind, detail, ...}), missing (assets without a manifest), assets
    ({asset: "missing" | "fresh" | "stale"}), notes (instance vs disk remarks), dagster
    ({asset: Dagster stale status}, only with a view), leftovers (temp folders of killed
    runs in this row's partition folders and in the compile cache).
    """
    root = Path(root) if root else paths.storage_root()
    params_dir = Path(params_dir) if params_dir else paths.params_dir()
    info = view.assets() if view is not None else None
    # without the instance the graph spec gives the same code versions the definitions use
    shared, seeded, cvs = info or (list(G.SHARED_ASSETS), list(G.SEED_ASSETS), G.CODE_VERSIONS)
    cvs = {**cvs, **dict(code_versions or {})}
    shared = list(shared_assets) if shared_assets is not None else shared
    seeded = list(seed_assets) if seed_assets is not None else seeded

    names, seeds_of = _param_set_names(root, params_dir, view, param_sets)
    inst_seeds = view.seeds() if view is not None else set()
    materialized = view.materialized(shared + seeded) if view is not None else {}
    rows: list[dict[str, Any]] = []
    pairs: list[tuple[str, str]] = []
    cache_temps = [str(p) for p in storage.cache_temps(Path(cache_dir or paths.cache_dir()))]
    for name in sorted(names):
        current = _Current(name, params_dir, mod_dir)
        shared_state: dict[str, str] = {}
        shared_reasons: list[dict[str, Any]] = []
        for asset in shared:
            shared_state[asset] = _asset_state(
                root, asset, name, None, current, cvs, shared_reasons, verify
            )
            pairs.append((asset, name))
        for seed in sorted(seeds_of.get(name, set()) | inst_seeds) or [None]:
            assets, reasons = dict(shared_state), list(shared_reasons)
            notes: list[str] = []
            for asset in seeded if seed is not None else []:
                assets[asset] = _asset_state(root, asset, name, seed, current, cvs, reasons, verify)
                pairs.append((asset, f"{name}|{seed}"))
            if view is not None:
                notes += _instance_notes(assets, shared, name, seed, materialized)
            row = _row(name, seed, assets, reasons, notes, current.error)
            row["leftovers"] = _leftovers(root, name, seed, cache_temps)
            rows.append(row)
    if view is not None and with_dagster_status:
        _add_stale_status(rows, view, shared, pairs)
    return rows


def _leftovers(root: Path, name: str, seed: int | None, cache: list[str]) -> list[str]:
    """Temp entries killed runs left in a row's partition folders (and the compile cache)."""
    folders = [Path(root) / name, Path(root) / name / "shared"]
    if seed is not None:
        folders.append(Path(root) / name / f"seed-{seed}")
    found = [str(p) for d in folders for p in storage.killed_temps(d)]
    return sorted(found) + cache


def format_status(rows: Iterable[Mapping[str, Any]], verbose: bool = False) -> str:
    """A table: param set, seed, state, then one indented line per distinct reason."""
    rows = list(rows)
    if not rows:
        return "no param sets found"
    lines = [f"{'param_set':<24} {'seed':>10}  state    detail"]
    for r in rows:
        seed = "-" if r["seed"] is None else str(r["seed"])
        detail = ""
        if r["state"] == "invalid":
            detail = f"params file invalid: {r['error']}"
        elif r["state"] == "missing":
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
        for t in r.get("leftovers") or []:
            lines.append(f"{'':<24} {'':>10}    leftover temp (killed run?): {t}")
        if verbose:
            lines.extend(f"{'':<24} {'':>10}    note: {note}" for note in r.get("notes", []))
            if r.get("missing") and r["state"] != "missing":
                lines.append(f"{'':<24} {'':>10}    missing: {', '.join(r['missing'])}")
    return "\n".join(lines)
