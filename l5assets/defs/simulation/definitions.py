"""Definitions of the simulation domain."""

import dagster as dg

from .assets import simulation_config, simulation_outputs, simulation_summary

defs = dg.Definitions(assets=[simulation_config, simulation_outputs, simulation_summary])
