"""The Dagster instance the project creates: its dagster.yaml and the `neuron` pool.

NEURON runs (the simulation and the cell validations) take a slot of the concurrency pool
`neuron`, so that a backfill of many seeds, from the UI or the daemon, never runs more
simulations at once than the machine has cores. The instance `l5assets run` creates (and
`instance_yaml` writes) has:

- telemetry off;
- the QueuedRunCoordinator (runs launched from the UI, schedules and backfills wait in the
  daemon's queue; `l5assets run` executes in process and does not pass through it);
- op-granularity pools with a default limit of one slot per core: `neuron` is the only pool.

Change the limit by editing `concurrency.pools.default_limit` in DAGSTER_HOME/dagster.yaml,
or for `neuron` alone with `dagster instance concurrency set neuron N` (an explicit limit
wins over the default).
"""

from __future__ import annotations

import os

NEURON_POOL = "neuron"


def neuron_slots() -> int:
    """Default size of the `neuron` pool: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def instance_yaml(slots: int | None = None) -> str:
    """dagster.yaml of the instance the project creates (`slots`: the pool limit, default
    one per core)."""
    n = neuron_slots() if slots is None else int(slots)
    if n < 1:
        raise ValueError(f"neuron pool slots: {n}, allowed: an integer >= 1")
    return (
        "# written by l5assets (l5assets/defs/instance.py)\n"
        "telemetry:\n"
        "  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster.core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n"
        "concurrency:\n"
        "  pools:\n"
        "    granularity: op\n"
        f"    default_limit: {n}  # the `{NEURON_POOL}` pool: NEURON runs at once\n"
    )
