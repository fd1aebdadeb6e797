"""Partitions: two dynamic dimensions, `param_set` and `seed`, and the mapping between them.

Both dimensions are dynamic so that a new params file or a new seed is registered at run time
(`instance.add_dynamic_partitions`, done by `l5assets run` and by `register_partitions`) without
code changes. Assets that do not depend on the seed are partitioned by `param_set` only and are
mapped to the seed-partitioned assets through the `param_set` dimension.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from l5assets.graph import PARAM_SET_DIM, SEED_DIM
from l5assets.params import ParamsError, validate_param_set_name, validate_seed

param_set_partitions = dg.DynamicPartitionsDefinition(name=PARAM_SET_DIM)
seed_partitions = dg.DynamicPartitionsDefinition(name=SEED_DIM)

# Multi-partition keys are "<param_set>|<seed>" (dimensions are ordered by name).
run_partitions = dg.MultiPartitionsDefinition(
    {PARAM_SET_DIM: param_set_partitions, SEED_DIM: seed_partitions}
)

# A param_set-only upstream feeds every seed of the same param set.
by_param_set = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=PARAM_SET_DIM)


def run_partition_key(param_set: str, seed: int | str) -> dg.MultiPartitionKey:
    """The multi-partition key of one (param set, seed) pair, validated."""
    return dg.MultiPartitionKey(
        {PARAM_SET_DIM: validate_param_set_name(param_set), SEED_DIM: str(validate_seed(seed))}
    )


def register_partitions(
    instance: dg.DagsterInstance, param_sets: Iterable[str], seeds: Iterable[int | str] = ()
) -> None:
    """Add param sets and seeds to the dynamic dimensions (only the ones not yet known)."""
    names = [validate_param_set_name(p) for p in param_sets]
    seed_keys = [str(validate_seed(s)) for s in seeds]
    for dim, keys in ((PARAM_SET_DIM, names), (SEED_DIM, seed_keys)):
        known = set(instance.get_dynamic_partitions(dim))
        new = [k for k in dict.fromkeys(keys) if k not in known]
        if new:
            instance.add_dynamic_partitions(dim, new)


def partition_of(partition_key: str | dg.MultiPartitionKey) -> tuple[str, int | None]:
    """(param_set, seed) of a partition key; seed is None for param_set-only partitions."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        dims = partition_key.keys_by_dimension
    elif "|" in partition_key:
        param_set, seed = partition_key.split("|", 1)
        dims = {PARAM_SET_DIM: param_set, SEED_DIM: seed}
    else:
        dims = {PARAM_SET_DIM: partition_key}
    if PARAM_SET_DIM not in dims:
        raise ParamsError(f"partition key {partition_key!r} has no param_set dimension")
    name = validate_param_set_name(dims[PARAM_SET_DIM])
    seed = validate_seed(dims[SEED_DIM]) if SEED_DIM in dims else None
    return name, seed
