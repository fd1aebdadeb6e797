"""Inputs: functional groups and the excitatory / inhibitory spike rasters (param_set x seed)."""

from .assets import exc_raster, functional_groups, inh_rasters
from .definitions import defs

__all__ = ["defs", "exc_raster", "functional_groups", "inh_rasters"]
