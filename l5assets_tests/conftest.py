"""Shared test helpers: a synthetic segments table and param sets for the science core tests.

The real segments table comes from NEURON (`l5assets.cell.segments`); the science core only
needs its columns, so these tests build a toy pyramidal-like morphology in numpy: a soma, an
axon stub, radiating branched basal dendrites and an apical trunk with obliques and a tuft,
with 3-D segment centres (soma at the origin) and path distances.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from l5assets import paths
from l5assets.params import ParamsError, ParamSet, load_param_set

SEGMENT_COLUMNS = [
    "bmtk_id",
    "x",
    "type",
    "sec_index",
    "distance",
    "coord_x",
    "coord_y",
    "coord_z",
    "diam",
    "length",
]


class _ToyBuilder:
    """Accumulates sections as straight pieces of equal-length segments."""

    def __init__(self, seg_len: float) -> None:
        self.seg_len = seg_len
        self.rows: list[dict] = []
        self.n_sections = 0
        self.type_count: dict[str, int] = {}

    def section(
        self,
        kind: str,
        start: np.ndarray,
        direction: np.ndarray,
        length: float,
        start_dist: float,
        diam: float,
    ) -> tuple[np.ndarray, float]:
        """Add one straight section; return its end point and the path distance there."""
        d = direction / np.linalg.norm(direction)
        nseg = max(1, int(round(length / self.seg_len)))
        xs = (np.arange(nseg) + 0.5) / nseg
        sec_index = self.type_count.get(kind, 0)
        self.type_count[kind] = sec_index + 1
        for xv in xs:
            c = start + d * length * xv
            self.rows.append(
                {
                    "bmtk_id": self.n_sections,
                    "x": float(xv),
                    "type": kind,
                    "sec_index": sec_index,
                    "distance": start_dist + length * xv,
                    "coord_x": c[0],
                    "coord_y": c[1],
                    "coord_z": c[2],
                    "diam": diam,
                    "length": length / nseg,
                }
            )
        self.n_sections += 1
        return start + d * length, start_dist + length

    def tree(
        self,
        kind: str,
        start: np.ndarray,
        direction: np.ndarray,
        start_dist: float,
        lengths: list[float],
        rng: np.random.Generator,
        diam: float,
    ) -> None:
        """A binary tree: one section per level, two jittered children per section."""
        if not lengths:
            return
        end, dist = self.section(kind, start, direction, lengths[0], start_dist, diam)
        for _ in range(2):
            child = direction / np.linalg.norm(direction) + rng.normal(0, 0.6, 3)
            self.tree(kind, end, child, dist, lengths[1:], rng, diam * 0.7)


def make_toy_segments(seg_len: float = 2.5, seed: int = 0) -> pd.DataFrame:
    """A toy L5-like segments table (~2,000 basal, ~3,000 apical segments).

    Short segments keep every 100-um sphere around a candidate segment well above 23 segments,
    as on the real cell, so group / cluster counts match the reference.
    """
    rng = np.random.default_rng(seed)
    b = _ToyBuilder(seg_len)
    origin = np.zeros(3)
    b.section("soma", np.array([-10.0, 0, 0]), np.array([1.0, 0, 0]), 20.0, -10.0, 20.0)
    # path distance from the soma centre: fold the soma's own segments
    for r in b.rows:
        r["distance"] = abs(r["distance"])
    end, dist = b.section("axon", origin, np.array([0, -1.0, 0]), 30.0, 0.0, 1.0)
    b.section("axon", end, np.array([0, -1.0, 0]), 30.0, dist, 1.0)
    for k in range(7):  # basal trees radiating below and around the soma
        ang = 2 * np.pi * k / 7
        direction = np.array([np.cos(ang), -0.5, np.sin(ang)])
        b.tree("dend", origin, direction, 0.0, [40.0, 80.0, 90.0], rng, 2.0)
    trunk_end = origin
    dist = 0.0
    for _ in range(4):  # apical trunk with an oblique pair at each joint
        trunk_end_new, dist_new = b.section(
            "apic", trunk_end, np.array([0, 1.0, 0]), 200.0, dist, 3.0
        )
        for side in (-1.0, 1.0):
            b.section(
                "apic", trunk_end_new, np.array([side, 0.6, rng.normal()]), 150.0, dist_new, 1.0
            )
        trunk_end, dist = trunk_end_new, dist_new
    b.tree("apic", trunk_end, np.array([0, 1.0, 0]), dist, [100.0, 120.0, 120.0], rng, 2.0)
    return pd.DataFrame(b.rows, columns=SEGMENT_COLUMNS)


def make_tiny_segments() -> pd.DataFrame:
    """A few segments only: 6 basal candidates (>= 50 um) and 5 apical segments."""
    b = _ToyBuilder(10.0)
    b.section("soma", np.array([-5.0, 0, 0]), np.array([1.0, 0, 0]), 10.0, 0.0, 10.0)
    b.section("dend", np.zeros(3), np.array([0, -1.0, 0]), 110.0, 0.0, 1.0)
    b.section("apic", np.zeros(3), np.array([0, 1.0, 0]), 50.0, 0.0, 2.0)
    return pd.DataFrame(b.rows, columns=SEGMENT_COLUMNS)


def load_science_params(name: str) -> ParamSet:
    """`load_param_set(name)`; if only the cell's biophysics file is missing (another helper
    writes it), validate against a placeholder cells folder: the science core never reads it."""
    try:
        return load_param_set(name)
    except ParamsError as e:
        if "cell.biophysics" not in str(e):
            raise
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        Path(d, "L5PC_bbp.json").write_text("{}")
        mp.setattr(paths, "cells_dir", lambda: Path(d))
        return load_param_set(name)


@pytest.fixture(scope="session")
def toy_segments() -> pd.DataFrame:
    return make_toy_segments()


@pytest.fixture(scope="session")
def tiny_segments() -> pd.DataFrame:
    return make_tiny_segments()


@pytest.fixture(scope="session")
def params_reference() -> ParamSet:
    return load_science_params("L5_reference")


@pytest.fixture(scope="session")
def params_quick() -> ParamSet:
    return load_science_params("L5_quick")


@pytest.fixture(scope="session")
def params_rhythmic() -> ParamSet:
    return load_science_params("L5_rhythmic")


def small_params(stop: float = 0.15, description: str = "test: small and short") -> dict:
    """L5_quick's raw JSON with a short stop and a fifth of the dendritic length (fewer
    inputs): the param set of the Dagster-layer and CLI tests (`from conftest import ...`)."""
    raw = json.loads((paths.PROJECT_ROOT / "data" / "params" / "L5_quick.json").read_text())
    raw["description"] = description
    raw["time"]["stop"] = stop
    raw["lengths"] = {"basal_dist": 930, "basal_prox": 483, "apic": 1488}
    return raw


def lineage_workspace(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cells: dict[str, str],
    mods: dict[str, str],
    param_sets: dict[str, str],
) -> tuple[Path, Path, Path, dict]:
    """Stub model components (cells/<name>.json and mechanisms/<name>.mod with the given text,
    a stub morphology) and param sets (name -> biophysics; copies of L5_quick pointing at the
    stub morphology), with L5ASSETS_COMPONENTS_DIR / _PARAMS_DIR / _STORAGE_ROOT set: the
    setting of the lineage tests, which read these files but never run NEURON.
    Returns (components dir, params dir, storage root, the last raw params dict)."""
    comp = tmp_path / "components"
    (comp / "cells").mkdir(parents=True)
    (comp / "mechanisms").mkdir()
    for name, text in cells.items():
        (comp / "cells" / f"{name}.json").write_text(text)
    for name, text in mods.items():
        (comp / "mechanisms" / f"{name}.mod").write_text(text)
    morph = tmp_path / "cell.asc"
    morph.write_text('("CellBody" (0 0 0 10))\n')
    pdir = tmp_path / "params"
    pdir.mkdir()
    raw = json.loads((paths.PROJECT_ROOT / "data" / "params" / "L5_quick.json").read_text())
    raw["cell"]["morphology"] = str(morph)
    for name, biophysics in param_sets.items():
        raw["cell"]["biophysics"] = biophysics
        (pdir / f"{name}.json").write_text(json.dumps(raw, indent=2))
    root = tmp_path / "outputs"
    monkeypatch.setenv("L5ASSETS_COMPONENTS_DIR", str(comp))
    monkeypatch.setenv("L5ASSETS_PARAMS_DIR", str(pdir))
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(root))
    return comp, pdir, root, raw


def copy_compiled_mechanisms(cache: Path) -> None:
    """Copy the project cache's complete mechanism builds into `cache` (created): a test's
    own cache without an nrnivmodl run."""
    import shutil

    cache.mkdir(parents=True, exist_ok=True)
    for entry in paths.cache_dir().glob("mechanisms-*"):
        if entry.is_dir() and (entry / "COMPLETE").exists():
            shutil.copytree(entry, cache / entry.name, symlinks=True)
