"""A throwaway OpenSSH server on loopback, for the SSH provisioner's tests.

:func:`start_sshd` runs Debian's ``sshd`` on 127.0.0.1 on a free port (chosen again if another
program takes it first: another copy of the suite may be doing the same), with a host key, an
authorized key, a known_hosts file and a client config of its own, all in a temporary
directory. The client reaches it as the alias :data:`ALIAS` through ``ssh -F <config>``; the
remote side is this machine, logged in as the current user.

The server daemonizes (it is not our child, as a real remote sshd is not) and is stopped by its
pid file. Each connection has its own ``sshd`` session process, a descendant of the daemon:
:meth:`SSHServer.descendants` lists what runs "on the remote side", so tests can check that
nothing is left there.
"""

from __future__ import annotations

import getpass
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALIAS = "kn-sshd"


@dataclass
class SSHServer:
    """A running sshd and how to reach it."""

    directory: Path
    port: int
    pid: int
    user: str
    binaries: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def identity(self) -> Path:
        return self.directory / "id_ed25519"

    def provisioner_config(self, **overrides: Any) -> dict[str, Any]:
        """The kernel_provisioner config that reaches this server through its alias."""
        config: dict[str, Any] = {
            "host": ALIAS,
            "ssh_options": ["-F", str(self.client_config)],
            "remote_python": sys.executable,
            "server_alive_interval": 2,
            "server_alive_count_max": 2,
        }
        config.update(overrides)
        return config

    def descendants(self) -> set[int]:
        """Running processes below the daemon: session sshds and what they run."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2 :].split()
            if fields[0] in (b"Z", b"X"):
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        found: set[int] = set()
        todo = [self.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        return found


def parent_of(pid: int) -> int | None:
    """The parent process id of *pid*, or ``None`` when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait (through pidfds, readable at exit) until every process of *pids* has exited, at
    most *timeout* seconds; return those still running."""
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            continue
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    left = dict(fds)
    try:
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                left.pop(fd, None)
        # A zombie has exited, though its pidfd may not be readable until it is reaped.
        return {pid for pid in left.values() if _running(pid)}
    finally:
        for fd in fds:
            os.close(fd)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(binaries: dict[str, str], path: Path) -> str:
    subprocess.run(
        [binaries["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(directory: Path, binaries: dict[str, str]) -> SSHServer:
    """Start sshd in *directory* (which must exist) and return it once it listens."""
    user = getpass.getuser()
    host_key = _keygen(binaries, directory / "host_ed25519")
    user_key = _keygen(binaries, directory / "id_ed25519")
    (directory / "authorized_keys").write_text(user_key + "\n")
    os.chmod(directory / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation needs it
    pid_file = directory / "sshd.pid"
    log = directory / "sshd.log"
    for _attempt in range(20):
        port = _free_port()
        (directory / "sshd_config").write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {directory / 'host_ed25519'}\n"
            f"PidFile {pid_file}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "AllowTcpForwarding yes\n"
            "MaxStartups 100\n"
        )
        log.write_text("")
        # The launcher binds the port, then daemonizes and exits: listening once it returns.
        done = subprocess.run(
            [binaries["sshd"], "-f", str(directory / "sshd_config"), "-E", str(log)],
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode == 0:
            break
        if "Address already in use" not in log.read_text():
            raise RuntimeError(f"sshd did not start: {log.read_text()}")
    else:
        raise RuntimeError("sshd found no free port in 20 attempts")
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    (directory / "ssh_config").write_text(
        f"Host {ALIAS}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        f"  User {user}\n"
        f"  IdentityFile {directory / 'id_ed25519'}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {directory / 'known_hosts'}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
    )
    # The daemon writes its pid file just after the launcher returns.
    pid = _read_pid(pid_file, timeout=10)
    return SSHServer(directory=directory, port=port, pid=pid, user=user, binaries=binaries)


def _read_pid(path: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd wrote no pid file {path}")
        time.sleep(0.01)


def stop_sshd(server: SSHServer) -> None:
    """Stop the daemon by its pid file; end any session left (a test that failed)."""
    pid = int((server.directory / "sshd.pid").read_text().strip())
    left = server.descendants()
    for victim in [pid, *left]:
        try:
            os.kill(victim, signal.SIGKILL if victim != pid else signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_gone({pid, *left}, timeout=10)
