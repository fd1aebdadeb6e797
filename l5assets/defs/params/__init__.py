"""Param sets as an observable source asset (one partition per JSON file in the params dir)."""

from .assets import params_file
from .definitions import defs

__all__ = ["defs", "params_file"]
