"""The Dagster code location: every domain's definitions, merged, plus resources and jobs.

Load with `dagster dev -w workspace.yaml` (or `-m l5assets.definitions`). Domains live in
`l5assets/defs/<domain>/`, each exposing its own `defs`.
"""

from __future__ import annotations

import os

import dagster as dg

from l5assets.defs import cell, cell_validation, inputs, lineage, network, params, simulation
from l5assets.defs.jobs import cell_job, observe_sources_job, seed_job
from l5assets.defs.resources import CellModelResource, NeuronRuntime, StorageResource


def _env(name: str) -> dg.EnvVar | None:
    """Bind a resource field to an environment variable only when it is set (else default)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources of the code location; every path can be moved with an environment variable."""
    return {
        "storage": StorageResource(
            root=_env("L5ASSETS_STORAGE_ROOT"), params_dir=_env("L5ASSETS_PARAMS_DIR")
        ),
        "cell_model": CellModelResource(cache_root=_env("L5ASSETS_CACHE_DIR")),
        "neuron": NeuronRuntime(),
    }


DOMAINS = (params, cell, inputs, network, simulation, lineage, cell_validation)

defs = dg.Definitions.merge(
    *(d.defs for d in DOMAINS),
    dg.Definitions(
        resources=default_resources(),
        jobs=[cell_job, seed_job, observe_sources_job],
        executor=dg.in_process_executor,
    ),
)
