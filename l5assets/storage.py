"""Per-partition file locations, atomic writes and content hashes.

Layout under the storage root:
    <root>/<param_set>/shared/<asset>/...        assets partitioned by param set only
    <root>/<param_set>/seed-<seed>/<asset>/...   assets partitioned by param set x seed
    <root>/_cells/<cell>/<asset>/...             cell-validation assets, partitioned by cell
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _readable(path: Path, mode: int) -> None:
    """mkstemp/mkdtemp create private (0600/0700) entries: give outputs the usual mode."""
    os.chmod(path, mode & ~_umask())


# The cell-validation namespace: no param set may take this name (`params.RESERVED_NAMES`).
CELLS_NAMESPACE = "_cells"


def partition_dir(root: Path, asset: str, param_set: str, seed: int | None = None) -> Path:
    """Folder owned by one asset for one partition (not created)."""
    sub = "shared" if seed is None else f"seed-{int(seed)}"
    return Path(root) / param_set / sub / asset


def cell_dir(root: Path, asset: str, cell: str) -> Path:
    """Folder owned by one cell-validation asset for one cell (not created)."""
    return Path(root) / CELLS_NAMESPACE / cell / asset


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it into place only if the block succeeds.

    A failed write leaves any earlier file at `final` untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    _readable(tmp_path, 0o666)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(final: Path, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: Path, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write_bytes(final, text.encode())


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `final`; swap it into place only on success.

    For outputs made of several files (e.g. a BMTK network folder).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    _readable(tmp, 0o777)
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old.{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: Path) -> str:
    """sha256 hex digest of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(paths: list[Path], base: Path | None = None) -> str:
    """One digest over several files: their names (relative to `base`) and contents, sorted."""
    h = hashlib.sha256()
    for p in sorted(Path(x) for x in paths):
        name = str(p.relative_to(base)) if base else p.name
        h.update(name.encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return h.hexdigest()


def dir_sha256(folder: Path) -> str:
    """Digest of every regular file below a folder (hidden temp files excluded)."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return files_sha256(files, base=folder)
