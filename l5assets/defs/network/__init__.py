"""The SONATA network (BMTK), param_set x seed."""

from .assets import network
from .definitions import defs

__all__ = ["defs", "network"]
