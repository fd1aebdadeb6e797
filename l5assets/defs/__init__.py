"""Dagster layer: one sub-package per domain, each exposing `defs` (merged in
`l5assets.definitions`)."""

import warnings

import dagster as dg

# Observable source assets and MultiToSingleDimensionPartitionMapping are marked beta; they are
# what the two dynamic partition dimensions need, so the warning is silenced once here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
