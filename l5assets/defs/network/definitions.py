"""Definitions of the network domain."""

import dagster as dg

from .assets import network

defs = dg.Definitions(assets=[network])
