"""SONATA network files written straight from arrays (h5py, no per-edge Python).

The layout is the one BMTK's NetworkBuilder writes, dataset for dataset (the same names,
dtypes, gzip filter, `magic`/`version` root attributes, edges sorted by target and indexed
both ways), so BMTK BioNet, our driver and libsonata read it as they read BMTK's own output.
`l5assets_tests/test_network.py` builds the same network with BMTK's builder and compares
every dataset and types table.

Types tables: space-separated, `node_type_id` / `edge_type_id, target_query, source_query`
first, then the remaining columns sorted (BMTK orders them by a Python `set`; a fixed order
keeps the bytes independent of the string-hash seed).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

MAGIC = np.uint32(0x0A7A)
VERSION = np.array([0, 1], dtype=np.uint32)
COMPRESSION = "gzip"
FIRST_TYPE_ID = 100  # BMTK numbers node and edge types from 100 in each builder


def _root_attrs(f: h5py.File) -> None:
    f.attrs["magic"] = MAGIC
    f.attrs["version"] = VERSION


def write_nodes(path: Path, population: str, node_type_ids: np.ndarray) -> None:
    """A nodes file of one population without per-node properties (group "0" empty):
    node ids 0..n-1 in the order of `node_type_ids`."""
    types = np.asarray(node_type_ids, dtype=np.uint64)
    n = types.size
    with h5py.File(path, "w") as f:
        _root_attrs(f)
        g = f.create_group(f"nodes/{population}")
        g.create_dataset("node_id", data=np.arange(n, dtype=np.uint64), compression=COMPRESSION)
        g.create_dataset("node_type_id", data=types, compression=COMPRESSION)
        g.create_dataset(
            "node_group_id", data=np.zeros(n, dtype=np.uint32), compression=COMPRESSION
        )
        g.create_dataset(
            "node_group_index", data=np.arange(n, dtype=np.uint64), compression=COMPRESSION
        )
        g.create_group("0")


def edge_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SONATA edge index of one id column: (node_id_to_range, range_to_edge_id).

    Runs of equal consecutive ids become edge ranges, sorted by id (stable); node id k's rows
    of range_to_edge_id are node_id_to_range[k]; ids without edges below the largest get
    [0, 0]."""
    ids = np.asarray(ids)
    n = ids.size
    cut = np.flatnonzero(np.diff(ids)) + 1
    beg = np.concatenate(([0], cut))
    end = np.concatenate((cut, [n]))
    order = np.argsort(ids[beg], kind="stable")
    lu = ids[beg][order]
    range_to_edge = np.stack([beg[order], end[order]], axis=1).astype(np.uint64)
    cut2 = np.flatnonzero(np.diff(lu)) + 1
    b2 = np.concatenate(([0], cut2))
    e2 = np.concatenate((cut2, [lu.size]))
    node_to_range = np.zeros((int(lu[-1]) + 1, 2), dtype=np.uint64)
    node_to_range[lu[b2].astype(np.int64)] = np.stack([b2, e2], axis=1)
    return node_to_range, range_to_edge


def write_edges(
    path: Path,
    source_population: str,
    target_population: str,
    source_node_ids: np.ndarray,
    target_node_ids: np.ndarray,
    edge_type_ids: np.ndarray,
    group_properties: Mapping[str, np.ndarray],
) -> None:
    """An edges file of one population `<source>_to_<target>`, one edge group ("0") holding
    `group_properties` (each an array with one value per edge, written in its own dtype).

    Edges are written sorted by target node id (stable: the given order within a target)."""
    src = np.asarray(source_node_ids, dtype=np.uint64)
    trg = np.asarray(target_node_ids, dtype=np.uint64)
    n = src.size
    if n == 0:
        raise ValueError(f"{source_population} -> {target_population}: no edges to write")
    order = np.argsort(trg, kind="stable")
    src, trg = src[order], trg[order]
    types = np.asarray(edge_type_ids, dtype=np.uint32)[order]
    with h5py.File(path, "w") as f:
        _root_attrs(f)
        g = f.create_group(f"edges/{source_population}_to_{target_population}")
        g.create_dataset("source_node_id", data=src, compression=COMPRESSION)
        g["source_node_id"].attrs["node_population"] = source_population
        g.create_dataset("target_node_id", data=trg, compression=COMPRESSION)
        g["target_node_id"].attrs["node_population"] = target_population
        g.create_dataset(
            "edge_group_id", data=np.zeros(n, dtype=np.uint16), compression=COMPRESSION
        )
        g.create_dataset(
            "edge_group_index", data=np.arange(n, dtype=np.uint32), compression=COMPRESSION
        )
        g.create_dataset("edge_type_id", data=types, compression=COMPRESSION)
        grp = g.create_group("0")
        for name, values in group_properties.items():
            values = np.asarray(values)
            if values.shape != (n,):
                raise ValueError(f"edge property {name}: {values.shape[0]} values for {n} edges")
            grp.create_dataset(name, data=values[order], compression=COMPRESSION)
        for index, column in (("source_to_target", src), ("target_to_source", trg)):
            node_to_range, range_to_edge = edge_index(column)
            ig = g.create_group(f"indices/{index}")
            ig.create_dataset("node_id_to_range", data=node_to_range, compression=COMPRESSION)
            ig.create_dataset("range_to_edge_id", data=range_to_edge, compression=COMPRESSION)


def write_types_csv(path: Path, first: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """A node- or edge-types table: columns `first`, then every other key of `rows` sorted;
    a key a row lacks is written NULL (as BMTK does)."""
    keys = {k for r in rows for k in r}
    order = [c for c in first if c in keys] + sorted(keys - set(first))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(order)
        for r in rows:
            w.writerow(["NULL" if r.get(c) is None else r[c] for c in order])
