"""Jobs of the code location: one per partitions definition (a run has one partition key;
each job's partitioning is inferred from its assets).

`l5assets run` executes `cell_job` for the param set, then `seed_job` once per seed; the
stale-partition schedule and its follow-up sensor launch the same two jobs. The selections
come from `l5assets.graph`, as do `status`'s asset lists.
"""

import dagster as dg

from l5assets import graph as G

cell_job = dg.define_asset_job(
    "cell_job",
    selection=dg.AssetSelection.assets(*G.SHARED_ASSETS),
    description="Seed-independent assets of one param set: compiled mechanisms, segments table.",
)

seed_job = dg.define_asset_job(
    "seed_job",
    selection=dg.AssetSelection.assets(*G.SEED_ASSETS),
    description="One (param_set, seed) partition: inputs, network, simulation, NWB export.",
)

observe_sources_job = dg.define_asset_job(
    "observe_sources_job",
    selection=dg.AssetSelection.assets(*G.SOURCE_ASSETS),
    description="Record the content hashes of the params files and the model-component files.",
)

cross_seed_job = dg.define_asset_job(
    "cross_seed_job",
    selection=dg.AssetSelection.assets("cross_seed_summary"),
    description="One param set: every seed's simulation summary side by side (after a sweep).",
)
