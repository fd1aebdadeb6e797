"""Simulation: BMTK config, the NEURON run (subprocess) and its summary (param_set x seed)."""

from .assets import simulation_config, simulation_outputs, simulation_summary
from .definitions import defs

__all__ = ["defs", "simulation_config", "simulation_outputs", "simulation_summary"]
