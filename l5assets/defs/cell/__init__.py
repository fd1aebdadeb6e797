"""The cell model: compiled NMODL mechanisms and the segments table (param_set partitions)."""

from .assets import compiled_mechanisms, segments_table
from .definitions import defs

__all__ = ["compiled_mechanisms", "defs", "segments_table"]
