"""Definitions of the cell domain."""

import dagster as dg

from .assets import compiled_mechanisms, segments_table

defs = dg.Definitions(assets=[compiled_mechanisms, segments_table])
