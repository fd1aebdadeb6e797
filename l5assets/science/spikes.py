"""Spike trains in memory and as SONATA spike files.

A SONATA spike file holds, per population, `/spikes/<population>/timestamps` (float64, attribute
`units` = "ms") and `/spikes/<population>/node_ids` (uint64), with the group attribute
`sorting` = "by_time" (the layout BMTK's readers expect). Files are written through
`storage.atomic_path` (temp file + rename) and are byte-deterministic: HDF5 object timestamps
are switched off, so equal trains give equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from l5assets.storage import atomic_path

UNITS = "ms"
SORTING = "by_time"


@dataclass(frozen=True)
class SpikeTrains:
    """Spikes of one population: parallel arrays of node ids (int64) and times (float64, ms)."""

    node_ids: np.ndarray
    timestamps: np.ndarray

    def __post_init__(self) -> None:
        ids = np.ascontiguousarray(self.node_ids, dtype=np.int64).reshape(-1)
        ts = np.ascontiguousarray(self.timestamps, dtype=np.float64).reshape(-1)
        if ids.shape != ts.shape:
            raise ValueError(
                f"SpikeTrains: node_ids ({ids.size}) and timestamps ({ts.size}) differ in length"
            )
        # frozen dataclass: normalise the dtypes in place of the caller's arrays
        object.__setattr__(self, "node_ids", ids)
        object.__setattr__(self, "timestamps", ts)

    def __len__(self) -> int:
        return int(self.node_ids.size)

    @classmethod
    def empty(cls) -> SpikeTrains:
        """No spikes."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64))

    @classmethod
    def concat(cls, parts: list[SpikeTrains]) -> SpikeTrains:
        """Join several trains (order kept; use `sorted_by_time` for the file order)."""
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.node_ids for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
        )

    def sorted_by_time(self) -> SpikeTrains:
        """Sorted by time, ties by node id (the result is unique)."""
        ids, ts = self.node_ids, self.timestamps
        if ids.size < 2:
            return self
        dt, dn = np.diff(ts), np.diff(ids)
        if bool(np.all((dt > 0) | ((dt == 0) & (dn > 0)))):
            return self  # already in that order (a train written after it was drawn)
        if bool(np.all(dn >= 0)):
            # already in node order (as the rasters are drawn): a stable sort by time keeps
            # ties in node order; whole ms below 65536 sort as uint16, by radix sort
            key: np.ndarray = ts
            if ts.min() >= 0.0 and ts.max() < 65536.0 and bool(np.all(ts == np.floor(ts))):
                key = ts.astype(np.uint16)
            order = np.argsort(key, kind="stable")
        else:
            order = np.lexsort((ids, ts))
        return SpikeTrains(ids[order], ts[order])

    def counts(self, n_nodes: int) -> np.ndarray:
        """Spike count per node id 0..n_nodes-1."""
        if len(self) and (self.node_ids.min() < 0 or self.node_ids.max() >= n_nodes):
            raise ValueError(f"SpikeTrains.counts: node ids outside [0, {n_nodes})")
        return np.bincount(self.node_ids, minlength=n_nodes)


def write_sonata_spikes(path: str | Path, population: str, trains: SpikeTrains) -> Path:
    """Write one population's spikes to a SONATA spike file, atomically and deterministically.

    Spikes are stored sorted by time, then node id. Returns the final path.
    """
    if not population or "/" in population:
        raise ValueError(f"write_sonata_spikes: bad population name {population!r}")
    s = trains.sorted_by_time()
    path = Path(path)
    with atomic_path(path) as tmp:
        # track_times=False on every object: otherwise HDF5 stamps creation times into the
        # object headers and two identical writes differ in bytes.
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            root = f.create_group("spikes", track_order=False)
            grp = root.create_group(population, track_order=False)
            grp.attrs["sorting"] = SORTING
            ts = grp.create_dataset(
                "timestamps", data=s.timestamps, dtype=np.float64, track_times=False
            )
            ts.attrs["units"] = UNITS
            grp.create_dataset(
                "node_ids", data=s.node_ids.astype(np.uint64), dtype=np.uint64, track_times=False
            )
    return path


def read_sonata_spikes(path: str | Path) -> dict[str, SpikeTrains]:
    """Read every population of a SONATA spike file (times converted to ms if stored in s)."""
    out: dict[str, SpikeTrains] = {}
    with h5py.File(path, "r") as f:
        if "spikes" not in f:
            raise ValueError(f"read_sonata_spikes: {path} has no /spikes group")
        for pop, grp in f["spikes"].items():
            ts = grp["timestamps"][()].astype(np.float64)
            units = grp["timestamps"].attrs.get("units", UNITS)
            if isinstance(units, bytes):
                units = units.decode()
            if units == "s":
                ts = ts * 1000.0
            elif units != "ms":
                raise ValueError(f"read_sonata_spikes: unknown time units {units!r} in {path}")
            out[pop] = SpikeTrains(grp["node_ids"][()].astype(np.int64), ts)
    return out
