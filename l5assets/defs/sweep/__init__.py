"""Sweeps: the cross-seed summary of each param set."""

from .assets import cross_seed_summary
from .definitions import defs

__all__ = ["cross_seed_summary", "defs"]
