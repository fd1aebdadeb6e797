"""Model components that live outside the repository: installed packages and the files they
ship (the default cell's morphology inside the `bluepyopt` wheel). Knows only `paths`, so the
params, lineage and cell layers can all use it without importing each other."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from l5assets import paths


class ComponentError(ValueError):
    """A component (package, biophysics file, packaged morphology) cannot be found; `about`
    says which: "biophysics" (the file itself) or "morphology"."""

    def __init__(self, message: str, about: str = "morphology") -> None:
        super().__init__(message)
        self.about = about


def package_dir(package: str) -> Path:
    """Folder of an installed package, without importing it (bluepyopt imports are slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ComponentError(f"package {package!r} is not installed (pip install {package})")
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_file(name: str, package: str, rel_path: str) -> Path:
    """A file shipped inside an installed package (`name`: whose file it is, for messages)."""
    path = package_dir(package) / rel_path
    if not path.is_file():
        raise ComponentError(
            f"default morphology of {name!r} not found in package {package!r}: {path}"
        )
    return path


def packaged_morphology(cell: str) -> Path:
    """The packaged default morphology a biophysics file (by cell name) names."""
    bio = paths.cells_dir() / f"{cell}.json"
    if not bio.is_file():
        available = sorted(p.stem for p in paths.cells_dir().glob("*.json"))
        raise ComponentError(f"unknown biophysics {cell!r}; available: {available}", "biophysics")
    try:
        data = json.loads(bio.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ComponentError(f"biophysics file {bio}: unreadable ({e})", "biophysics") from None
    dm = data.get("default_morphology") if isinstance(data, dict) else None
    if not dm:
        raise ComponentError(
            f"biophysics {cell!r} has no default morphology: give a morphology path "
            "(param set field 'cell.morphology', e.g. your copy of Hay's cell1.asc)"
        )
    if not isinstance(dm, dict) or not {"package", "path"} <= set(dm):
        raise ComponentError(
            f"biophysics {cell!r} field 'default_morphology': needs 'package' and 'path'",
            "biophysics",
        )
    return packaged_file(cell, dm["package"], dm["path"])
