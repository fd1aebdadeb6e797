"""Cell validation domain: protocol assets partitioned by cell, their checks and a summary.

Resources expected from the top-level Definitions: `storage` (StorageResource) and
`cell_model` (CellModelResource).
"""

import dagster as dg

from .assets import (
    CellValidationConfig,
    cell_partitions,
    protocol_assets,
    protocol_checks,
    validation_summary,
)

defs = dg.Definitions(
    assets=[*protocol_assets, validation_summary],
    asset_checks=protocol_checks,
)

__all__ = [
    "CellValidationConfig",
    "cell_partitions",
    "defs",
    "protocol_assets",
    "protocol_checks",
    "validation_summary",
]
