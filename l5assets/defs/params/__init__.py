"""The observable sources (group "params", one partition per param set): the params files
(`params_file`) and the model-component files (`mechanism_files`, `cell_model_files`,
`synaptic_model_files`)."""

from .assets import params_file
from .definitions import defs
from .sources import (
    SOURCES,
    cell_model_files,
    current_versions,
    mechanism_files,
    synaptic_model_files,
)

__all__ = [
    "SOURCES",
    "cell_model_files",
    "current_versions",
    "defs",
    "mechanism_files",
    "params_file",
    "synaptic_model_files",
]
