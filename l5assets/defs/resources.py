"""Configurable resources: where files go, which cell model code to compile, how to run NEURON.

Every field can be bound to an environment variable with `dg.EnvVar(...)` in the Definitions
(see `l5assets/definitions.py`); an unset (None) field falls back, at run time, to the
environment-aware defaults of `l5assets.paths`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

from l5assets import paths
from l5assets.params import ParamSet, load_param_set, param_set_path
from l5assets.storage import partition_dir

ENGINE_ENV = "L5ASSETS_ENGINE"
DEFAULT_ENGINE = "coreneuron"


class StorageResource(dg.ConfigurableResource):
    """Storage root of the materialized files and the folder of param set files."""

    root: str | None = None
    params_dir: str | None = None

    def root_path(self) -> Path:
        return Path(self.root) if self.root else paths.storage_root()

    def params_path(self) -> Path:
        return Path(self.params_dir) if self.params_dir else paths.params_dir()

    def partition_dir(self, asset: str, param_set: str, seed: int | None = None) -> Path:
        """Folder owned by one asset for one partition (not created)."""
        return partition_dir(self.root_path(), asset, param_set, seed)

    def params_file(self, param_set: str) -> Path:
        return param_set_path(param_set, self.params_path())

    def load_params(self, param_set: str) -> ParamSet:
        """Load and validate a param set (raises ParamsError before anything is written)."""
        return load_param_set(param_set, self.params_path())


class CellModelResource(dg.ConfigurableResource):
    """The cell model's code: the NMODL folder, the compiled-mechanism cache and the extra
    compiler flags of the mechanism build (`cflags`; unset: $L5ASSETS_MECH_CFLAGS, else
    `mechanisms.DEFAULT_CFLAGS`; "none": nrnivmodl's own). The flags are in the cache key and
    the build's metadata, not in the params hash."""

    mod_dir: str | None = None
    cache_root: str | None = None
    cflags: str | None = None

    def mod_path(self) -> Path:
        return Path(self.mod_dir) if self.mod_dir else paths.mechanisms_dir()

    def cache_path(self) -> Path:
        return Path(self.cache_root) if self.cache_root else paths.cache_dir()


class NeuronRuntime(dg.ConfigurableResource):
    """How the simulation subprocess runs NEURON.

    `engine`: "coreneuron" (the project's driver in CoreNEURON, default), "neuron" (the
    driver in NEURON), "bionet" (BMTK BioNet, the cross-check), one of
    `l5assets.simulation.runner.ENGINES`; unset, the environment variable L5ASSETS_ENGINE,
    else DEFAULT_ENGINE. The engine is recorded in the manifest and is not part of the params
    hash (the engines give the same spikes)."""

    engine: str | None = None
    threads: int = 1
    share_synapses: bool = True
    timeout_s: float = 3600.0
    python: str | None = None  # interpreter for the subprocess; default: this one

    def resolved_engine(self) -> str:
        """The engine of this run, validated (PreflightError naming the allowed ones)."""
        from l5assets.preflight import check_engine

        if self.engine:
            return check_engine(self.engine, "NeuronRuntime.engine")
        return check_engine(os.environ.get(ENGINE_ENV) or DEFAULT_ENGINE, ENGINE_ENV)

    def python_executable(self) -> str:
        return self.python or sys.executable

    def subprocess_env(self) -> dict[str, str]:
        """Environment for NEURON subprocesses: ours, with one BLAS thread (NEURON is serial)."""
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return env
