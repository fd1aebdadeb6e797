"""A real one-node SLURM cluster for the tests: munged, `slurmctld -D` and `slurmd -D`.

Debian's `slurmctld slurmd slurm-client munge` (scripts/install-system-packages) with a minimal
slurm.conf for this host written to a temp folder (clients find it through SLURM_CONF, the
daemons through `-f`), free ports for slurmctld and slurmd, state and spool folders in the
temp folder, no accounting (finished jobs show with `squeue -t all` for MinJobAge seconds;
`sacct` would need slurmdbd). The daemons run as root, munged as the munge user; all are
stopped afterwards (a munged that was already running is left alone).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from l5assets.simulation.pipes_report import stop_process

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
START_S = 60.0  # until sinfo shows the node idle, on a loaded 2-core machine
MUNGE_DIRS = {  # folder -> mode munged insists on
    "/etc/munge": 0o700,
    "/var/lib/munge": 0o711,
    "/var/log/munge": 0o700,
    "/run/munge": 0o755,
}


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")


def missing_tools() -> list[str]:
    """The cluster's programs that are not installed (empty: the fixture can run)."""
    return [d for d in DAEMONS if _which(d) is None]


def free_ports(n: int) -> list[int]:
    """`n` distinct ports nothing listens on now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _munge_works(env: dict[str, str] | None = None) -> bool:
    """Whether a credential made by `munge -n` decodes (a munged answers on the socket)."""
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10, check=True)
        subprocess.run(
            ["unmunge"], input=cred.stdout, capture_output=True, timeout=10, check=True, env=env
        )
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def _prepare_munge() -> None:
    """The key (made if missing) and munged's folders, owned by munge with the modes it wants
    (it refuses to start on a group- or world-writable folder)."""
    import grp
    import pwd

    uid, gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
    for d, mode in MUNGE_DIRS.items():
        os.makedirs(d, exist_ok=True)
        os.chown(d, uid, gid)
        os.chmod(d, mode)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        tool = _which("mungekey")
        cmd = [tool, "--create", "--keyfile", str(key)] if tool else ["create-munge-key", "-f"]
        subprocess.run(cmd, check=True, capture_output=True)
    os.chown(key, uid, gid)
    os.chmod(key, 0o400)


def _start_munged(log_dir: Path) -> subprocess.Popen | None:
    """Start munged in the foreground as the munge user; None if one already answers."""
    if _munge_works():
        return None
    _prepare_munge()
    proc = subprocess.Popen(
        [_which("munged") or "munged", "--foreground", "--force"],
        user="munge",
        group="munge",
        stdout=(log_dir / "munged.out").open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"munged exited: {(log_dir / 'munged.out').read_text()}")
        if _munge_works():
            return proc
        time.sleep(0.2)
    raise TimeoutError("munged did not answer in 20 s")


def slurm_conf(base: Path, host: str, cpus: int, memory_mb: int, ports: list[int]) -> str:
    """A minimal slurm.conf for a one-node cluster on `host`, its state in `base`."""
    return "\n".join(
        [
            "ClusterName=l5test",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"SlurmctldPort={ports[0]}",
            f"SlurmdPort={ports[1]}",
            "AuthType=auth/munge",
            f"StateSaveLocation={base / 'state'}",
            f"SlurmdSpoolDir={base / 'spool'}",
            f"SlurmctldPidFile={base / 'slurmctld.pid'}",
            f"SlurmdPidFile={base / 'slurmd.pid'}",
            f"SlurmctldLogFile={base / 'slurmctld.log'}",
            f"SlurmdLogFile={base / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SlurmdParameters=config_overrides",  # CPUs as given, whatever slurmd detects
            "ReturnToService=2",
            "MinJobAge=600",  # finished jobs stay visible to squeue -t all / scontrol
            "KillWait=5",  # scancel: SIGTERM, then SIGKILL after 5 s
            f"NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10  # below what slurmd detects
    return 1024


@dataclass
class SlurmCluster:
    """A running one-node cluster: its config (SLURM_CONF for clients) and its logs."""

    conf: Path
    base: Path
    host: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables the clients (sbatch, squeue, ...) need."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True) -> str:
        """A client command's stdout (`squeue ...`, `scontrol ...`)."""
        out = subprocess.run(
            list(cmd), capture_output=True, text=True, env=os.environ | self.env, timeout=30
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
        return out.stdout

    def job_state(self, job_id: str) -> str:
        """JobState of a job (scontrol; finished jobs are kept MinJobAge seconds)."""
        text = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        for item in text.split():
            if item.startswith("JobState="):
                return item.split("=", 1)[1]
        return ""

    def active_jobs(self) -> list[str]:
        """Ids of the jobs pending or running (or being ended) now."""
        out = self.run("squeue", "-h", "-t", "PD,R,CG,CF,S", "-o", "%i")
        return out.split()

    def log_tail(self, n: int = 40) -> str:
        """The ends of the daemons' logs, for an assertion message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            p = self.base / name
            if p.exists():
                parts.append(f"--- {name}\n" + "\n".join(p.read_text().splitlines()[-n:]))
        return "\n".join(parts)


def _wait_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_S
    state = ""
    while time.monotonic() < deadline:
        for p in cluster.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited:\n{cluster.log_tail()}")
        state = cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()
        if state == "idle":
            return
        time.sleep(0.5)
    raise TimeoutError(f"sinfo: node {state!r}, not idle, after {START_S} s:\n{cluster.log_tail()}")


@contextmanager
def slurm_cluster(base: Path) -> Iterator[SlurmCluster]:
    """Start munged (unless one runs), slurmctld and slurmd on this host; stop them after."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "slurm.conf"
    conf.write_text(slurm_conf(base, host, os.cpu_count() or 1, _memory_mb(), free_ports(2)))
    cluster = SlurmCluster(conf=conf, base=base, host=host)
    munged = _start_munged(base)
    try:
        env = os.environ | cluster.env
        for daemon in ("slurmctld", "slurmd"):
            out = (base / f"{daemon}.out").open("w")
            # -D: in the foreground (ours to stop); -i/-c: no state from an earlier cluster
            extra = ["-c", "-i"] if daemon == "slurmctld" else []
            cluster.procs.append(
                subprocess.Popen(
                    [_which(daemon) or daemon, "-D", "-f", str(conf), *extra],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
            if daemon == "slurmctld":
                time.sleep(1.0)  # let it listen before slurmd registers
        _wait_idle(cluster)
        yield cluster
    finally:
        for p in reversed(cluster.procs):
            stop_process(p, 20.0)
        if munged is not None:
            stop_process(munged, 20.0)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """The session's one-node SLURM cluster (skipped where its programs are missing)."""
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"SLURM not installed (missing {', '.join(missing)}): scripts/install-system-packages"
        )
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root (its daemons run as root)")
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster
