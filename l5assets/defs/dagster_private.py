"""Every private Dagster API the project uses, in one place.

Dagster offers no public way (1.13) to validate a cron string, to compute the UI's stale
status of a partition, or to tag an observation with a data version. Nothing else in the
project imports `dagster._*`: when an upgrade moves one of these, this module (and
`l5assets_tests/test_dagster_private.py`) is the one place that breaks.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import DATA_VERSION_TAG, CachingStaleStatusResolver
from dagster._time import get_current_datetime
from dagster._utils.schedules import is_valid_cron_string

__all__ = ["DATA_VERSION_TAG", "is_valid_cron", "stale_status"]


def is_valid_cron(cron: str) -> bool:
    """Whether Dagster accepts a cron string for a schedule."""
    return bool(is_valid_cron_string(cron))


def stale_status(
    instance: dg.DagsterInstance, asset_graph: Any, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """Dagster's own stale status (what the UI shows: "fresh" / "stale" / "missing") of
    (asset, partition key) pairs."""
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    resolver = CachingStaleStatusResolver(
        instance=instance, asset_graph=asset_graph, loading_context=view
    )
    return {
        (asset, pk): resolver.get_status(dg.AssetKey.from_user_string(asset), pk).value.lower()
        for asset, pk in keys
    }
