"""A single-node Slurm cluster of the test session's own: munged, slurmctld and slurmd from
Debian's ``munge`` and ``slurm-wlm``, with a generated configuration in a temporary directory.

Everything is private to one cluster, so two copies of the suite can run on one machine at once:
its own munge key and socket (never the system's munged), free loopback ports chosen at start,
its own state, spool, log and pid files, its own cluster name. The daemons run as root (Slurm's
``SlurmUser=root``, as on the project's CI machines). They are stopped by their pid files.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SlurmCluster"]

#: Seconds the cluster may take to run its first job after the daemons start.
READY_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stop_pid(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM, then wait for the exit through a pidfd (the daemons are not our children);
    SIGKILL if that takes longer than *timeout*."""
    if pid is None:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for signum in (signal.SIGTERM, signal.SIGKILL):
            try:
                signal.pidfd_send_signal(pidfd, signum)
            except ProcessLookupError:
                return
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            if poller.poll(timeout * 1000):
                return
    finally:
        os.close(pidfd)


@dataclass
class SlurmCluster:
    """One node (``localhost``, :attr:`cpus` CPUs) in one partition (``debug``)."""

    root: Path
    binaries: dict[str, str]
    cpus: int = 2
    conf: Path = field(init=False)
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        """Start munged, slurmctld and slurmd, and wait until a job runs."""
        try:
            self._start_munged()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                extra = ["-N", "localhost"] if daemon == "slurmd" else []
                subprocess.run(
                    [self.binaries[daemon], "-f", str(self.conf), *extra],
                    check=True,
                    env=self.env,
                    capture_output=True,
                    timeout=30,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel what is left in the queue, stop the daemons (by their pid files)."""
        if self.conf.exists():
            subprocess.run(
                [self.binaries["scancel"], "--full", "--user", str(os.getuid())],
                env=self.env,
                capture_output=True,
                timeout=30,
                check=False,
            )
        for name in ("slurmd", "slurmctld"):
            _stop_pid(_pid_from(self.root / f"{name}.pid"))
        _stop_pid(_pid_from(self.root / "munge" / "munged.pid"))

    def _start_munged(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o755)  # munged wants its socket's directory searchable by all
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        # munged returns once its socket listens (it daemonizes after that).
        subprocess.run(
            [
                self.binaries["munged"],
                f"--socket={munge / 'socket'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _write_conf(self) -> None:
        for name in ("state", "spool"):
            (self.root / name).mkdir(mode=0o755)
        root = self.root
        self.conf.write_text(
            f"""\
ClusterName=kn{secrets.token_hex(4)}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root / "munge" / "socket"}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "slurmctld.log"}
SlurmdLogFile={root / "slurmd.log"}
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
KillWait=1
OverTimeLimit=0
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _wait_ready(self) -> None:
        """Run one job: srun waits in the queue until slurmd has registered, so that is the
        event awaited. Only the controller's very first moments are retried (srun cannot
        reach a controller that has not bound its port yet), a few times, a second apart."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            result = subprocess.run(
                [self.binaries["srun"], "--nodes=1", "true"],
                env=self.env,
                capture_output=True,
                timeout=READY_TIMEOUT,
                check=False,
            )
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test Slurm cluster did not start: {result.stderr!r}")
            time.sleep(1.0)

    # ------------------------------------------------------------------ asking

    def queue(self) -> list[str]:
        """The jobs in the queue, one ``id state reason`` line each."""
        result = subprocess.run(
            [self.binaries["squeue"], "--noheader", "--format=%i %T %R"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return result.stdout.split("\n")[:-1] if result.stdout else []

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command (``scancel``, ``scontrol``...) against this cluster."""
        name, *args = argv
        return subprocess.run(
            [self.binaries.get(name, name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
