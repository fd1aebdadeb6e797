"""The project's NMODL folder compiles with nrnivmodl and nrnivmodl -coreneuron, via the cache.

- every .mod file of biophys_components/mechanisms is compiled (whatever is there: channels and
  synapses), the NEURON build and the CoreNEURON build;
- a second call is a cache hit (nrnivmodl is not run again);
- two processes compiling into the same empty cache at once both succeed and get one entry;
- the CoreNEURON build runs a one-compartment cell with all Hay channels and matches NEURON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from l5assets import paths
from l5assets.cell import mechanisms

# Hay's channels: the ten with voltage-dependent rate TABLEs, the Ca2+-activated K+ channel
# and the Ca2+ buffer
HAY_MECHANISMS = (*mechanisms.RATE_TABLE_MECHANISMS, "SK_E2", "CaDynamics_E2")


def _mod_names() -> list[str]:
    return [f.stem for f in mechanisms.mod_files()]


def _assert_entry_complete(entry: mechanisms.CompiledMechanisms) -> None:
    names = _mod_names()
    assert set(HAY_MECHANISMS) <= set(names)
    assert list(entry.mod_files) == [f"{n}.mod" for n in names]
    assert entry.mod_hash == mechanisms.mod_hash()
    assert entry.library.exists() and entry.library.name == "libnrnmech.so"
    arch = entry.library.parent
    for name in names:  # nocmodl translated every file into the NEURON library
        assert (arch / f"{name}.cpp").exists(), name
    if entry.coreneuron:
        assert (arch / "libcorenrnmech.so").exists()
        for name in names:  # ... and the NMODL transpiler for CoreNEURON too
            assert (arch / "corenrn" / "mod2c" / f"{name}.cpp").exists(), name


def test_neuron_build_compiles_all_mod_files_and_is_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = mechanisms.compile_mechanisms()
    assert not entry.coreneuron
    _assert_entry_complete(entry)
    stamp = (entry.directory / "COMPLETE").stat().st_mtime_ns

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nrnivmodl ran again: {args}")

    monkeypatch.setattr(mechanisms.subprocess, "Popen", no_compile)
    again = mechanisms.compile_mechanisms()
    assert again == entry
    assert (entry.directory / "COMPLETE").stat().st_mtime_ns == stamp


def test_coreneuron_build_compiles_all_mod_files_and_is_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the default cache is shared with the simulation assets: after the first build this is a hit
    monkeypatch.delenv(mechanisms.CFLAGS_ENV, raising=False)  # the default flags
    entry = mechanisms.compile_mechanisms(coreneuron=True)
    assert entry.coreneuron and entry.cflags == mechanisms.DEFAULT_CFLAGS
    assert entry.directory.name.endswith("-coreneuron" + mechanisms.flags_key(entry.cflags))
    _assert_entry_complete(entry)

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nrnivmodl ran again: {args}")

    monkeypatch.setattr(mechanisms.subprocess, "Popen", no_compile)
    assert mechanisms.compile_mechanisms(coreneuron=True) == entry


_COMPILE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from l5assets.cell.mechanisms import compile_mechanisms
    e = compile_mechanisms(mod_dir=Path(sys.argv[1]), cache_root=Path(sys.argv[2]))
    print(json.dumps({"directory": str(e.directory), "library": str(e.library)}))
    """
)


def test_two_processes_compiling_at_once_share_one_entry(tmp_path: Path) -> None:
    # two of our files keep this one real nrnivmodl run short; the locking is content-agnostic
    mod_dir = tmp_path / "mod"
    mod_dir.mkdir()
    for name in ("SKv3_1.mod", "Im.mod"):
        shutil.copy2(paths.mechanisms_dir() / name, mod_dir / name)
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COMPILE_SCRIPT, str(mod_dir), str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    entries = sorted(d.name for d in cache.iterdir() if d.is_dir())
    assert entries == [Path(results[0]["directory"]).name]  # no half-built temp folders left
    assert (cache / entries[0] / "COMPLETE").read_text().strip() == mechanisms.mod_hash(mod_dir)
    assert Path(results[0]["library"]).exists()


# One compartment with every Hay mechanism (somatic values of the reference parameters plus the
# axonal/dendritic-only channels), a current step that makes it fire; NEURON then CoreNEURON.
_CORENEURON_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from neuron import h, coreneuron
    h.nrn_load_dll(sys.argv[1])
    h.load_file("stdrun.hoc")
    soma = h.Section(name="soma")
    soma.L = soma.diam = 20.0
    soma.insert("pas")
    soma.g_pas = 3.38e-5
    soma.e_pas = -90.0
    dens = {"Ih": 2e-4, "NaTa_t": 2.04, "NaTs2_t": 0.1, "Nap_Et2": 1.72e-3, "K_Pst": 2.23e-3,
            "K_Tst": 0.0812, "SK_E2": 0.0441, "SKv3_1": 0.693, "Ca_HVA": 9.92e-4,
            "Ca_LVAst": 3.43e-3, "Im": 6.75e-5}
    for mech, g in dens.items():
        soma.insert(mech)
        name = "gIhbar" if mech == "Ih" else "g%sbar" % mech
        setattr(soma(0.5), "%s_%s" % (name, mech), g)
    soma.insert("CaDynamics_E2")
    soma(0.5).decay_CaDynamics_E2 = 460.0
    soma(0.5).gamma_CaDynamics_E2 = 5.01e-4
    soma.ena = 50.0
    soma.ek = -85.0
    stim = h.IClamp(soma(0.5))
    stim.delay, stim.dur, stim.amp = 20.0, 150.0, 0.6
    h.celsius = 34.0
    h.dt = 0.025
    h.cvode.cache_efficient(1)
    pc = h.ParallelContext()
    pc.set_maxstep(10)
    out = {}
    for mode in ("neuron", "coreneuron"):
        coreneuron.enable = mode == "coreneuron"
        coreneuron.verbose = 0
        v = h.Vector().record(soma(0.5)._ref_v)
        cai = h.Vector().record(soma(0.5)._ref_cai)
        h.finitialize(-80.0)
        pc.psolve(200.0)
        out[mode] = {"v": list(v), "cai": list(cai)}
    coreneuron.enable = False
    print(json.dumps(out))
    """
)


def test_coreneuron_run_matches_neuron() -> None:
    # nrnivmodl's own flags: the engines' agreement (the default build's fast math has its
    # own test, test_default_build.py)
    entry = mechanisms.compile_mechanisms(coreneuron=True, cflags="")
    # CoreNEURON looks for its mechanism library in ./<arch>/ or at $CORENEURONLIB; without it
    # it falls back to the built-in one and aborts ("CaDynamics_E2 mechanism does not exist")
    env = dict(os.environ, CORENEURONLIB=str(entry.library.parent / "libcorenrnmech.so"))
    proc = subprocess.run(
        [sys.executable, "-c", _CORENEURON_SCRIPT, str(entry.library)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=paths.PROJECT_ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    v_nrn, v_core = np.array(out["neuron"]["v"]), np.array(out["coreneuron"]["v"])
    assert v_nrn.shape == v_core.shape and v_nrn.size > 7000
    spikes = int(np.sum((v_nrn[1:] > -10) & (v_nrn[:-1] <= -10)))
    assert spikes >= 3  # the channels fire the cell
    assert np.max(np.abs(v_nrn - v_core)) < 1e-6  # measured: bit-identical
    np.testing.assert_allclose(out["coreneuron"]["cai"], out["neuron"]["cai"], rtol=1e-6)


def test_a_compile_says_it_starts_is_alive_and_ends(tmp_path: Path, monkeypatch) -> None:
    """The one-time compile is announced with its expected duration, then a heartbeat, then
    its end; a cache hit is silent."""
    mods = tmp_path / "mods"
    mods.mkdir()
    shutil.copy(paths.mechanisms_dir() / "CaDynamics_E2.mod", mods)
    monkeypatch.setattr(mechanisms, "COMPILE_HEARTBEAT_S", 0.5)
    said: list[str] = []
    entry = mechanisms.compile_mechanisms(mods, tmp_path / "cache", on_progress=said.append)
    assert (entry.directory / "COMPLETE").exists()
    assert (
        said[0].startswith("compiling 1 NEURON mechanisms with nrnivmodl") and "expect ~" in said[0]
    )
    assert any(m.startswith("compiling mechanisms: ") for m in said[1:-1]), said
    assert said[-1].startswith("compiled mechanisms in ")
    again: list[str] = []
    mechanisms.compile_mechanisms(mods, tmp_path / "cache", on_progress=again.append)
    assert again == []


_PROBE_MOD = """NEURON { SUFFIX flagprobe }
VERBATIM
#ifndef L5_FLAG_PROBE
#error "the extra compiler flags did not reach the compiler"
#endif
ENDVERBATIM
"""


def test_compiler_flags_reach_the_compiler_and_key_the_cache(tmp_path: Path, monkeypatch) -> None:
    """Extra flags (here a -D the .mod file insists on) are on nrnivmodl's compile line and
    make their own cache entry beside the default build; the record keeps them."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "flagprobe.mod").write_text(_PROBE_MOD)
    cache = tmp_path / "cache"
    with pytest.raises(mechanisms.MechanismCompileError, match="did not reach the compiler"):
        mechanisms.compile_mechanisms(mods, cache, cflags="")
    monkeypatch.setenv(mechanisms.CFLAGS_ENV, "-O3  -DL5_FLAG_PROBE=1")
    entry = mechanisms.compile_mechanisms(mods, cache)  # the flags from the environment
    assert entry.cflags == "-O3 -DL5_FLAG_PROBE=1" and entry.library.exists()
    assert entry.directory.name.endswith(mechanisms.flags_key(entry.cflags))
    record = tmp_path / "mechanisms.json"
    record.write_text(json.dumps(entry.as_metadata()))
    assert mechanisms.CompiledMechanisms.from_record(record) == entry


_PLAIN_MOD = """NEURON { SUFFIX plainprobe RANGE g }
PARAMETER { g = 1 }
"""


def test_default_flags_this_compiler_rejects_fall_back_to_nrnivmodls_own(
    tmp_path: Path, monkeypatch
) -> None:
    """A compiler without the default flags (here a flag GCC does not know) still builds,
    with nrnivmodl's own flags, said once and remembered; flags a user chose never fall
    back."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "plainprobe.mod").write_text(_PLAIN_MOD)
    cache = tmp_path / "cache"
    monkeypatch.delenv(mechanisms.CFLAGS_ENV, raising=False)
    monkeypatch.setattr(mechanisms, "DEFAULT_CFLAGS", "-O3 -fno-such-flag-l5")
    said: list[str] = []
    entry = mechanisms.compile_mechanisms(mods, cache, on_progress=said.append)
    assert entry.cflags == "" and entry.library.exists()
    failed = list(cache.glob(".mechanisms-*.failed"))
    assert len(failed) == 1 and "fno-such-flag-l5" in failed[0].read_text()
    assert any("default compiler flags '-O3 -fno-such-flag-l5' failed here" in m for m in said)
    again: list[str] = []

    def no_compile(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"nrnivmodl ran again: {args}")

    monkeypatch.setattr(mechanisms.subprocess, "Popen", no_compile)
    assert mechanisms.compile_mechanisms(mods, cache, on_progress=again.append) == entry
    assert len(again) == 1 and "failed here" in again[0]  # said, not compiled again
    monkeypatch.undo()
    with pytest.raises(mechanisms.MechanismCompileError, match="nrnivmodl failed"):
        mechanisms.compile_mechanisms(mods, cache, cflags="-O3 -fno-such-flag-l5")
    # .mod files that compile with no flags at all: their error, and nothing remembered
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "broken.mod").write_text("NEURON { SUFFIX broken RANGE }\nPARAMETER { g = }\n")
    monkeypatch.delenv(mechanisms.CFLAGS_ENV, raising=False)
    with pytest.raises(mechanisms.MechanismCompileError, match="nrnivmodl failed"):
        mechanisms.compile_mechanisms(broken, tmp_path / "cache2")
    assert not list((tmp_path / "cache2").glob(".*.failed"))


def test_a_native_build_read_on_another_cpu_is_compiled_for_that_cpu(
    tmp_path: Path, monkeypatch
) -> None:
    """A record of a -march=native build, read where the CPU differs (a cluster node), loads
    the same build compiled for this CPU, next to the other."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "plainprobe.mod").write_text(_PLAIN_MOD)
    monkeypatch.setattr(mechanisms.paths, "mechanisms_dir", lambda: mods)
    cache = tmp_path / "cache"
    there = mechanisms.compile_mechanisms(cache_root=cache, cflags="-O2 -march=native")
    assert mechanisms.for_this_cpu(there) is there  # the same CPU
    monkeypatch.setattr(mechanisms, "_cpu_identity", lambda: "model name: another CPU")
    said: list[str] = []
    here = mechanisms.for_this_cpu(there, said.append)
    assert here.directory != there.directory and here.directory.parent == cache
    assert here.cflags == there.cflags and here.mod_hash == there.mod_hash
    assert here.library.exists() and said  # compiled, and said so
    plain = mechanisms.compile_mechanisms(cache_root=cache, cflags="")
    assert mechanisms.for_this_cpu(plain) is plain  # no native code: any CPU


def test_compiler_flags_are_checked_and_native_builds_are_keyed_by_cpu(monkeypatch) -> None:
    with pytest.raises(mechanisms.MechanismCompileError, match=r"^cflags: '-O3; rm' has char"):
        mechanisms.build_cflags("-O3; rm")
    monkeypatch.setenv(mechanisms.CFLAGS_ENV, "$(evil)")
    with pytest.raises(mechanisms.MechanismCompileError, match="^L5ASSETS_MECH_CFLAGS: "):
        mechanisms.build_cflags()
    # an explicit "" (the fit's and the validation's build) never reads the environment
    assert mechanisms.build_cflags("") == ""
    for plain in ("", "none", "  none "):  # the environment's way to ask for nrnivmodl's own
        monkeypatch.setenv(mechanisms.CFLAGS_ENV, plain)
        assert mechanisms.build_cflags() == ""
    monkeypatch.delenv(mechanisms.CFLAGS_ENV)
    assert mechanisms.build_cflags() == mechanisms.DEFAULT_CFLAGS == "-O3 -march=native -ffast-math"
    assert mechanisms.build_cflags("none") == ""
    assert mechanisms.flags_key("") == ""
    native = mechanisms.flags_key("-O3 -march=native")
    monkeypatch.setattr(mechanisms, "_cpu_identity", lambda: "model name: another CPU")
    assert mechanisms.flags_key("-O3 -march=native") != native  # another CPU, another build
    assert mechanisms.flags_key("-O3") == mechanisms.flags_key("-O3")


_TABLE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from neuron import h
    from l5assets.cell.mechanisms import compile_mechanisms, load_mechanisms, set_rate_tables
    mods, cache, build, tables = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4] == "1"
    load_mechanisms(compile_mechanisms(mods, cache, rate_tables=build))
    from neuron import h as _h
    print(json.dumps(any(hasattr(_h, f"usetable_{n}") for n in ("NaTa_t", "Ih"))))
    if tables:
        set_rate_tables(True)
    h.load_file("stdrun.hoc")
    s = h.Section(name="soma")
    s.L = s.diam = 20.0
    s.insert("pas")
    s.e_pas, s.g_pas = -80.0, 3e-5
    for name, g in (("NaTa_t", 2.0), ("SKv3_1", 0.7), ("K_Pst", 0.02), ("Ih", 8e-5)):
        s.insert(name)
        setattr(s(0.5), f"g{name}bar_{name}", g)
    s.ena, s.ek = 50.0, -85.0
    st = h.IClamp(s(0.5))
    st.delay, st.dur, st.amp = 20.0, 300.0, 0.3
    v = h.Vector().record(s(0.5)._ref_v)
    h.dt, h.celsius = 0.025, 34.0
    h.finitialize(-75.0)
    h.continuerun(350.0)
    print(json.dumps([float(x) for x in v]))
    """
)


def test_rate_tables_are_off_by_default_and_exact(tmp_path: Path) -> None:
    """The channels' rate TABLEs: the default (exact) build compiles the .mod files without
    their TABLE lines and gives bit-identical V to the tables build with its tables off;
    switched on (a param set's `rate_tables`, the tables build), the same spikes within
    0.5 ms. Switching tables on in the exact build is refused."""
    names = ("NaTa_t", "SKv3_1", "K_Pst", "Ih")
    mods = tmp_path / "mods"
    mods.mkdir()
    for n in names:
        text = (paths.mechanisms_dir() / f"{n}.mod").read_text()
        assert "TABLE mInf, mTau" in text and n in mechanisms.RATE_TABLE_MECHANISMS
        assert "TABLE" not in mechanisms.strip_rate_tables(text)
        assert "PROCEDURE rates" in mechanisms.strip_rate_tables(text)
        (mods / f"{n}.mod").write_text(text)
    traces, has_tables = {}, {}
    for key, build, tables in (("exact", "0", "0"), ("off", "1", "0"), ("on", "1", "1")):
        cmd = [sys.executable, "-c", _TABLE_SCRIPT, str(mods), str(tmp_path / "cache"), build]
        p = subprocess.run(cmd + [tables], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        lines = p.stdout.strip().splitlines()
        has_tables[key] = json.loads(lines[-2])
        traces[key] = np.array(json.loads(lines[-1]))
    assert has_tables == {"exact": False, "off": True, "on": True}
    exact = next((tmp_path / "cache").glob("mechanisms-*-exact*"))
    assert "TABLE" not in (exact / "mod" / "NaTa_t.mod").read_text()
    np.testing.assert_array_equal(traces["off"], traces["exact"])
    p = subprocess.run(
        cmd[:-1] + ["0", "1"], capture_output=True, text=True, timeout=600
    )  # the exact build, tables asked for
    assert p.returncode != 0 and "has no rate TABLEs" in p.stderr

    def spikes(v: np.ndarray) -> np.ndarray:
        return np.flatnonzero((v[1:] > -10) & (v[:-1] <= -10)) * 0.025

    exact, on = spikes(traces["exact"]), spikes(traces["on"])
    assert exact.size >= 3 and on.size == exact.size
    assert np.max(np.abs(on - exact)) < 0.5
    assert not np.array_equal(traces["on"], traces["exact"])  # the tables were used
