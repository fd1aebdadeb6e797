"""Jobs of the code location: one per partitions definition (a run has one partition key;
each job's partitioning is inferred from its assets).

`l5assets run` executes `cell_job` for the param set, then `seed_job` once per seed.
"""

import dagster as dg

CELL_ASSETS = ("compiled_mechanisms", "segments_table")
SEED_ASSETS = (
    "functional_groups",
    "exc_raster",
    "inh_rasters",
    "network",
    "simulation_config",
    "simulation_outputs",
    "simulation_summary",
)

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

# The observable sources: params files and the cell-model files (lineage domain).
OBSERVED_SOURCES = ("params_file", "cell_model_files")

observe_sources_job = dg.define_asset_job(
    "observe_sources_job",
    selection=dg.AssetSelection.assets(*OBSERVED_SOURCES),
    description="Record the content hashes of the params files and the cell-model files.",
)
