"""simulation_outputs as SLURM jobs through Dagster Pipes, on a real one-node cluster.

The session's cluster (`slurm_cluster.slurm`: munged, slurmctld, slurmd on this host) runs
the simulation of two seed partitions of a small, short param set; their files are
byte-identical to a local run of the same partitions, the materializations carry the job ids
(metadata and the manifest's run section), and terminating a Dagster run (SIGINT to the
process running `dg.materialize`, what Dagster's run termination sends) cancels its job:
SLURM says CANCELLED, no job or job process is left, the previous outputs stay in place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import dagster as dg
import pytest
from conftest import small_params
from slurm_cluster import SlurmCluster, slurm  # noqa: F401 - the session fixture

from l5assets import paths
from l5assets.definitions import defs
from l5assets.defs.partitions import register_partitions, run_partition_key
from l5assets.defs.resources import CellModelResource, NeuronRuntime, StorageResource
from l5assets.defs.slurm import SlurmResource
from l5assets.graph import SEED_ASSETS, SHARED_ASSETS, SIMULATION_OUTPUTS
from l5assets.layout import VOLATILE_OUTPUTS
from l5assets.lineage.manifest import MANIFEST_NAME
from l5assets.storage import file_sha256, leftover_temps

warnings.filterwarnings("ignore", category=dg.BetaWarning)
pytestmark = pytest.mark.filterwarnings("ignore::dagster.PreviewWarning")

PS, SEEDS = "T_slurm", (1, 2)
UPSTREAM = SEED_ASSETS[: SEED_ASSETS.index(SIMULATION_OUTPUTS)]


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every output file of a simulation_outputs folder (not the volatile ones:
    result.json's wall times, BMTK's log, the manifest's run section)."""
    return {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in (*VOLATILE_OUTPUTS, MANIFEST_NAME)
    }


def _latest(instance: dg.DagsterInstance, key: dg.MultiPartitionKey) -> dict:
    ev = instance.get_latest_materialization_event(dg.AssetKey(SIMULATION_OUTPUTS))
    mat = ev.asset_materialization
    assert mat.partition == str(key)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


@pytest.fixture(scope="module")
def env(tmp_path_factory, slurm: SlurmCluster):  # noqa: F811 - the fixture
    root = tmp_path_factory.mktemp("slurm_sim")
    params_dir = root / "params"
    params_dir.mkdir()
    (params_dir / f"{PS}.json").write_text(json.dumps(small_params(stop=0.1), indent=1))
    storage = StorageResource(root=str(root / "out"), params_dir=str(params_dir))
    base = {"storage": storage, "cell_model": CellModelResource(), "neuron": NeuronRuntime()}
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as mp:
        mp.setenv("L5ASSETS_CACHE_DIR", str(paths.cache_dir()))  # reuse compiled mechanisms
        for k, v in slurm.env.items():
            mp.setenv(k, v)
        register_partitions(instance, [PS], SEEDS)

        def materialize(assets, key, executor: str = "local") -> dg.ExecuteInProcessResult:
            slurm_res = SlurmResource(executor=executor, scratch_dir=str(root / "scratch"))
            return dg.materialize(
                list(defs.assets),
                selection=list(assets),
                partition_key=str(key),
                instance=instance,
                resources={**base, "slurm": slurm_res},
            )

        materialize(SHARED_ASSETS, PS)
        local = {}
        for seed in SEEDS:
            key = run_partition_key(PS, seed)
            materialize([*UPSTREAM, SIMULATION_OUTPUTS], key)
            meta = _latest(instance, key)
            local[seed] = {"meta": meta, "files": _files(Path(meta["dir"]))}
        t0 = time.monotonic()
        on_slurm = {}
        for seed in SEEDS:
            key = run_partition_key(PS, seed)
            materialize([SIMULATION_OUTPUTS], key, executor="slurm")
            meta = _latest(instance, key)
            on_slurm[seed] = {"meta": meta, "files": _files(Path(meta["dir"]))}
        yield {
            "root": root,
            "storage": storage,
            "params_dir": params_dir,
            "instance": instance,
            "local": local,
            "slurm": on_slurm,
            "slurm_seconds": time.monotonic() - t0,
            "cluster": slurm,
        }


def test_slurm_outputs_are_byte_identical_to_a_local_run(env):
    for seed in SEEDS:
        local, on_slurm = env["local"][seed], env["slurm"][seed]
        assert local["meta"]["executor"] == "local" and on_slurm["meta"]["executor"] == "slurm"
        assert on_slurm["files"] == local["files"], seed
        assert len(on_slurm["files"]) >= 4  # spikes, report(s), synapses, hot-zone V
        assert on_slurm["meta"]["content_hash"] == local["meta"]["content_hash"]


def test_materializations_record_the_slurm_job(env):
    cluster: SlurmCluster = env["cluster"]
    ids = [env["slurm"][s]["meta"]["slurm_job_id"] for s in SEEDS]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == len(ids)
    for seed, job_id in zip(SEEDS, ids, strict=True):
        assert cluster.job_state(job_id) == "COMPLETED"
        meta = env["slurm"][seed]["meta"]
        assert meta["slurm_node"] == cluster.host
        manifest = json.loads((Path(meta["dir"]) / MANIFEST_NAME).read_text())
        assert manifest["run"]["executor"] == "slurm"
        assert manifest["run"]["slurm_job_id"] == job_id
        assert "slurm_job_id" not in manifest["extra"]  # volatile: only in the run section
    # the job's Pipes files and scripts are removed after a completed job
    assert not any((env["root"] / "scratch").iterdir())


def test_the_jobs_logs_and_progress_came_back_through_pipes(env):
    instance = env["instance"]
    runs = instance.get_runs(limit=len(SEEDS))  # the SLURM runs: the latest ones
    for run in runs:
        texts = [
            r.user_message
            for r in instance.all_logs(run.run_id)
            if r.dagster_event is None and r.user_message
        ]
        joined = "\n".join(texts)
        assert "submitted" in joined
        assert "[pipes] external process successfully opened dagster pipes." in joined
        assert "NEURON run (SLURM): " in joined  # stage lines from the job
        assert "ms simulated (100%)" in joined  # the last progress point


CANCEL_SCRIPT = textwrap.dedent(
    """
    import warnings, dagster as dg
    from l5assets.definitions import default_resources, defs
    from l5assets.defs.partitions import register_partitions, run_partition_key
    warnings.filterwarnings("ignore")
    with dg.instance_for_test() as instance:
        register_partitions(instance, [{ps!r}], [{seed}])
        res = dg.materialize(
            list(defs.assets), selection=["simulation_outputs"],
            partition_key=str(run_partition_key({ps!r}, {seed})), instance=instance,
            resources=default_resources(), raise_on_error=False,
        )
        print("RUN SUCCESS" if res.success else "RUN FAILED", flush=True)
    """
)


def _wait_running(cluster: SlurmCluster, proc: subprocess.Popen, log: Path) -> str:
    """The id of the run's job, once SLURM runs it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        out = cluster.run("squeue", "-h", "-t", "R", "-o", "%i %j").split()
        if len(out) >= 2 and out[1] == f"l5-{SIMULATION_OUTPUTS}":
            return out[0]
        time.sleep(0.5)
    raise AssertionError("no running SLURM job after 120 s:\n" + log.read_text()[-3000:])


def test_terminating_the_run_cancels_its_slurm_job(env, tmp_path):
    """The run's process (in-process executor, as `l5assets run` and the UI's runs) gets
    SIGINT while its job runs: the step scancels the job and waits until SLURM ends it."""
    cluster: SlurmCluster = env["cluster"]
    seed = SEEDS[0]
    folder = Path(env["slurm"][seed]["meta"]["dir"])
    before = _files(folder)
    log = tmp_path / "run.log"
    child_env = os.environ | cluster.env
    child_env.update(
        {
            "L5ASSETS_SIMULATION_EXECUTOR": "slurm",  # the instance-wide switch
            "L5ASSETS_SLURM_SCRATCH": str(tmp_path / "scratch"),
            "L5ASSETS_STORAGE_ROOT": env["storage"].root,
            "L5ASSETS_PARAMS_DIR": str(env["params_dir"]),
            "L5ASSETS_CACHE_DIR": str(paths.cache_dir()),
        }
    )
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", CANCEL_SCRIPT.format(ps=PS, seed=seed)],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            job_id = _wait_running(cluster, proc, log)
            time.sleep(1.0)  # the job's runner has started
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=150)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "RUN FAILED" in text and "RUN SUCCESS" not in text, text[-3000:]
    assert f"cancelling SLURM job {job_id}" in text, text[-3000:]
    assert cluster.job_state(job_id) == "CANCELLED"
    assert cluster.active_jobs() == []
    left = subprocess.run(
        ["pgrep", "-f", "l5assets.simulation.pipes_report"], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", left.stdout
    # the step failed: the previous outputs stay, no temp folder is left beside them
    assert _files(folder) == before
    assert leftover_temps(folder.parent, SIMULATION_OUTPUTS) == []


def test_executor_is_chosen_per_instance(monkeypatch):
    monkeypatch.delenv("L5ASSETS_SIMULATION_EXECUTOR", raising=False)
    assert SlurmResource().resolved_executor() == "local" and not SlurmResource().enabled
    monkeypatch.setenv("L5ASSETS_SIMULATION_EXECUTOR", "slurm")
    assert SlurmResource().enabled
    assert not SlurmResource(executor="local").enabled  # the resource config wins
    monkeypatch.setenv("L5ASSETS_SIMULATION_EXECUTOR", "pbs")
    with pytest.raises(ValueError, match="L5ASSETS_SIMULATION_EXECUTOR: 'pbs', allowed: local"):
        SlurmResource().resolved_executor()


def test_batch_script_has_the_resource_options(tmp_path):
    res = SlurmResource(
        partition="short",
        account="lab",
        time_limit="01:00:00",
        cpus_per_task=2,
        memory="4G",
        extra_sbatch=["--qos=low"],
    )
    opts = res.sbatch_options("l5-x", tmp_path / "job", tmp_path / "cwd")
    script = res.batch_script(opts, ["/usr/bin/python3", "-m", "mod", "a b"])
    for o in (
        "--partition=short",
        "--account=lab",
        "--time=01:00:00",
        "--cpus-per-task=2",
        "--mem=4G",
        "--qos=low",
        f"--chdir={tmp_path / 'cwd'}",
        f"--output={tmp_path / 'job' / 'slurm-%j.out'}",
    ):
        assert f"#SBATCH {o}\n" in script
    assert script.splitlines()[-1] == "exec /usr/bin/python3 -m mod 'a b'"
    assert "unset L5ASSETS_PARENT_PID" in script


def test_a_job_whose_step_stopped_its_heartbeat_ends_itself(tmp_path):
    """The job-side watch: the heartbeat file unchanged for the timeout -> on_stale()."""
    import threading

    from l5assets.simulation.pipes_report import watch_heartbeat

    beat, stale = tmp_path / "heartbeat", threading.Event()
    beat.touch()
    watch_heartbeat(beat, timeout_s=0.5, on_stale=stale.set, poll_s=0.1)
    assert not stale.wait(0.3)
    assert stale.wait(3.0)


def test_wait_counts_run_time_not_queue_time_and_polls_through_outages(monkeypatch):
    """The time limit starts when the job runs (a long PENDING is not cut off); polls SLURM
    does not answer (controller outage) neither end nor fail the wait; a forgotten job id
    (five polls running) counts as ended."""
    from l5assets.defs import slurm as sl

    answers = iter(
        [("PENDING", None)] * 6 + [("", None)] * 7 + [("RUNNING", None), ("COMPLETED", 0)]
    )
    monkeypatch.setattr(sl, "job_state", lambda job_id: next(answers))
    t0 = time.monotonic()
    assert sl.wait_for_job("1", poll_s=0.05, timeout_s=0.5) == ("COMPLETED", 0)
    assert time.monotonic() - t0 > 0.5  # waited past the limit while PENDING / unanswered
    running = iter([("RUNNING", None)] * 1000)
    monkeypatch.setattr(sl, "job_state", lambda job_id: next(running))
    with pytest.raises(TimeoutError, match="still RUNNING"):
        sl.wait_for_job("2", poll_s=0.05, timeout_s=0.2)
    gone = iter([(sl.PURGED, None)] * 5)
    monkeypatch.setattr(sl, "job_state", lambda job_id: next(gone))
    assert sl.wait_for_job("3", poll_s=0.01, timeout_s=10) == ("UNKNOWN", None)


def test_a_cell_validation_runs_as_a_slurm_job_with_the_same_result(
    tmp_path: Path,
    slurm: SlurmCluster,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
):
    """validation_bap of L5PC_bbp here and as a SLURM job (the same run_protocols in the job,
    traces through the shared filesystem): byte-identical traces and features, job recorded."""
    from l5assets.defs.cell_validation import assets as A

    bap = next(a for a in A.protocol_assets if a.key.to_user_string() == "validation_bap")
    monkeypatch.setenv("L5ASSETS_CACHE_DIR", str(paths.cache_dir()))
    for k, v in slurm.env.items():
        monkeypatch.setenv(k, v)
    out = {}
    for executor in ("local", "slurm"):
        root = tmp_path / executor
        res = dg.materialize(
            [bap],
            partition_key="L5PC_bbp",
            resources={
                "storage": StorageResource(root=str(root)),
                "cell_model": CellModelResource(),
                "slurm": SlurmResource(executor=executor, scratch_dir=str(tmp_path / "scratch")),
            },
        )
        assert res.success
        meta = res.asset_materializations_for_node("validation_bap")[0].metadata
        folder = root / "_cells" / "L5PC_bbp" / "validation_bap"
        files = {
            p.name: file_sha256(p)
            for p in sorted(folder.iterdir())
            if p.name.endswith((".npy", ".json")) and p.name != MANIFEST_NAME
        }
        out[executor] = (meta, files)
    assert out["local"][1] == out["slurm"][1] and "bap_traces.npy" in out["local"][1]
    assert out["slurm"][0]["executor"].value == "slurm"
    job = out["slurm"][0]["slurm_job_id"].value
    assert job.isdigit() and out["local"][0]["executor"].value == "local"
    assert not list((tmp_path / "scratch").glob("validation-*"))  # its folder is removed
