"""Morphologies: locate the default one in an installed package; load SWC / Neurolucida ASC.

Morphology files are not ours and are never committed: the default cell's morphology
(C060114A7.asc) ships inside the `bluepyopt` wheel and is found there at run time; any other
morphology is a user path. Loading uses NEURON's Import3d into the sections of our own Python
cell object (no hoc template), so several cells can coexist in one process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from l5assets import components
from l5assets.cell.biophysics import DEFAULT_CELL, Biophysics, load_biophysics

MORPHOLOGY_SUFFIXES = (".asc", ".swc")
SECTION_TYPES = ("soma", "axon", "dend", "apic")


class MorphologyError(ValueError):
    """A morphology cannot be found or read."""


def package_dir(package: str) -> Path:
    """Folder of an installed package, without importing it (bluepyopt imports are slow)."""
    try:
        return components.package_dir(package)
    except components.ComponentError as e:
        raise MorphologyError(str(e)) from None


def default_morphology(biophysics: str | Path | Biophysics = DEFAULT_CELL) -> Path:
    """The morphology a biophysics file names as its default, inside an installed package."""
    bio = load_biophysics(biophysics)
    dm = bio.default_morphology
    if dm is None:
        raise MorphologyError(
            f"biophysics {bio.name!r} has no default morphology: give a morphology path "
            "(param set field 'cell.morphology', e.g. your copy of Hay's cell1.asc)"
        )
    try:
        return components.packaged_file(bio.name, dm["package"], dm["path"])
    except components.ComponentError as e:
        raise MorphologyError(str(e)) from None


def resolve_morphology(biophysics: str | Path | Biophysics, morphology: str | Path | None) -> Path:
    """The morphology file to use: the given path, or the biophysics file's default."""
    if morphology is None or str(morphology).strip() in ("", "None", "none", "null", "NULL"):
        return default_morphology(biophysics)
    p = Path(morphology).expanduser()
    if not p.is_file():
        raise MorphologyError(f"morphology file not found: {p}")
    if p.suffix.lower() not in MORPHOLOGY_SUFFIXES:
        raise MorphologyError(f"morphology must be .asc (Neurolucida) or .swc, got {p.name}")
    return p.resolve()


def _ensure_import3d() -> Any:
    from neuron import h

    if not hasattr(h, "Import3d_GUI"):
        h.load_file("stdlib.hoc")
        h.load_file("import3d.hoc")
    return h


def import_morphology(path: Path, owner: object) -> dict[str, list]:
    """Instantiate the morphology's sections inside `owner` (a Python object).

    Import3d creates lists `owner.soma`, `owner.axon`, `owner.dend`, `owner.apic` (only the
    types present) and `owner.all` (soma, axon, basal, apical order). Returns the lists by type,
    with an empty list for absent types.
    """
    h = _ensure_import3d()
    suffix = path.suffix.lower()
    if suffix == ".asc":
        reader = h.Import3d_Neurolucida3()
    elif suffix == ".swc":
        reader = h.Import3d_SWC_read()
    else:
        raise MorphologyError(f"unsupported morphology format: {path}")
    reader.quiet = 1
    try:
        reader.input(str(path))
        gui = h.Import3d_GUI(reader, False)
        gui.instantiate(owner)
    except RuntimeError as e:
        raise MorphologyError(f"NEURON Import3d could not read {path}: {e}") from e
    found = {t: list(getattr(owner, t, [])) for t in SECTION_TYPES}
    n_typed = sum(len(v) for v in found.values())
    if n_typed != len(owner.all):
        raise MorphologyError(
            f"morphology {path} has sections of types other than soma/axon/dend/apic "
            "(SWC types 1-4); convert them first"
        )
    if not found["soma"]:
        raise MorphologyError(f"morphology {path} has no soma")
    return found
