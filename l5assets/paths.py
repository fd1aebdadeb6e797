"""Where the project's files live: components, param sets and the storage root.

Every location can be moved with an environment variable so that tests, HPC jobs and notebooks
can point the pipeline elsewhere without code changes.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


# The default cell: Hay's biophys3 channel set fitted on the packaged morphology C060114A7.
DEFAULT_CELL = "L5PC_hay_C060114A7"


def components_dir() -> Path:
    """The `biophys_components/` folder (mechanisms, cells, synaptic models)."""
    return Path(os.environ.get("L5ASSETS_COMPONENTS_DIR", PROJECT_ROOT / "biophys_components"))


def mechanisms_dir() -> Path:
    """The project's own NMODL files."""
    return components_dir() / "mechanisms"


def cells_dir() -> Path:
    """Biophysics JSON files, one per named cell."""
    return components_dir() / "cells"


def fits_dir() -> Path:
    """Fit records of fitted biophysics files (`<cell>.fit.json`)."""
    return components_dir() / "fits"


def synaptic_models_dir() -> Path:
    """BMTK synapse dynamics JSON files (PN2PN, PV2PN, SOM2PN)."""
    return components_dir() / "synaptic_models"


def data_dir() -> Path:
    """The project's `data/` folder (param sets live in `data/params/`)."""
    return Path(os.environ.get("L5ASSETS_DATA_DIR", PROJECT_ROOT / "data"))


def params_dir() -> Path:
    """One JSON file per param set; the file stem is the param_set partition key."""
    return Path(os.environ.get("L5ASSETS_PARAMS_DIR", data_dir() / "params"))


def storage_root() -> Path:
    """Default root for materialized outputs (git-ignored)."""
    return Path(os.environ.get("L5ASSETS_STORAGE_ROOT", data_dir() / "outputs"))


def cache_dir() -> Path:
    """Compiled-mechanism cache, keyed by the content hash of the .mod files."""
    return Path(os.environ.get("L5ASSETS_CACHE_DIR", data_dir() / "cache"))


def dagster_home() -> Path:
    """Embedded default Dagster instance home (SQLite) when DAGSTER_HOME is unset."""
    return Path(os.environ.get("DAGSTER_HOME", data_dir() / "dagster_home"))
