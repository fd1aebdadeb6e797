"""`status` with the Dagster instance and definitions: the core (`l5assets.lineage.status`)
reads the manifests on disk; this adds the registered partitions, the materialization
records and Dagster's own stale status through an `InstanceView`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg

from l5assets import graph as G
from l5assets.lineage import status as core

from ..dagster_private import stale_status


def asset_graph_of(defs: Any) -> Any:
    """The asset graph of Dagster Definitions, a RepositoryDefinition, or an asset graph."""
    if hasattr(defs, "resolve_asset_graph"):
        return defs.resolve_asset_graph()
    if hasattr(defs, "asset_graph"):
        return defs.asset_graph
    return defs


def definitions_info(defs: Any) -> tuple[list[str], list[str], dict[str, str | None]]:
    """(param-set-level assets, seed assets, code versions) of Dagster definitions."""
    graph = asset_graph_of(defs)
    shared, seeded, cvs = [], [], {}
    for key in graph.materializable_asset_keys:
        node = graph.get(key)
        name = key.to_user_string()
        cvs[name] = node.code_version
        pdef = node.partitions_def
        if isinstance(pdef, dg.MultiPartitionsDefinition):
            if {d.name for d in pdef.partitions_defs} == {G.PARAM_SET_DIM, G.SEED_DIM}:
                seeded.append(name)
        elif isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == G.PARAM_SET_DIM:
            shared.append(name)
    return sorted(shared), sorted(seeded), cvs


class DagsterView:
    """`core.InstanceView` over a Dagster instance and (optionally) its definitions."""

    def __init__(self, instance: dg.DagsterInstance, defs: Any = None) -> None:
        self.instance = instance
        self.defs = defs

    def assets(self) -> tuple[list[str], list[str], dict[str, str | None]] | None:
        return definitions_info(self.defs) if self.defs is not None else None

    def param_sets(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions(G.PARAM_SET_DIM))

    def seeds(self) -> set[int]:
        return {int(s) for s in self.instance.get_dynamic_partitions(G.SEED_DIM) if s.isdigit()}

    def materialized(self, assets: Iterable[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name in assets:
            key = dg.AssetKey.from_user_string(name)
            ids = self.instance.get_latest_storage_id_by_partition(
                key, dg.DagsterEventType.ASSET_MATERIALIZATION
            )
            runs: dict[str, str] = {}
            if ids:
                res = self.instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())),
                    limit=len(ids),
                )
                runs = {str(rec.partition_key): rec.run_id for rec in res.records}
            out[name] = runs
        return out

    def stale(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if self.defs is None:
            raise RuntimeError("no definitions given")
        return stale_status(self.instance, asset_graph_of(self.defs), keys)


def status(instance: Any = None, defs: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
    """`l5assets.lineage.status.status` with a Dagster instance (registered partitions,
    materialization records) and definitions (asset lists, code versions, and with both
    Dagster's stale status per asset). Keyword arguments as the core's."""
    if instance is None:
        if defs is not None:
            shared, seeded, cvs = definitions_info(defs)
            kwargs.setdefault("shared_assets", shared)
            kwargs.setdefault("seed_assets", seeded)
            kwargs["code_versions"] = {**cvs, **(kwargs.get("code_versions") or {})}
        return core.status(None, **kwargs)
    if defs is None:
        kwargs["with_dagster_status"] = False
    return core.status(DagsterView(instance, defs), **kwargs)
