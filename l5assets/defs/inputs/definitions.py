"""Definitions of the inputs domain."""

import dagster as dg

from .assets import exc_raster, functional_groups, inh_rasters

defs = dg.Definitions(assets=[functional_groups, exc_raster, inh_rasters])
