"""Definitions of the export domain."""

import dagster as dg

from .assets import nwb_export

defs = dg.Definitions(assets=[nwb_export])
