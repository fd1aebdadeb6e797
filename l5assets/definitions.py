"""The Dagster code location: every domain's definitions, merged, plus resources and jobs.

Load with `dagster dev -w workspace.yaml` (or `-m l5assets.definitions`). Domains live in
`l5assets/defs/<domain>/`, each exposing its own `defs`.
"""

from __future__ import annotations

import dagster as dg

from l5assets.defs import (
    cell,
    cell_validation,
    export,
    inputs,
    lineage,
    network,
    params,
    simulation,
    sweep,
)
from l5assets.defs.cli_logger import CLI_LOGGER, cli_logger
from l5assets.defs.jobs import cell_job, cross_seed_job, observe_sources_job, seed_job
from l5assets.defs.resources import CellModelResource, NeuronRuntime, StorageResource
from l5assets.defs.slurm import SlurmResource


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources of the code location. Unset path fields resolve at run time through
    `l5assets.paths`, which reads L5ASSETS_STORAGE_ROOT / L5ASSETS_PARAMS_DIR /
    L5ASSETS_CACHE_DIR / L5ASSETS_COMPONENTS_DIR (binding them with `dg.EnvVar` as well would
    fail when the variable is unset, and add nothing when it is set)."""
    return {
        "storage": StorageResource(),
        "cell_model": CellModelResource(),
        "neuron": NeuronRuntime(),
        # local unless L5ASSETS_SIMULATION_EXECUTOR=slurm (or the run's resource config) says so
        "slurm": SlurmResource(),
    }


DOMAINS = (params, cell, inputs, network, simulation, export, lineage, cell_validation, sweep)

defs = dg.Definitions.merge(
    *(d.defs for d in DOMAINS),
    dg.Definitions(
        resources=default_resources(),
        jobs=[cell_job, seed_job, observe_sources_job, cross_seed_job],
        executor=dg.in_process_executor,
        # the CLI's terminal logger next to Dagster's console one; a run uses what its
        # config names (the UI's runs name none: Dagster's default console logger)
        loggers={"console": dg.colored_console_logger, CLI_LOGGER: cli_logger},
    ),
)
