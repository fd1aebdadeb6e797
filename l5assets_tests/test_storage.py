"""Atomic writes never leave partial files and never destroy an earlier good output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from l5assets import storage


def test_partition_dirs(tmp_path: Path) -> None:
    assert storage.partition_dir(tmp_path, "segments_table", "L5_quick") == (
        tmp_path / "L5_quick" / "shared" / "segments_table"
    )
    assert storage.partition_dir(tmp_path, "exc_raster", "L5_quick", 7) == (
        tmp_path / "L5_quick" / "seed-7" / "exc_raster"
    )


def test_failed_write_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "out.txt"
    storage.atomic_write_text(target, "good")
    with pytest.raises(RuntimeError):
        with storage.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_whole_folder(tmp_path: Path) -> None:
    final = tmp_path / "net"
    with storage.atomic_dir(final) as d:
        (d / "x.h5").write_bytes(b"1")
    h1 = storage.dir_sha256(final)
    with pytest.raises(ValueError):
        with storage.atomic_dir(final) as d:
            (d / "x.h5").write_bytes(b"2")
            raise ValueError
    assert storage.dir_sha256(final) == h1
    with storage.atomic_dir(final) as d:
        (d / "y.h5").write_bytes(b"2")
    assert sorted(p.name for p in final.iterdir()) == ["y.h5"]
    assert storage.dir_sha256(final) != h1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]


def test_outputs_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        f = storage.atomic_write_text(tmp_path / "f.txt", "x")
        with storage.atomic_dir(tmp_path / "d") as d:
            (d / "g").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_cell_validation_namespace_is_no_param_set(tmp_path: Path):
    from l5assets.params import ParamsError, is_param_set_name, validate_param_set_name
    from l5assets.storage import CELLS_NAMESPACE, cell_dir

    assert cell_dir(tmp_path, "validation_bap", "L5PC_bbp") == (
        tmp_path / "_cells" / "L5PC_bbp" / "validation_bap"
    )
    assert not is_param_set_name(CELLS_NAMESPACE)
    with pytest.raises(ParamsError, match="reserved"):
        validate_param_set_name(CELLS_NAMESPACE)
    # `status` lists param sets only, never the validation folder or its cells
    from l5assets.lineage.status import status

    (cell_dir(tmp_path / "out", "validation_bap", "L5PC_bbp")).mkdir(parents=True)
    (tmp_path / "out" / "P1" / "seed-1").mkdir(parents=True)
    (tmp_path / "params").mkdir()
    rows = status(root=tmp_path / "out", params_dir=tmp_path / "params")
    assert {r["param_set"] for r in rows} == {"P1"}
