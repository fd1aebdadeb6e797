"""Checks run by `l5assets run` before anything is written or recorded.

Everything a run needs that a user can get wrong is checked here, each failure one line naming
the field or path and what is allowed (`PreflightError`, a `ParamsError`):

- the param set: a *name* (a file stem in the params folder), its values, the seeds;
- the cell: the biophysics file parses and inserts only mechanisms that the NMODL folder
  defines (or NEURON's built-ins), and the morphology is readable by NEURON (loaded with
  Import3d in a short subprocess: a garbage file can crash or hang NEURON itself; a file
  that passed once is recorded in the compile cache by its sha256, suffix, the check's
  version and NEURON's, and skips that subprocess next time);
- the folders: `DAGSTER_HOME` is (or can be created as) a writable folder whose dagster.yaml,
  if any, is a YAML mapping; the storage root and the compile cache are (or can be created
  as) writable folders on an ordinary file system (not /proc, /sys or /dev).

Nothing here creates a file or folder (the run records a passed morphology afterwards,
`record_morphology_ok`). No Dagster import.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from l5assets import paths
from l5assets.params import ParamsError, ParamSet, load_param_set, validate_seed

# NEURON's built-in density mechanisms a biophysics file may insert without a .mod file.
BUILTIN_MECHANISMS = frozenset({"pas", "hh", "extracellular", "fastpas"})
# Kernel file systems: nothing can be stored there.
PSEUDO_FS = (Path("/proc"), Path("/sys"), Path("/dev"))
MORPHOLOGY_TIMEOUT_S = 120.0
_SUFFIX_RE = re.compile(r"^\s*(?:SUFFIX|POINT_PROCESS|ARTIFICIAL_CELL)\s+(\w+)", re.MULTILINE)

_MORPH_SCRIPT = """
import sys
from pathlib import Path
from l5assets.cell.morphology import import_morphology
class Owner:
    pass
try:
    found = import_morphology(Path(sys.argv[1]), Owner())
except Exception as e:
    print("L5ERR", type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "", flush=True)
    sys.exit(3)
print("L5OK", sum(len(v) for v in found.values()), flush=True)
"""


class PreflightError(ParamsError):
    """A run cannot start: the message names the field or path and what is allowed."""


@dataclass(frozen=True)
class Preflight:
    """What a run will use, all checked."""

    params: ParamSet
    seeds: list[int]
    dagster_home: Path
    storage_root: Path
    cache_dir: Path
    morphology: Path | None
    morphology_sha256: str | None = None
    morphology_checked: bool = False  # NEURON read it just now (not from the record)


# --------------------------------------------------------------------------------------------
# folders


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _on_pseudo_fs(path: Path) -> Path | None:
    for fs in PSEUDO_FS:
        if path == fs or fs in path.parents:
            return fs
    return None


def check_folder(path: Path, what: str) -> Path:
    """`path` is a folder we can create files in, or can be created (nothing is created)."""
    raw = str(path)
    if "\0" in raw:
        raise PreflightError(f"{what} {raw!r}: contains a NUL byte")
    p = Path(os.path.abspath(os.path.expanduser(raw)))
    fs = _on_pseudo_fs(p)
    if fs is not None:
        raise PreflightError(f"{what} {p}: under {fs} (a kernel file system); choose a folder")
    too_long = [part for part in p.parts if len(part.encode()) > 255]
    if too_long:
        raise PreflightError(f"{what} {p}: a path component is longer than 255 bytes")
    if p.exists() and not p.is_dir():
        raise PreflightError(f"{what} {p}: is a file, not a folder; give a folder (or a new path)")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise PreflightError(f"{what} {p}: {base} is a file, so the folder cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        state = "is not writable" if base == p else f"cannot be created ({base} is not writable)"
        raise PreflightError(f"{what} {p}: {state}")
    return p


def check_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME: a writable folder (or creatable); its dagster.yaml, if any, a mapping."""
    p = check_folder(home, "DAGSTER_HOME")
    cfg = p / "dagster.yaml"
    if cfg.exists() or cfg.is_symlink():
        if not cfg.is_file():
            raise PreflightError(f"DAGSTER_HOME {p}: dagster.yaml is not a file")
        import yaml

        try:
            data = yaml.safe_load(cfg.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PreflightError(
                f"DAGSTER_HOME {p}: dagster.yaml is not valid YAML ({first})"
            ) from None
        if data is not None and not isinstance(data, dict):
            raise PreflightError(
                f"DAGSTER_HOME {p}: dagster.yaml must be a YAML mapping (or empty), "
                f"got {type(data).__name__}"
            )
    for name in ("history", "storage", "schedules"):
        sub = p / name
        if sub.exists() and not sub.is_dir():
            raise PreflightError(f"DAGSTER_HOME {p}: {name} is a file, not Dagster's folder")
    return p


# --------------------------------------------------------------------------------------------
# cell


def mod_suffixes(mod_dir: Path) -> set[str]:
    """Mechanism names (SUFFIX / POINT_PROCESS) defined by the .mod files of a folder."""
    names: set[str] = set()
    for f in sorted(Path(mod_dir).glob("*.mod")):
        names.update(_SUFFIX_RE.findall(f.read_text(errors="replace")))
    return names


def check_biophysics(params: ParamSet, mod_dir: Path | None = None) -> None:
    """The biophysics file parses and inserts only mechanisms the NMODL folder defines."""
    from l5assets.cell.biophysics import BiophysicsError, load_biophysics

    try:
        bio = load_biophysics(params.biophysics)
    except BiophysicsError as e:
        raise PreflightError(f"params field 'cell.biophysics': {e}") from None
    mods = Path(mod_dir or paths.mechanisms_dir())
    known = mod_suffixes(mods) | BUILTIN_MECHANISMS
    unknown = [m for m in bio.mechanism_names() if m not in known]
    if unknown:
        raise PreflightError(
            f"params field 'cell.biophysics': {bio.name} inserts {unknown}, which no .mod file "
            f"in {mods} defines; allowed: {sorted(known)}"
        )


def morphology_path(params: ParamSet) -> Path | None:
    """The morphology the param set uses (its own path, else the cell's packaged default)."""
    if params.morphology:
        return Path(params.morphology)
    from l5assets.components import ComponentError, packaged_morphology

    try:
        return packaged_morphology(params.biophysics)
    except (ComponentError, ValueError, KeyError) as e:
        raise PreflightError(f"params field 'cell.morphology': {e}") from None


def check_morphology(path: Path, python: str | None = None) -> None:
    """NEURON can load the morphology (Import3d in a subprocess, with a timeout)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NEURON_MODULE_OPTIONS="-nogui")
    try:
        proc = subprocess.run(
            [python or sys.executable, "-c", _MORPH_SCRIPT, str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=MORPHOLOGY_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise PreflightError(
            f"params field 'cell.morphology': NEURON did not finish reading {path} in "
            f"{MORPHOLOGY_TIMEOUT_S:.0f} s; give a Neurolucida .asc or SWC file"
        ) from None
    ok = [line for line in proc.stdout.splitlines() if line.startswith("L5OK")]
    if proc.returncode == 0 and ok and int(ok[-1].split()[1]) > 0:
        return
    err = [line for line in proc.stdout.splitlines() if line.startswith("L5ERR")]
    reason = err[-1].split(" ", 2)[-1] if err else f"NEURON exited with code {proc.returncode}"
    if "has no attribute 'all'" in reason or "hoc_execerror" in reason:
        reason = "Import3d found no sections"
    raise PreflightError(
        f"params field 'cell.morphology': NEURON cannot read {path} ({reason[:160]}); "
        "give a Neurolucida .asc or SWC reconstruction with a soma"
    )


MORPHOLOGY_RECORDS = "morphology-ok"  # folder in the compile cache
MORPHOLOGY_CHECK_VERSION = "1"  # bump when the check (_MORPH_SCRIPT, import_morphology) changes


def morphology_digest(path: Path) -> str:
    """sha256 of the morphology file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _morphology_record(path: Path, digest: str, cache_dir: Path) -> Path:
    """Where a passed check of `path` is recorded: its bytes, its suffix (Import3d's reader is
    chosen by it), the check's version and NEURON's (any change reads it again)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        nrn = version("neuron")
    except PackageNotFoundError:
        nrn = "none"
    suffix = Path(path).suffix.lower().lstrip(".") or "none"
    name = f"{digest}-{suffix}-check{MORPHOLOGY_CHECK_VERSION}-neuron-{nrn}"
    return Path(cache_dir) / MORPHOLOGY_RECORDS / name


def morphology_known_ok(path: Path, digest: str, cache_dir: Path) -> bool:
    """NEURON read a file with these very bytes and suffix in an earlier run."""
    return _morphology_record(path, digest, cache_dir).is_file()


def record_morphology_ok(pf: Preflight) -> None:
    """After a run's preflight: record that NEURON read its morphology (the bytes hashed
    before NEURON read them; best effort: it is only a cache)."""
    if pf.morphology is None or pf.morphology_sha256 is None or not pf.morphology_checked:
        return
    try:
        rec = _morphology_record(pf.morphology, pf.morphology_sha256, pf.cache_dir)
        rec.parent.mkdir(parents=True, exist_ok=True)
        rec.write_text(f"{pf.morphology}\n")
    except OSError:
        pass  # the next run checks again


# --------------------------------------------------------------------------------------------
# the whole run


def check_param_set_arg(value: str, params_dir: Path) -> str:
    """`--param-set` takes a name only (a file stem in the params folder), never a path."""
    if "/" in value or os.sep in value or value.endswith(".json"):
        p = Path(value)
        raise PreflightError(
            f"--param-set {value!r}: give a param set name (a file stem in {params_dir}), "
            f"not a path; copy the file there (cp {value} {params_dir}/{p.stem}.json) or pass "
            f"--params-dir {p.parent}"
        )
    return value


def preflight(
    param_set: str,
    seeds: Sequence[int | str],
    *,
    dagster_home: Path,
    storage_root: Path,
    cache_dir: Path | None = None,
    params_dir: Path | None = None,
    mod_dir: Path | None = None,
    check_neuron: bool = True,
) -> Preflight:
    """Every check of a run, cheapest first; raises PreflightError / ParamsError (one line)."""
    pdir = Path(params_dir or paths.params_dir())
    check_param_set_arg(param_set, pdir)
    if not pdir.is_dir():
        raise PreflightError(f"params folder {pdir}: not a folder (L5ASSETS_PARAMS_DIR)")
    seed_list = list(dict.fromkeys(validate_seed(s) for s in seeds))
    if not seed_list:
        raise PreflightError("--seed: give at least one integer seed")
    try:
        params = load_param_set(param_set, pdir)
    except ParamsError:
        raise
    except (OSError, UnicodeDecodeError, RecursionError, TypeError, AttributeError) as e:
        what = "too deeply nested" if isinstance(e, RecursionError) else type(e).__name__
        raise PreflightError(
            f"param set {param_set!r}: {pdir / (param_set + '.json')} cannot be read as a "
            f"params JSON object ({what}: {' '.join(str(e).split())[:120]})"
        ) from None
    home = check_dagster_home(dagster_home)
    root = check_folder(storage_root, "storage root (--storage-root / L5ASSETS_STORAGE_ROOT)")
    cache = check_folder(cache_dir or paths.cache_dir(), "mechanism cache (L5ASSETS_CACHE_DIR)")
    check_biophysics(params, mod_dir)
    morph = morphology_path(params)
    checked, digest = False, None
    if check_neuron and morph is not None:
        try:
            digest = morphology_digest(morph)
        except OSError as e:
            raise PreflightError(
                f"params field 'cell.morphology': cannot read {morph} ({e.strerror or e})"
            ) from None
        if not morphology_known_ok(morph, digest, cache):
            check_morphology(morph)
            checked = True
    return Preflight(params, seed_list, home, root, cache, morph, digest, checked)


def check_engine(name: str, what: str) -> str:
    """A simulation engine name: one of the runner's engines."""
    from l5assets.simulation.runner import ENGINES

    if name not in ENGINES:
        raise PreflightError(f"{what}: {name!r} is not an engine, allowed: {', '.join(ENGINES)}")
    return name
