"""Jobs of the code location: one per partitions definition (a run has one partition key;
each job's partitioning is inferred from its assets).

`l5assets run` executes `cell_job` for the param set, then `seed_job` once per seed; the
stale-partition schedule and its follow-up sensor launch the same two jobs.
"""

import dagster as dg

from l5assets.lineage.status import DEFAULT_SEED_ASSETS, DEFAULT_SHARED_ASSETS

from .lineage.staleness import SOURCE_ASSETS

# One source for the asset lists: `l5assets status` uses the same ones without Dagster.
CELL_ASSETS = DEFAULT_SHARED_ASSETS
SEED_ASSETS = DEFAULT_SEED_ASSETS

cell_job = dg.define_asset_job(
    "cell_job",
    selection=dg.AssetSelection.assets(*CELL_ASSETS),
    description="Seed-independent assets of one param set: compiled mechanisms, segments table.",
)

seed_job = dg.define_asset_job(
    "seed_job",
    selection=dg.AssetSelection.assets(*SEED_ASSETS),
    description="Everything of one (param_set, seed) partition: inputs, network, simulation.",
)

# The observable sources: params files and the model-component files (lineage domain).
OBSERVED_SOURCES = SOURCE_ASSETS

observe_sources_job = dg.define_asset_job(
    "observe_sources_job",
    selection=dg.AssetSelection.assets(*OBSERVED_SOURCES),
    description="Record the content hashes of the params files and the model-component files.",
)
