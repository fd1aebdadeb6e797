"""Definitions of the sweep domain."""

import dagster as dg

from .assets import cross_seed_summary

defs = dg.Definitions(assets=[cross_seed_summary])
