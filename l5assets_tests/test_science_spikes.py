"""SONATA spike files: layout, order, BMTK interop, atomic and byte-deterministic writes."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from l5assets.science import spikes as S
from l5assets.science.spikes import SpikeTrains, read_sonata_spikes, write_sonata_spikes


def _trains() -> SpikeTrains:
    rng = np.random.default_rng(0)
    return SpikeTrains(rng.integers(0, 50, 2000), rng.integers(0, 300, 2000).astype(float))


def test_layout_and_sort_order(tmp_path: Path) -> None:
    t = _trains()
    p = write_sonata_spikes(tmp_path / "exc.h5", "exc_stim", t)
    with h5py.File(p, "r") as f:
        g = f["spikes/exc_stim"]
        assert g.attrs["sorting"] == "by_time"
        assert g["timestamps"].attrs["units"] == "ms"
        assert g["timestamps"].dtype == np.float64 and g["node_ids"].dtype == np.uint64
        ts, ids = g["timestamps"][()], g["node_ids"][()].astype(np.int64)
    assert np.all(np.diff(ts) >= 0)
    ties = np.diff(ts) == 0
    assert np.all(np.diff(ids)[ties] >= 0)  # ties broken by node id
    back = read_sonata_spikes(p)["exc_stim"]
    ref = t.sorted_by_time()
    assert np.array_equal(back.node_ids, ref.node_ids)
    assert np.array_equal(back.timestamps, ref.timestamps)
    # same multiset of (node, time) pairs as written
    assert sorted(zip(t.node_ids, t.timestamps, strict=True)) == sorted(
        zip(back.node_ids, back.timestamps, strict=True)
    )


def test_bmtk_reads_it(tmp_path: Path) -> None:
    from bmtk.utils.reports.spike_trains import SpikeTrains as BmtkSpikes

    t = _trains()
    p = write_sonata_spikes(tmp_path / "exc.h5", "exc_stim", t)
    df = BmtkSpikes.load(str(p)).to_dataframe()
    assert len(df) == len(t)
    assert set(df["population"]) == {"exc_stim"}
    assert np.array_equal(np.sort(df["node_ids"].to_numpy()), np.sort(t.node_ids))


def test_two_writes_are_byte_identical(tmp_path: Path) -> None:
    t = _trains()
    a = write_sonata_spikes(tmp_path / "a.h5", "pop", t)
    time.sleep(1.1)  # HDF5 object timestamps have 1-s resolution
    b = write_sonata_spikes(
        tmp_path / "b.h5", "pop", SpikeTrains(t.node_ids[::-1], t.timestamps[::-1])
    )
    assert a.read_bytes() == b.read_bytes()


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_sonata_spikes(tmp_path / "x.h5", "pop", _trains())
    before = p.read_bytes()

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(S.h5py.Group, "create_dataset", boom)
    with pytest.raises(OSError):
        write_sonata_spikes(p, "pop", SpikeTrains([1], [2.0]))
    assert p.read_bytes() == before
    assert [q.name for q in tmp_path.iterdir()] == ["x.h5"]  # no temp file left


def test_empty_and_validation(tmp_path: Path) -> None:
    p = write_sonata_spikes(tmp_path / "e.h5", "pop", SpikeTrains.empty())
    assert len(read_sonata_spikes(p)["pop"]) == 0
    with pytest.raises(ValueError):
        SpikeTrains([1, 2], [1.0])
    with pytest.raises(ValueError):
        write_sonata_spikes(tmp_path / "f.h5", "a/b", SpikeTrains.empty())


def test_sorted_by_time_takes_every_path_to_the_same_order() -> None:
    """Time order, ties by node id, whatever the input order: already sorted, node order with
    whole-ms times (radix path), node order with fractional times, and any order."""
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(400), 30)
    whole = np.concatenate([np.sort(rng.choice(3000, 30, replace=False)) for _ in range(400)])
    frac = whole + rng.random(whole.size).round(3)
    for ts in (whole.astype(np.float64), frac, whole + 70000.0):
        ref = np.lexsort((ids, ts))
        node_order = SpikeTrains(ids, ts).sorted_by_time()
        np.testing.assert_array_equal(node_order.node_ids, ids[ref])
        np.testing.assert_array_equal(node_order.timestamps, ts[ref])
        shuffled = rng.permutation(ids.size)
        anyorder = SpikeTrains(ids[shuffled], ts[shuffled]).sorted_by_time()
        np.testing.assert_array_equal(anyorder.node_ids, ids[ref])
        np.testing.assert_array_equal(anyorder.timestamps, ts[ref])
        again = node_order.sorted_by_time()
        np.testing.assert_array_equal(again.node_ids, ids[ref])
        np.testing.assert_array_equal(again.timestamps, ts[ref])
