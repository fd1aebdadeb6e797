"""Tier 1 (pure functions) of the Dagster layer: partition keys, registration, result helpers."""

import warnings
from pathlib import Path

import dagster as dg
import pytest

from l5assets.defs.common import MissingUpstreamError, content_hash, upstream_file
from l5assets.defs.partitions import (
    PARAM_SET_DIM,
    SEED_DIM,
    by_param_set,
    param_set_partitions,
    partition_of,
    register_partitions,
    run_partition_key,
    run_partitions,
)
from l5assets.defs.resources import StorageResource
from l5assets.params import ParamsError
from l5assets.storage import files_sha256

warnings.filterwarnings("ignore", category=dg.BetaWarning)


def test_run_partition_key_orders_dimensions_and_validates():
    key = run_partition_key("L5_quick", 123)
    assert str(key) == "L5_quick|123"
    assert key.keys_by_dimension == {PARAM_SET_DIM: "L5_quick", SEED_DIM: "123"}
    assert run_partition_key("L5_quick", "7") == "L5_quick|7"
    with pytest.raises(ParamsError):
        run_partition_key("bad name", 1)  # space: not a partition key
    with pytest.raises(ParamsError):
        run_partition_key("L5_quick", -1)
    with pytest.raises(ParamsError):
        run_partition_key("L5_quick", "1.5")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("L5_quick", ("L5_quick", None)),
        ("L5_quick|42", ("L5_quick", 42)),
        (dg.MultiPartitionKey({"param_set": "A-b_1", "seed": "0"}), ("A-b_1", 0)),
    ],
)
def test_partition_of(key, expected):
    assert partition_of(key) == expected


def test_partition_of_rejects_bad_keys():
    with pytest.raises(ParamsError):
        partition_of("L5|x")
    with pytest.raises(ParamsError):
        partition_of("a/b")


def test_register_partitions_adds_only_new_keys():
    with dg.instance_for_test() as instance:
        register_partitions(instance, ["A", "B"], [1, "2", 2])
        register_partitions(instance, ["B", "C"], [2, 3])
        assert instance.get_dynamic_partitions(PARAM_SET_DIM) == ["A", "B", "C"]
        assert instance.get_dynamic_partitions(SEED_DIM) == ["1", "2", "3"]
        # the multi-partitions definition sees the product of both dimensions
        keys = run_partitions.get_partition_keys(dynamic_partitions_store=instance)
        assert len(keys) == 9 and "B|3" in keys
        with pytest.raises(ParamsError):
            register_partitions(instance, ["ok"], ["nope"])
        # nothing of the failed call was registered
        assert "ok" not in instance.get_dynamic_partitions(PARAM_SET_DIM)


def test_by_param_set_maps_every_seed_to_its_param_set():
    with dg.instance_for_test() as instance:
        register_partitions(instance, ["A", "B"], [1, 2])
        down = run_partitions.subset_with_partition_keys(["A|1", "A|2"])
        up = by_param_set.get_upstream_mapped_partitions_result_for_partitions(
            down, run_partitions, param_set_partitions, dynamic_partitions_store=instance
        )
        assert set(up.partitions_subset.get_partition_keys()) == {"A"}
        down_of_b = by_param_set.get_downstream_partitions_for_partitions(
            param_set_partitions.subset_with_partition_keys(["B"]),
            param_set_partitions,
            run_partitions,
            dynamic_partitions_store=instance,
        )
        assert set(down_of_b.get_partition_keys()) == {"B|1", "B|2"}


def test_upstream_file_and_content_hash(tmp_path: Path):
    storage = StorageResource(root=str(tmp_path), params_dir=str(tmp_path / "params"))
    with pytest.raises(MissingUpstreamError, match="materialize asset 'network'"):
        upstream_file(storage, "network", "A", 3, "x.h5")
    d = storage.partition_dir("network", "A", 3)
    assert d == tmp_path / "A" / "seed-3" / "network"
    d.mkdir(parents=True)
    (d / "x.h5").write_bytes(b"abc")
    (d / "y.csv").write_bytes(b"def")
    assert upstream_file(storage, "network", "A", 3, "x.h5") == d / "x.h5"
    # outputs named by their final paths are hashed from the temp folder before the swap
    final = storage.partition_dir("exc_raster", "A", 3)
    files = {"x": final / "x.h5", "y": final / "y.csv"}
    h = content_hash(files, final, d)
    assert h == files_sha256([d / "x.h5", d / "y.csv"], base=d)
    (d / "y.csv").write_bytes(b"deg")
    assert content_hash(files, final, d) != h


def test_run_logged_imports_the_prefetch_modules_while_it_waits(tmp_path, monkeypatch):
    """`l5assets run` names modules of later steps; the first subprocess wait imports them in
    a thread, once; a module that fails to import is left to its step."""
    import sys
    import time

    from l5assets.defs import common

    (tmp_path / "l5_prefetch_probe.py").write_text("import time\ntime.sleep(0.2)\nLOADED = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(common, "PREFETCH_MODULES", ["l5_no_such_module", "l5_prefetch_probe"])
    ctx = dg.build_asset_context()
    common.run_logged(ctx, [sys.executable, "-c", "import time; time.sleep(1.0)"], timeout_s=60)
    deadline = time.monotonic() + 10
    while "l5_prefetch_probe" not in sys.modules and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sys.modules["l5_prefetch_probe"].LOADED == 1
    assert common.PREFETCH_MODULES == []  # once per process
    sys.modules.pop("l5_prefetch_probe")


def test_run_logged_streams_fails_and_times_out():
    import sys
    import time

    from l5assets.defs.common import SubprocessError, run_logged

    ctx = dg.build_asset_context()
    py = sys.executable
    tail = run_logged(ctx, [py, "-c", "print('a'); print('b')"], timeout_s=60, keep_lines=1)
    assert tail == ["b"]
    with pytest.raises(SubprocessError, match=r"exit code 3[\s\S]*boom"):
        run_logged(ctx, [py, "-c", "import sys; print('boom'); sys.exit(3)"], timeout_s=60)
    t0 = time.monotonic()
    # the child starts a grandchild that holds the pipe: the whole group is killed
    code = (
        "import subprocess, sys, time; print('started', flush=True); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)"
    )
    with pytest.raises(SubprocessError, match=r"timed out[\s\S]*started"):
        run_logged(ctx, [py, "-c", code], timeout_s=1.5)
    assert time.monotonic() - t0 < 20
