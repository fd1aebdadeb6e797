"""Running protocols in fresh NEURON subprocesses (`python -m l5assets.cell.validation
--worker JSON`, see worker.py) and the whole validation of a cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from l5assets.cell.validation.plots import plot_protocol
from l5assets.cell.validation.protocols import (
    CODE_VERSION,
    CVODE_ATOL,
    DEFAULT_CELL,
    DT,
    FAMILY_PROTOCOLS,
    PROTOCOLS,
    VALIDATION_DL,
    ValidationError,
)
from l5assets.cell.validation.report import _jsonable, evaluate
from l5assets.cell.validation.traces import ProtocolTraces


def resolve_morphology(cell: str, morphology: str | Path | None) -> Path | None:
    """The morphology to use: the given path, else the cell's default; for cells without a
    redistributable default (L5PC_reference) the env var L5ASSETS_REFERENCE_MORPHOLOGY."""
    if morphology is not None:
        p = Path(morphology).expanduser()
        if not p.exists():
            raise ValidationError(f"morphology file not found: {p}")
        return p.resolve()
    try:
        from l5assets.cell.morphology import default_morphology

        return Path(default_morphology(cell))
    except Exception as exc:  # noqa: BLE001 - any failure means: no default for this cell
        env = os.environ.get("L5ASSETS_REFERENCE_MORPHOLOGY")
        if env:
            return resolve_morphology(cell, env)
        raise ValidationError(
            f"cell '{cell}' has no default morphology ({exc}); pass --morphology PATH or set "
            "L5ASSETS_REFERENCE_MORPHOLOGY"
        ) from exc


def _cell_names() -> list[str]:
    from l5assets import paths

    return sorted(p.stem for p in paths.cells_dir().glob("*.json"))


# Cost weights (simulated ms; fixed-step protocols are cheaper per ms than CVode through spikes)
def _cost(name: str, n_sweeps: int | None = None) -> float:
    p = PROTOCOLS[name]
    n = len(p.sweeps) if n_sweeps is None else n_sweeps
    per_ms = 0.35 if p.fixed_dt else 1.0
    return (p.lead_in + n * (p.tstop - p.lead_in)) * per_ms


def plan_units(names: Sequence[str], workers: int) -> list[list[tuple[str, list[int]]]]:
    """Split protocols into work units (a protocol's sweeps, or a chunk of them) and spread them
    over `workers` groups, longest first, so that the groups' simulated time is balanced."""
    total = sum(_cost(n) for n in names)
    target = total / max(1, workers)
    units: list[tuple[str, list[int]]] = []
    for n in names:
        k = len(PROTOCOLS[n].sweeps)
        chunks = 1 if workers <= 1 else min(k, max(1, round(_cost(n) / target * 2)))
        idx = list(range(k))
        for c in range(chunks):
            units.append((n, idx[c::chunks]))
    groups: list[list[tuple[str, list[int]]]] = [
        [] for _ in range(max(1, min(workers, len(units))))
    ]
    loads = [0.0] * len(groups)
    for u in sorted(units, key=lambda u: _cost(u[0], len(u[1])), reverse=True):
        g = loads.index(min(loads))
        groups[g].append(u)
        loads[g] += _cost(u[0], len(u[1]))
    return groups


def _merge(name: str, parts: list[tuple[list[int], ProtocolTraces]]) -> ProtocolTraces:
    """One protocol's traces from its units, sweeps back in protocol order."""
    import numpy as np

    order = sorted((i, tr, j) for idx, tr in parts for j, i in enumerate(idx))
    first = parts[0][1]
    data = np.stack([tr.data[j] for _, tr, j in order])
    info = {site: dict(v) for site, v in first.site_info.items()}
    # per-sweep entries (the calibrated train pulses) come from every unit
    pulses: dict[str, Any] = {}
    for _, tr in parts:
        pulses.update(tr.site_info.get("soma", {}).get("pulse_nA") or {})
    if pulses:
        info.setdefault("soma", {})["pulse_nA"] = pulses
    merged = ProtocolTraces(
        name,
        first.dt,
        [PROTOCOLS[name].sweeps[i].name for i, _, _ in order],
        first.sites,
        data,
        info,
    )
    merged.runtime_s = sum(tr.runtime_s for _, tr in parts)
    return merged


def run_protocols(
    cell: str,
    morphology: str | Path | None,
    protocols: Iterable[str],
    *,
    workers: int | None = None,
    timeout_s: float = 3600.0,
    mod_dir: Path | None = None,
    cache_root: Path | None = None,
    cvode: bool = True,
    savestate: bool = True,
    atol: float | None = None,
    dt: float = DT,
    dL: float = VALIDATION_DL,
) -> dict[str, ProtocolTraces]:
    """Simulate protocols in fresh NEURON subprocesses (the cell is built once per process).

    The protocols' sweeps are spread over `workers` processes running at once (default: one
    per core). `cvode` (default) integrates with NEURON's variable step (as BluePyOpt and Hay
    did) and resamples onto a 0.025 ms grid; `cvode=False` uses fixed steps of 0.025 ms (a
    protocol with its own fixed step, ref_fi, always uses that). `savestate` simulates each
    protocol's stimulus-free lead-in once and restores it for every sweep.
    """
    names = list(dict.fromkeys(protocols))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise ValidationError(f"unknown protocol(s) {unknown}; known: {list(PROTOCOLS)}")
    known_cells = _cell_names()
    if known_cells and cell not in known_cells:
        raise ValidationError(f"unknown cell '{cell}'; known: {known_cells}")
    morph = resolve_morphology(cell, morphology)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    groups = plan_units(names, n_workers)
    parts: dict[str, list[tuple[list[int], ProtocolTraces]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="l5val-") as tmp:
        running: list[tuple[list[tuple[str, list[int]]], subprocess.Popen[bytes], Path]] = []
        try:
            for k, group in enumerate(groups):
                out = Path(tmp) / f"worker{k}"
                out.mkdir()
                req = {
                    "cell": cell,
                    "morphology": None if morph is None else str(morph),
                    "units": group,
                    "out": str(out),
                    "cvode": cvode,
                    "no_savestate": not savestate,
                    "dt": dt,
                    "dL": dL,
                    "atol": CVODE_ATOL if atol is None else atol,
                    "mod_dir": None if mod_dir is None else str(mod_dir),
                    "cache_root": None if cache_root is None else str(cache_root),
                }
                cmd = [
                    sys.executable,
                    "-m",
                    "l5assets.cell.validation",
                    "--worker",
                    json.dumps(req),
                ]
                with open(out / "worker.log", "wb") as log:
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                running.append((group, proc, out))
            t0 = time.monotonic()
            for group, proc, out in running:
                label = sorted({n for n, _ in group})
                try:
                    rc = proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
                except subprocess.TimeoutExpired as exc:
                    raise ValidationError(
                        f"protocols {label} timed out after {timeout_s} s"
                    ) from exc
                if rc != 0:
                    tail = (out / "worker.log").read_text(errors="replace")[-4000:]
                    raise ValidationError(f"protocols {label} failed (exit {rc}):\n{tail}")
                runtimes = json.loads((out / "runtime.json").read_text())
                for u, (name, idx) in enumerate(group):
                    tr = ProtocolTraces.load(out / f"unit{u}", name)
                    tr.runtime_s = float(runtimes[f"unit{u}"])
                    tr.site_info = {**tr.site_info}
                    parts[name].append((idx, tr))
        finally:
            for _, proc, _ in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return {n: _merge(n, parts[n]) for n in names}


def validate_cell(
    cell: str = DEFAULT_CELL,
    morphology: str | Path | None = None,
    protocols: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    out_dir: str | Path | None = None,
    dL: float = VALIDATION_DL,
) -> dict[str, Any]:
    """Run the validation protocols on a cell and judge every feature against its target.

    `protocols` defaults to the cell's target family's protocols (FAMILY_PROTOCOLS); they run
    spread over `workers` processes (default one per core). With `out_dir`, traces (.npy +
    .json), one PNG plot per protocol and `validation.json` are written there. Returns a
    JSON-able dict: cell, morphology, protocols, features (one row per target: value, target,
    mean, sd, lower, upper, passed, gating, ...), measures per protocol, passed (all gating
    rows), runtime_s, plots (paths, if out_dir).
    """
    from l5assets.cell.biophysics import load_biophysics

    spec = load_biophysics(cell).validation
    names = list(protocols) if protocols else list(FAMILY_PROTOCOLS[spec.targets])
    t0 = time.monotonic()
    morph = resolve_morphology(cell, morphology)
    traces = run_protocols(cell, morph, names, workers=workers, dL=dL)
    result: dict[str, Any] = {
        "cell": cell,
        "morphology": None if morph is None else str(morph),
        "protocols": names,
        "features": [],
        "measures": {},
        "sites": {},
        "runtime_s": {},
        "code_version": CODE_VERSION,
        "targets": spec.targets,
        "site_rule": spec.sites,
        "dL": dL,
    }
    plots: dict[str, str] = {}
    for name in names:
        ev = evaluate(traces[name], spec.targets, spec.informational)
        result["features"].extend(ev["features"])
        result["measures"][name] = ev["measures"]
        result["sites"][name] = ev["sites"]
        result["runtime_s"][name] = round(traces[name].runtime_s, 2)
        if out_dir is not None:
            folder = Path(out_dir)
            traces[name].save(folder)
            plots[name] = str(plot_protocol(traces[name], ev, folder / f"{name}.png"))
    result["passed"] = all(r["passed"] for r in result["features"] if r["gating"])
    result["wall_time_s"] = round(time.monotonic() - t0, 2)
    if out_dir is not None:
        from l5assets.storage import atomic_write_text

        result["plots"] = plots
        atomic_write_text(
            Path(out_dir) / "validation.json",
            json.dumps(_jsonable(result), indent=2, sort_keys=True) + "\n",
        )
    return _jsonable(result)
