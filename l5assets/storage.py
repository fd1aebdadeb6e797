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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


# --------------------------------------------------------------------------------------------
# one writer per partition: lock files with the holder's pid and host

LOCK_SUFFIX = ".lock"
# Locks this process holds (path -> depth): a process may re-enter its own lock.
_HELD: dict[str, int] = {}


class LockBusy(RuntimeError):
    """Another live process holds the lock; `holder` is what it wrote (pid, host, since)."""

    def __init__(self, message: str, holder: dict | None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def process_start_ticks(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot, /proc), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int | None, start_ticks: int | None = None) -> bool:
    """Whether `pid` (with that start time, if given) is a running process on this host."""
    if not pid:
        return False
    now = process_start_ticks(int(pid))
    if now is None:
        return False
    state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    return start_ticks is None or int(start_ticks) == now


def _holder_info() -> dict:
    import socket
    import sys
    import time

    return {
        "pid": os.getpid(),
        "pid_start": process_start_ticks(os.getpid()),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv[:4])[:200],
    }


def read_lock_holder(path: Path) -> dict | None:
    """What the holder of a lock file wrote (None if empty or unreadable)."""
    import json

    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict | None) -> str:
    h = holder or {}
    return f"pid {h.get('pid', '?')} on host {h.get('host', '?')} since {h.get('since', '?')}"


@dataclass
class LockState:
    """How a lock was taken: after waiting for another holder, or over a dead one's lock."""

    path: Path
    waited_for: dict | None = None
    stale: dict | None = None
    reentrant: bool = False


@contextlib.contextmanager
def exclusive_lock(
    path: Path,
    label: str,
    *,
    wait: bool = False,
    timeout_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[LockState]:
    """Hold the lock file `path` (flock: the kernel drops it when the holder dies).

    The holder writes its pid, host and start time into the file and removes it on release,
    so a file found free but naming a holder was left by a dead one: it is taken over and reported
    (`LockState.stale`). Busy: raise LockBusy (wait=False) or wait (calling `on_wait` once
    with a message) until free or `timeout_s` passed. Re-entrant within one process.
    """
    import fcntl
    import time

    path = Path(path)
    key = str(path.absolute())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield LockState(path, reentrant=True)
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = LockState(path)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    fd = -1
    try:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the holder removed the file as we opened it: open it anew
                fd = -1
                continue
            except BlockingIOError:
                os.close(fd)
                fd = -1
                holder = read_lock_holder(path)
                msg = f"{label} is being materialized by {describe_holder(holder)}"
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    raise LockBusy(msg, holder) from None
                if state.waited_for is None:
                    state.waited_for = holder or {}
                    if on_wait is not None:
                        on_wait(f"{msg}: waiting for it")
                time.sleep(0.25)
        previous = read_lock_holder(path)
        if previous and previous.get("pid") != os.getpid():
            state.stale = previous
        info = _holder_info()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (__import__("json").dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        _HELD[key] = 1
        try:
            yield state
        finally:
            _HELD.pop(key, None)
            # released cleanly: the file goes (a dead holder's stays, naming it); a waiter
            # that opened the old file sees the inode change and opens the path again
            os.ftruncate(fd, 0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock


# --------------------------------------------------------------------------------------------
# temp folders left by killed runs


def leftover_temps(folder: Path, asset: str | None = None) -> list[Path]:
    """Temp entries of `atomic_dir` / `atomic_path` under `folder` (one level), for one asset
    or all: `.<name>.<random>.tmp` and `.<name>.old.<pid>`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pats = [f".{asset}.*.tmp", f".{asset}.old.*"] if asset else [".*.tmp", ".*.old.*"]
    found = {p for pat in pats for p in folder.glob(pat)}
    return sorted(found)


def remove_paths(entries: list[Path]) -> list[Path]:
    """Remove files and folders; returns those removed."""
    done = []
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if not p.exists():
            done.append(p)
    return done


def scan_leftover_temps(root: Path, max_depth: int = 3) -> list[Path]:
    """Every temp entry below a storage root (param set / partition / asset levels)."""
    root = Path(root)
    out: list[Path] = []
    if not root.is_dir():
        return out
    level = [root]
    for _ in range(max_depth):
        nxt = []
        for d in level:
            out += leftover_temps(d)
            nxt += [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
        level = nxt
    return sorted(set(out))


def cache_temps(cache_root: Path) -> list[Path]:
    """Work folders of mechanism compiles (`.<entry>.<random>`) in the compile cache."""
    root = Path(cache_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(".mechanisms-*") if p.is_dir())


def clean_cache_temps(cache_root: Path) -> list[Path]:
    """Remove compile work folders whose compile is not running (its cache lock is free)."""
    import fcntl

    removed = []
    for p in cache_temps(cache_root):
        name = p.name[1:].split(".", 1)[0]
        lock = Path(cache_root) / f".{name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a compile is using it
            removed += remove_paths([p])
        finally:
            os.close(fd)
    return removed


def lock_held(path: Path) -> bool:
    """Whether a live process holds the lock file `path` (False if there is none)."""
    import fcntl

    if not Path(path).is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def killed_temps(folder: Path) -> list[Path]:
    """`leftover_temps` of a folder whose writer is gone (its asset's lock is not held)."""
    out = []
    for p in leftover_temps(folder):
        asset = p.name[1:].split(".", 1)[0]
        if not lock_held(Path(folder) / f".{asset}{LOCK_SUFFIX}"):
            out.append(p)
    return out
