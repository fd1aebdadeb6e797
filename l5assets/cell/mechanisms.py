"""Compile the project's NMODL with nrnivmodl into a cache keyed by the .mod content hash.

The cache entry is `<cache_root>/mechanisms-<hash16>-{exact|tables}[-coreneuron][-cf<flags8>]/`,
holding the nrnivmodl output folder (`x86_64/` or the machine's arch). The `exact` build (the
default) compiles the .mod files with their rate TABLE statements removed: the exact rate
equations, as with the tables switched off, but without NMODL's table branch in every
channel's state loop, which kept CoreNEURON's loops scalar (with -ffast-math GCC vectorises
them with libmvec's exp: CoreNEURON's stepping ~2x faster, measured in
benchmarks/bench_simulation.py). The `tables` build keeps them, for param sets that ask for
`rate_tables`. Extra compiler flags (`cflags`; default from L5ASSETS_MECH_CFLAGS, else
DEFAULT_CFLAGS "-O3 -march=native -ffast-math"; "" or "none": nrnivmodl's own -O2) are part
of the key, and with -march=native so is the CPU, so a cache shared by the nodes of a
cluster never hands one CPU's build to another. Unchanged .mod files never recompile; two
processes compiling at once are serialised by a lock file and the entry is published by an
atomic rename, so a reader never sees a half-built library.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from l5assets import paths


class MechanismCompileError(RuntimeError):
    """nrnivmodl failed; the message carries its output."""


class StaleMechanismsError(MechanismCompileError):
    """A build was asked for beside one made from other .mod files than the project's now."""


@dataclass(frozen=True)
class CompiledMechanisms:
    """A compiled mechanism library in the cache."""

    mod_hash: str
    directory: Path  # folder to pass to neuron.load_mechanisms / nrn_load_dll's parent
    library: Path  # libnrnmech.so
    coreneuron: bool
    mod_files: tuple[str, ...]
    cflags: str = ""
    rate_tables: bool = False  # the `tables` build (TABLE statements kept)

    @property
    def coreneuron_library(self) -> Path:
        """CoreNEURON's mechanism library (only in a `coreneuron=True` build)."""
        lib = self.library.parent / "libcorenrnmech.so"
        if not lib.exists():
            raise MechanismCompileError(f"no CoreNEURON library in {self.library.parent}")
        return lib

    def coreneuron_env(self) -> dict[str, str]:
        """Environment for a process that runs CoreNEURON: it finds our mechanisms only
        through CORENEURONLIB, which must be set before NEURON is imported."""
        return {"CORENEURONLIB": str(self.coreneuron_library)}

    @classmethod
    def from_record(cls, record: Path) -> CompiledMechanisms:
        """Read back an entry written with `as_metadata` (the compiled_mechanisms asset's
        record), so that a worker process loads exactly the library the pipeline built."""
        import json

        rec = json.loads(Path(record).read_text())
        lib = Path(rec["library"])
        if not lib.exists():
            raise MechanismCompileError(
                f"{record}: library {lib} is gone; re-materialize compiled_mechanisms"
            )
        return cls(
            mod_hash=rec["mod_hash"],
            directory=Path(rec["directory"]),
            library=lib,
            coreneuron=bool(rec["coreneuron"]),
            mod_files=tuple(rec["mod_files"]),
            cflags=str(rec.get("cflags", "")),
            rate_tables=bool(rec.get("rate_tables", False)),
        )

    def as_metadata(self) -> dict[str, str | bool | list[str]]:
        return {
            "mod_hash": self.mod_hash,
            "directory": str(self.directory),
            "library": str(self.library),
            "coreneuron": self.coreneuron,
            "mod_files": list(self.mod_files),
            "cflags": self.cflags,
            "rate_tables": self.rate_tables,
        }


def mod_files(mod_dir: Path | None = None) -> list[Path]:
    """The .mod files of a mechanism folder, sorted by name."""
    d = Path(mod_dir or paths.mechanisms_dir())
    files = sorted(d.glob("*.mod"))
    if not files:
        raise MechanismCompileError(f"no .mod files in {d}")
    return files


_TABLE_LINE = re.compile(r"^[ \t]*TABLE\b[^\n]*\n?", re.MULTILINE)


def strip_rate_tables(text: str) -> str:
    """An NMODL text without its TABLE statements (one line each in the project's files)."""
    return _TABLE_LINE.sub("", text)


def mod_hash(mod_dir: Path | None = None) -> str:
    """sha256 over the names and bytes of every .mod file (the cache key)."""
    h = hashlib.sha256()
    for f in mod_files(mod_dir):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


CFLAGS_ENV = "L5ASSETS_MECH_CFLAGS"
# The default build's flags. -ffast-math lets GCC vectorise the channels' state loops with
# libmvec's exp (CoreNEURON's stepping ~2x faster); it changes results at rounding level only
# (reordered arithmetic, a vector exp within a few ulp, denormals flushed to zero by GCC's
# crtfastmath): on L5_quick seed 123 the soma spike train is the plain build's (tested).
DEFAULT_CFLAGS = "-O3 -march=native -ffast-math"
NO_CFLAGS = "none"  # the word that asks for nrnivmodl's own flags (as "" does)
_CFLAGS_OK = re.compile(r"[A-Za-z0-9_=+,./ -]*")


def build_cflags(cflags: str | None = None) -> str:
    """The extra compiler flags of a mechanism build: `cflags`, else $L5ASSETS_MECH_CFLAGS,
    else DEFAULT_CFLAGS; "" or "none" is nrnivmodl's own flags (returned as ""). Raises
    MechanismCompileError (one line, naming the field) for characters a flag never needs."""
    env = os.environ.get(CFLAGS_ENV)
    field = "cflags" if cflags is not None else CFLAGS_ENV
    value = cflags if cflags is not None else (env if env is not None else DEFAULT_CFLAGS)
    value = " ".join(value.split())
    if not _CFLAGS_OK.fullmatch(value):
        raise MechanismCompileError(
            f"{field}: {value!r} has characters outside [A-Za-z0-9_=+,./ -] (compiler flags "
            f"such as {DEFAULT_CFLAGS}, or {NO_CFLAGS!r} for nrnivmodl's own)"
        )
    return "" if value.lower() == NO_CFLAGS else value


def _cpu_identity() -> str:
    """What -march=native compiles for: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [
        line
        for line in info.splitlines()
        if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")
    ]
    return "\n".join(sorted(set(keep)))


def flags_key(cflags: str) -> str:
    """The cache-entry suffix of a flag set ("" for none)."""
    if not cflags:
        return ""
    native = re.search(r"=native\b", cflags) is not None  # -march/-mtune/-mcpu=native
    ident = cflags + ("\0" + _cpu_identity() if native else "")
    return "-cf" + hashlib.sha256(ident.encode()).hexdigest()[:8]


def _arch_dir(root: Path) -> Path:
    machine = platform.machine()
    for cand in (machine, "x86_64", "aarch64", "arm64"):
        if (root / cand / ".libs" / "libnrnmech.so").exists() or (
            root / cand / "libnrnmech.so"
        ).exists():
            return root / cand
    raise MechanismCompileError(f"no compiled library found under {root}")


def _library(arch: Path) -> Path:
    for cand in (arch / "libnrnmech.so", arch / ".libs" / "libnrnmech.so"):
        if cand.exists():
            return cand
    raise MechanismCompileError(f"no libnrnmech.so in {arch}")


def _nrnivmodl() -> str:
    exe = Path(sys.executable).with_name("nrnivmodl")
    return str(exe) if exe.exists() else (shutil.which("nrnivmodl") or "nrnivmodl")


COMPILE_EXPECTED_S = 30  # nrnivmodl, exact build, 2 cores: measured 13-17 s (CoreNEURON 31 s)
COMPILE_HEARTBEAT_S = 10.0


def compile_mechanisms(
    mod_dir: Path | None = None,
    cache_root: Path | None = None,
    coreneuron: bool = False,
    on_progress: Callable[[str], None] | None = None,
    cflags: str | None = None,
    rate_tables: bool = False,
) -> CompiledMechanisms:
    """Compile (or reuse) the mechanisms of `mod_dir` with extra compiler flags `cflags`
    (see `build_cflags`), their rate TABLEs removed unless `rate_tables`; returns the cache
    entry.

    `on_progress` receives one-line messages while a compile runs (its start, a heartbeat every
    COMPILE_HEARTBEAT_S, its end); a cache hit says nothing.

    When the flags are DEFAULT_CFLAGS (chosen by default, or carried over from a build that
    had them) and this compiler rejects them (e.g. no -march=native) while nrnivmodl's own
    flags compile: the build with nrnivmodl's own, said through `on_progress`; the entry's
    `cflags` tells which were used, and the failure is remembered in the cache
    (`.<entry>.failed`, delete it to try again), so it is not tried again. Other flags never
    fall back, and an error of the .mod files themselves is raised as it is."""
    flags = build_cflags(cflags)
    root = Path(cache_root or paths.cache_dir())
    args = (mod_dir, cache_root, coreneuron, on_progress)
    if flags != DEFAULT_CFLAGS:
        return _compile(*args, flags, rate_tables)
    name = _entry_name(mod_hash(mod_dir), rate_tables, coreneuron, flags)
    failed = root / f".{name}.failed"
    if (root / name / "COMPLETE").exists() or not failed.exists():
        try:
            return _compile(*args, flags, rate_tables)
        except MechanismCompileError as e:
            error = e
            plain = _compile(*args, "", rate_tables)  # raises if the .mod files are at fault
            failed.write_text(str(error))
    else:
        plain = _compile(*args, "", rate_tables)
    if on_progress is not None:
        on_progress(
            f"the default compiler flags {flags!r} failed here (see {failed}); using "
            f"nrnivmodl's own (set {CFLAGS_ENV} to choose)"
        )
    return plain


def _entry_name(digest: str, rate_tables: bool, coreneuron: bool, flags: str) -> str:
    name = f"mechanisms-{digest[:16]}-" + ("tables" if rate_tables else "exact")
    return name + ("-coreneuron" if coreneuron else "") + flags_key(flags)


def _compile(
    mod_dir: Path | None,
    cache_root: Path | None,
    coreneuron: bool,
    on_progress: Callable[[str], None] | None,
    flags: str,
    rate_tables: bool,
) -> CompiledMechanisms:
    """`compile_mechanisms` with the flags decided."""
    src = Path(mod_dir or paths.mechanisms_dir())
    files = mod_files(src)
    digest = mod_hash(src)
    root = Path(cache_root or paths.cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    name = _entry_name(digest, rate_tables, coreneuron, flags)
    entry = root / name

    def _done() -> CompiledMechanisms:
        arch = _arch_dir(entry)
        return CompiledMechanisms(
            mod_hash=digest,
            directory=entry,
            library=_library(arch),
            coreneuron=coreneuron,
            mod_files=tuple(f.name for f in files),
            cflags=flags,
            rate_tables=rate_tables,
        )

    if (entry / "COMPLETE").exists():
        return _done()
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second compiler waits, then reuses the result
        if (entry / "COMPLETE").exists():
            return _done()
        work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            mods = work / "mod"
            mods.mkdir()
            for f in files:
                text = f.read_text()
                (mods / f.name).write_text(text if rate_tables else strip_rate_tables(text))
            cmd = [_nrnivmodl()] + (["-coreneuron"] if coreneuron else [])
            # -incflags lands after nrnivmodl's own -O2 on the compile line (so -O3 wins)
            cmd += (["-incflags", flags] if flags else []) + ["mod"]
            rc, output = _run_nrnivmodl(cmd, work, len(files), coreneuron, on_progress)
            if rc != 0:
                raise MechanismCompileError(f"nrnivmodl failed ({rc}) in {work}:\n{output[-8000:]}")
            (work / "COMPLETE").write_text(digest + "\n")
            if entry.exists():  # a stale, incomplete entry from a killed run
                shutil.rmtree(entry)
            os.replace(work, entry)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return _done()


def _run_nrnivmodl(
    cmd: list[str],
    work: Path,
    n_files: int,
    coreneuron: bool,
    on_progress: Callable[[str], None] | None,
) -> tuple[int, str]:
    """Run nrnivmodl in `work`; returns (exit code, its output). Reports while it runs."""
    say = on_progress or (lambda _msg: None)
    kind = "CoreNEURON + NEURON" if coreneuron else "NEURON"
    say(
        f"compiling {n_files} {kind} mechanisms with nrnivmodl: once per set of .mod files, "
        f"expect ~{COMPILE_EXPECTED_S * (2 if coreneuron else 1)} s (cached afterwards)"
    )
    t0 = time.monotonic()
    log = work / "nrnivmodl.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT, text=True)
        while True:
            try:
                rc = proc.wait(timeout=COMPILE_HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                say(f"compiling mechanisms: {time.monotonic() - t0:.0f} s")
    say(f"compiled mechanisms in {time.monotonic() - t0:.0f} s")
    return rc, log.read_text(errors="replace")


_LOADED: dict[str, Path] = {}

# Channels whose voltage-dependent rates have a TABLE (-100..100 mV, 0.1 mV steps). NEURON
# turns tables on by default; we turn them off at load, so every result is the exact rate
# equations unless a param set asks for `rate_tables` (interpolation: faster, other numerics).
RATE_TABLE_MECHANISMS = (
    "Ca_HVA",
    "Ca_LVAst",
    "Ih",
    "Im",
    "K_Pst",
    "K_Tst",
    "NaTa_t",
    "NaTs2_t",
    "Nap_Et2",
    "SKv3_1",
)


def set_rate_tables(on: bool) -> list[str]:
    """Switch the rate TABLEs of RATE_TABLE_MECHANISMS on or off in this process (those the
    loaded library has); returns the mechanisms switched. Switching them on needs a library
    that has them (the `tables` build, `with_rate_tables`): MechanismCompileError otherwise."""
    from neuron import h

    done = []
    for name in RATE_TABLE_MECHANISMS:
        if hasattr(h, f"usetable_{name}"):
            setattr(h, f"usetable_{name}", 1.0 if on else 0.0)
            done.append(name)
    if on and not done:
        raise MechanismCompileError(
            "rate_tables: the loaded mechanism library has no rate TABLEs (the exact build); "
            "load its tables build (with_rate_tables)"
        )
    return done


def _sibling(
    compiled: CompiledMechanisms,
    why: str,
    on_progress: Callable[[str], None] | None,
    rate_tables: bool,
    coreneuron: bool,
) -> CompiledMechanisms:
    """Another build of the same .mod files and flags as `compiled`, compiled next to it on
    first use; StaleMechanismsError (naming `why`) if the project's .mod files have changed
    since `compiled` was made."""
    other = compile_mechanisms(
        cache_root=compiled.directory.parent,
        coreneuron=coreneuron,
        on_progress=on_progress,
        cflags=compiled.cflags,
        rate_tables=rate_tables,
    )
    if other.mod_hash != compiled.mod_hash:
        raise StaleMechanismsError(
            f"{why}: the mechanisms {compiled.mod_hash[:16]} are not the project's "
            f"current .mod files ({other.mod_hash[:16]}); re-materialize compiled_mechanisms"
        )
    return other


def with_rate_tables(
    compiled: CompiledMechanisms, on_progress: Callable[[str], None] | None = None
) -> CompiledMechanisms:
    """The `tables` build of the same .mod files, flags and kind as `compiled`, compiled
    next to it on first use (`compiled` itself if it is one, or a library built before the
    exact builds existed, which kept its tables)."""
    if compiled.rate_tables or "-exact" not in compiled.directory.name:
        return compiled
    return _sibling(compiled, "rate_tables", on_progress, True, compiled.coreneuron)


def with_coreneuron(
    compiled: CompiledMechanisms, on_progress: Callable[[str], None] | None = None
) -> CompiledMechanisms:
    """The `nrnivmodl -coreneuron` build of the same .mod files, flags and tables as
    `compiled`, compiled next to it on first use (`compiled` itself if it is one)."""
    if compiled.coreneuron:
        return compiled
    return _sibling(compiled, "coreneuron", on_progress, compiled.rate_tables, True)


def for_this_cpu(
    compiled: CompiledMechanisms, on_progress: Callable[[str], None] | None = None
) -> CompiledMechanisms:
    """`compiled`, or, for a -march=native build made on another CPU (a record read on a
    cluster node), the same build compiled for this CPU beside it: code for one CPU can
    crash on another."""
    key = flags_key(compiled.cflags)
    if not key or compiled.directory.name.endswith(key):
        return compiled
    return _sibling(
        compiled, "a build for another CPU", on_progress, compiled.rate_tables, compiled.coreneuron
    )


def loaded_library() -> Path | None:
    """The mechanism library loaded into this process by `load_mechanisms`, if any."""
    return Path(next(iter(_LOADED))) if _LOADED else None


def load_mechanisms(compiled: CompiledMechanisms) -> None:
    """Load a compiled library into this process's NEURON (once per process)."""
    from neuron import h

    key = str(compiled.library)
    if key in _LOADED:
        return
    if _LOADED:
        # NEURON cannot unload a library; two different builds in one process would clash.
        raise MechanismCompileError(
            f"another mechanism library is already loaded in this process: {list(_LOADED)}"
        )
    if not h.nrn_load_dll(key):
        raise MechanismCompileError(f"NEURON could not load {key}")
    _LOADED[key] = compiled.directory
    set_rate_tables(False)
