"""Trace an output file back to the params file and seed that produced it, offline.

Starting from any output (a file, an asset folder or a manifest), follow the manifests'
recorded inputs upstream until no manifest is left: the result names every asset in the chain
with its code version and partition, the params (name, content hash, file) and the seed, and
checks on the way that each recorded file still has the recorded content.
No Dagster instance is needed: everything comes from the manifest files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from l5assets.lineage.manifest import (
    file_record,
    find_manifest,
    manifest_digest,
    params_file_content_hash,
    read_manifest,
    resolve_recorded_path,
)


class TraceError(FileNotFoundError):
    """No manifest describes the path given to `trace`."""


def _current_sha(path: Path | None, kind: str | None) -> str | None:
    """Content hash of a recorded file or folder as it is now (same recipe as when written)."""
    if path is None or not path.exists():
        return None
    return file_record(path).get("sha256")


def _node(manifest_path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """One step of the chain: an asset materialization as its manifest records it."""
    params = data.get("params") or {}
    return {
        "asset": data.get("asset"),
        "manifest": str(manifest_path),
        "digest": manifest_digest(data),
        "param_set": params.get("name"),
        "params_hash": params.get("hash"),
        "seed": data.get("seed"),
        "code_version": data.get("code_version"),
        "git_commit": (data.get("code") or {}).get("git_commit"),
        "package_version": (data.get("code") or {}).get("package_version"),
        "written_at": (data.get("run") or {}).get("written_at"),
        "host": (data.get("run") or {}).get("host"),
        "inputs": [],
    }


def _queried_output(
    top: Mapping[str, Any], start: Path, query: Path, problems: list[str]
) -> dict[str, Any] | None:
    """The recorded output that is (or contains) the queried path: recorded vs current hash
    (a change is reported by `check_outputs`)."""
    for rec in top.get("outputs", []):
        op = resolve_recorded_path(rec, start.parent)
        if op is not None and (op == query or op in query.parents):
            now = _current_sha(op, rec.get("kind"))
            output = {
                "path": str(op),
                "sha256_recorded": rec.get("sha256"),
                "sha256_now": now,
                "matches": now == rec.get("sha256"),
            }
            return output
    return None


def check_outputs(
    data: Mapping[str, Any],
    mpath: Path,
    problems: list[str],
    fallbacks: list[str] | None = None,
    *,
    verify: bool = True,
) -> list[dict[str, Any]]:
    """Every output a manifest records, as it is now: gone, resized, or (verify) a different
    sha256 is a problem (appended to `problems`). Returns one record per output."""
    out = []
    asset = data.get("asset")
    for rec in data.get("outputs", []):
        op = resolve_recorded_path(rec, mpath.parent, fallbacks)
        entry: dict[str, Any] = {
            "path": str(op) if op else rec.get("path"),
            "bytes_recorded": rec.get("bytes"),
            "sha256_recorded": rec.get("sha256"),
        }
        if op is None or not op.exists():
            entry.update(state="gone")
            problems.append(f"output {rec.get('relpath') or rec.get('path')} of {asset} is gone")
            out.append(entry)
            continue
        now = file_record(op) if verify else _size_record(op)
        entry.update(bytes_now=now.get("bytes"), sha256_now=now.get("sha256"))
        if rec.get("bytes") is not None and now.get("bytes") != rec.get("bytes"):
            entry["state"] = "resized"
            problems.append(
                f"output {op} of {asset} has {now.get('bytes')} bytes, its manifest says "
                f"{rec.get('bytes')}"
            )
        elif verify and now.get("sha256") != rec.get("sha256"):
            entry["state"] = "changed"
            problems.append(
                f"output {op} of {asset} changed after it was written (sha256 now "
                f"{str(now.get('sha256'))[:12]}, manifest says {str(rec.get('sha256'))[:12]})"
            )
        else:
            entry["state"] = "ok" if verify else "size ok"
        out.append(entry)
    return out


def _size_record(p: Path) -> dict[str, Any]:
    """Byte count of a file or folder (as `file_record` counts it), without hashing."""
    if p.is_dir():
        files = [
            f
            for f in p.rglob("*")
            if f.is_file() and not f.name.startswith(".") and f.name != "manifest.json"
        ]
        return {"bytes": sum(f.stat().st_size for f in files)}
    return {"bytes": p.stat().st_size}


def _traced_input(
    name: str,
    rec: Mapping[str, Any],
    mpath: Path,
    asset: str,
    problems: list[str],
    notes: list[str],
    fallbacks: list[str] | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """One input of a chain node (recorded vs current hash) and its upstream manifest's path
    (None if it has none or it is gone)."""
    ip = resolve_recorded_path(rec, mpath.parent, fallbacks)
    now = _current_sha(ip, rec.get("kind"))
    inp: dict[str, Any] = {
        "name": name,
        "path": str(ip) if ip else rec.get("path"),
        "sha256_recorded": rec.get("sha256"),
        "sha256_now": now,
        "matches": now == rec.get("sha256"),
        "from_manifest": None,
        "from_asset": None,
    }
    if not inp["matches"]:
        what = "is gone" if now is None else "has changed since (re-materialized?)"
        problems.append(f"input {name!r} of {asset} ({inp['path']}) {what}")
    up = rec.get("manifest")
    if not up:
        return inp, None
    upath = resolve_recorded_path(up, mpath.parent, fallbacks)
    if upath is None or not upath.is_file():
        problems.append(f"manifest of input {name!r} of {asset} is gone")
        return inp, None
    inp["from_manifest"] = str(upath)
    inp["from_asset"] = up.get("asset")
    later = up.get("digest") and manifest_digest(read_manifest(upath)) != up["digest"]
    if inp["matches"] and later:
        # same bytes, but the manifest now describes a later materialization
        notes.append(
            f"upstream {up.get('asset')} was re-materialized (same content) "
            f"after {asset} read it; its manifest is the later one"
        )
    return inp, upath


def trace(path: str | Path) -> dict[str, Any]:
    """Walk from an output back through the manifests to its params file and seed.

    Returns a JSON-able dict:
      query, manifest (of the output), output (the queried file: recorded vs current sha256),
      chain (one node per asset, output first, upstream after; each node lists its inputs with
      path, recorded/current sha256 and the upstream manifest it came from), params (name,
      content hash, values, file path, whether the file on disk still holds these params),
      seed, stage_seeds, code_versions (every asset in the chain), problems (list of strings:
      anything that no longer matches), notes (harmless remarks), consistent (no problems).
    Raises TraceError if no manifest describes `path`.
    """
    query = Path(path).resolve()
    start = find_manifest(query)
    if start is None:
        raise TraceError(f"no manifest.json describes {query} (is it an l5assets output?)")
    problems: list[str] = []
    notes: list[str] = []
    fallbacks: list[str] = []
    top = read_manifest(start)

    output = _queried_output(top, start, query, problems)

    chain: list[dict[str, Any]] = []
    seen: dict[Path, int] = {}
    todo: list[Path] = [start]
    params_sec: dict[str, Any] | None = None
    seed = top.get("seed")
    stage_seeds = top.get("stage_seeds") or {}
    code_versions: dict[str, Any] = {}
    while todo:
        mpath = todo.pop(0)
        if mpath in seen:
            continue
        data = top if mpath == start else read_manifest(mpath)
        node = _node(mpath, data)
        node["outputs"] = check_outputs(data, mpath, problems, fallbacks)
        seen[mpath] = len(chain)
        chain.append(node)
        code_versions.setdefault(data.get("asset"), data.get("code_version"))
        if params_sec is None and data.get("params"):
            params_sec = data["params"]
        if seed is None and data.get("seed") is not None:
            seed, stage_seeds = data["seed"], data.get("stage_seeds") or {}
        if (data.get("params") or {}).get("hash") not in (None, (params_sec or {}).get("hash")):
            problems.append(
                f"{node['asset']} was made from params hash {data['params']['hash'][:12]}, "
                f"not {params_sec['hash'][:12]} like the rest of the chain"  # type: ignore[index]
            )
        for name, rec in sorted((data.get("inputs") or {}).items()):
            inp, upath = _traced_input(name, rec, mpath, node["asset"], problems, notes, fallbacks)
            if upath is not None and upath not in seen:
                todo.append(upath)
            node["inputs"].append(inp)

    params_out: dict[str, Any] | None = None
    if params_sec is not None:
        frec = params_sec.get("file") or {}
        fpath = Path(frec["path"]) if frec.get("path") else None
        now_hash = params_file_content_hash(fpath) if fpath else None
        params_out = {
            "name": params_sec.get("name"),
            "hash": params_sec.get("hash"),
            "values": params_sec.get("values"),
            "counts": params_sec.get("counts"),
            "file": str(fpath) if fpath else None,
            "file_sha256_recorded": frec.get("sha256"),
            "file_hash_now": now_hash,
            "file_matches": now_hash == params_sec.get("hash"),
        }
        if now_hash is None:
            problems.append(f"params file {fpath} is gone or unreadable")
        elif now_hash != params_sec.get("hash"):
            problems.append(f"params file {fpath} has been edited since (hash now {now_hash[:12]})")

    return {
        "query": str(query),
        "manifest": str(start),
        "asset": top.get("asset"),
        "output": output,
        "chain": chain,
        "params": params_out,
        "seed": seed,
        "stage_seeds": stage_seeds,
        "code_versions": code_versions,
        "code": top.get("code"),
        "versions": top.get("versions"),
        "components": top.get("components"),
        "engine": top.get("engine"),
        "problems": problems,
        "notes": notes + [f"path fallback: {x}" for x in dict.fromkeys(fallbacks)],
        "fallbacks": list(dict.fromkeys(fallbacks)),
        "consistent": not problems,
    }


def _short(h: Any) -> str:
    return str(h)[:12] if h else "-"


def format_trace(d: Mapping[str, Any]) -> str:
    """Human-readable chain: the output, each asset upstream of it, then params and seed."""
    lines: list[str] = []
    out = d.get("output")
    lines.append(f"{d['query']}")
    if out:
        state = "matches its manifest" if out["matches"] else "CHANGED since written"
        lines.append(f"  sha256 {_short(out['sha256_now'])}  ({state})")
    chain = d.get("chain") or []
    by_manifest = {n["manifest"]: n for n in chain}
    printed: set[str] = set()

    def walk(node: Mapping[str, Any], depth: int, via: str | None) -> None:
        pad = "  " * depth
        part = node.get("param_set")
        if node.get("seed") is not None:
            part = f"{part} / seed {node['seed']}"
        label = f"{pad}<- {node['asset']}" + (f" (as {via})" if via else "")
        lines.append(f"{label}  [{part}]  code_version {node.get('code_version')}")
        if node["manifest"] in printed:
            lines.append(f"{pad}   (see above)")
            return
        printed.add(node["manifest"])
        lines.append(f"{pad}   manifest {node['manifest']}")
        for inp in node.get("inputs", []):
            flag = "" if inp["matches"] else "  CHANGED"
            lines.append(
                f"{pad}   reads {inp['name']}: {inp['path']} "
                f"sha256 {_short(inp['sha256_recorded'])}{flag}"
            )
        for inp in node.get("inputs", []):
            up = by_manifest.get(inp.get("from_manifest"))
            if up is not None:
                walk(up, depth + 1, inp["name"])

    if chain:
        walk(chain[0], 1, None)
    p = d.get("params")
    if p:
        state = "unchanged" if p["file_matches"] else "EDITED SINCE"
        lines.append(f"params: {p['name']}  hash {_short(p['hash'])}  file {p['file']} ({state})")
    seeds = d.get("stage_seeds") or {}
    lines.append(
        f"seed: {d.get('seed')}"
        + (
            ("  stage seeds: " + ", ".join(f"{k}={v}" for k, v in sorted(seeds.items())))
            if seeds
            else ""
        )
    )
    cvs = d.get("code_versions") or {}
    code = d.get("code") or {}
    lines.append(
        f"code: git {code.get('git_commit') or '(no commit)'}"
        f"{' (dirty)' if code.get('git_dirty') else ''}, package "
        f"{code.get('package_version')}; code versions: "
        + ", ".join(f"{k}={v}" for k, v in sorted(cvs.items(), key=lambda kv: str(kv[0])))
    )
    comps = d.get("components") or {}
    if comps:
        lines.append(
            "components: mechanisms "
            + _short((comps.get("mechanisms") or {}).get("sha256"))
            + ", biophysics "
            + _short((comps.get("biophysics") or {}).get("sha256"))
            + ", morphology "
            + _short((comps.get("morphology") or {}).get("sha256"))
        )
        syn = comps.get("synaptic_models") or {}
        if syn:
            files = syn.get("files") or {}
            lines.append(
                f"synaptic models: {_short(syn.get('sha256'))}"
                + (" (" + ", ".join(f"{k} {_short(v)}" for k, v in sorted(files.items())) + ")")
                * bool(files)
            )
    vers = d.get("versions") or {}
    if vers:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())))
    if d.get("engine"):
        lines.append("engine: " + ", ".join(f"{k}={v}" for k, v in sorted(d["engine"].items())))
    lines.extend(f"note: {x}" for x in d.get("notes") or [])
    if d.get("problems"):
        lines.append("PROBLEMS:")
        lines.extend(f"  - {x}" for x in d["problems"])
    else:
        lines.append("consistent: every recorded file still matches its manifest")
    return "\n".join(lines)
