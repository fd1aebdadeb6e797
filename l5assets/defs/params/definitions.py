"""Definitions of the params domain."""

import dagster as dg

from .assets import params_file
from .sources import SOURCES

defs = dg.Definitions(assets=[params_file, *SOURCES])
