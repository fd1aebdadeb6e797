"""Export: the run of each partition as an NWB file (param_set x seed)."""

from .assets import nwb_export
from .definitions import defs

__all__ = ["defs", "nwb_export"]
