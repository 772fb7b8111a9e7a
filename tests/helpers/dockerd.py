"""A throwaway Docker daemon (or Podman on private storage) for the container provisioner's
tests, and the image they run.

:func:`start_dockerd` runs Debian's ``dockerd`` with every directory of its own (data root,
exec root, pid file, its API socket) in a short temporary directory, never the machine's own
engine: ``--iptables=false --bridge=none`` unless *bridge* (published ports need the engine's
bridge and its userland proxy; no firewall rule is made either way). It is ready when its log
says the API listens (read as it is written; nothing polls), and :func:`stop_dockerd` stops it
by its pid file (it stops its containers and its containerd first).

:func:`build_test_image` makes the image once: ``docker import`` of a tiny tarball (a few
empty directories, ``/etc/passwd``), into which the tests bind-mount this machine's ``/usr``,
this interpreter's installation, the test virtual environment and the package's source
read-only: a real kernel (ipykernel) runs in it in well under a second, with no registry and
no debootstrap.
"""

from __future__ import annotations

import io
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kernel_nursery

#: The test image's name in the private daemon.
IMAGE = "kernel-nursery-test:1"
#: The label filter that finds every container a test made.
LABEL = "kernel-nursery.kernel-id"


@dataclass
class Engine:
    """A container engine of the tests' own, and how to reach it (a private dockerd, or
    Podman on private storage)."""

    directory: Path
    binaries: dict[str, str]

    #: The client's name in :attr:`binaries`.
    client = "docker"

    def client_args(self) -> list[str]:
        """The client's global options that point it at this engine."""
        raise NotImplementedError

    def run_args(self) -> list[str]:
        """Options every ``run`` needs on this engine (none by default)."""
        return []

    @property
    def command(self) -> list[str]:
        """The client, pointed at this engine."""
        return [self.binaries[self.client], *self.client_args()]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the client against this engine, to its end (at most 120 s)."""
        return subprocess.run(
            [*self.command, *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    def containers(self) -> list[str]:
        """Every container of kernel-nursery on this engine, running or not."""
        found = self.run("ps", "-aq", "--no-trunc", "--filter", f"label={LABEL}")
        return found.stdout.split()

    def mounts(self) -> list[str]:
        """The read-only mounts that let this interpreter, its packages and the package under
        test run inside the test image."""
        paths = {"/usr", sys.base_prefix, sys.prefix, str(Path(kernel_nursery.__file__).parents[1])}
        return [f"{p}:{p}:ro" for p in sorted(paths)]

    def provisioner_config(self, **overrides: Any) -> dict[str, Any]:
        """The kernel_provisioner config that runs ipykernel in the test image here."""
        config: dict[str, Any] = {
            "command": self.binaries[self.client],
            "command_args": self.client_args(),
            "engine_args": self.run_args(),
            "image": IMAGE,
            "mounts": self.mounts(),
            "env": {"HOME": "/tmp"},
            "argv": [
                os.path.join(sys.prefix, "bin", "python"),
                *("-m", "ipykernel_launcher", "-f", "{connection_file}"),
            ],
        }
        config.update(overrides)
        return config


@dataclass
class DockerDaemon(Engine):
    """A running private dockerd."""

    popen: subprocess.Popen[bytes]
    argv: list[str]
    copier: threading.Thread | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "docker.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "docker.pid"

    def client_args(self) -> list[str]:
        return ["--host", f"unix://{self.socket}"]


@dataclass
class PodmanEngine(Engine):
    """Podman on storage of its own (``--root``, ``--runroot``, ``--tmpdir`` in a temporary
    directory), as this machine runs it (``engines.md``): runc, cgroupfs, events in a file,
    and hard rlimits it need not raise. Daemonless: nothing to start or stop."""

    client = "podman"

    def client_args(self) -> list[str]:
        d = self.directory
        return [
            *("--root", str(d / "root"), "--runroot", str(d / "run"), "--tmpdir", str(d / "tmp")),
            *("--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"),
        ]

    def run_args(self) -> list[str]:
        return ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


def start_podman(binaries: dict[str, str]) -> PodmanEngine:
    """Podman on private storage, with the test image imported."""
    engine = PodmanEngine(Path(tempfile.mkdtemp(prefix="knp-")), binaries)
    try:
        build_test_image(engine)
    except BaseException:
        stop_podman(engine)
        raise
    return engine


def stop_podman(engine: PodmanEngine) -> None:
    """Remove what containers are left and the storage (unmounted first)."""
    left = engine.containers()
    if left:
        engine.run("rm", "-f", *left, check=False)
    _unmount_below(engine.directory)
    shutil.rmtree(engine.directory, ignore_errors=True)


def start_dockerd(binaries: dict[str, str], *, bridge: bool = False) -> DockerDaemon:
    """Start a private dockerd and return it once its API listens (at most 60 s).

    With *bridge*, the daemon gets a bridge of its own (``knd`` and random letters, on a
    random ``172.31.X.0/24``), made here and deleted by :func:`stop_dockerd`, and no firewall,
    forwarding or masquerading change: published ports go through its userland proxy on
    127.0.0.1. Without, it has no bridge network at all."""
    directory = Path(tempfile.mkdtemp(prefix="knd-"))  # short: containerd's sockets live here
    argv = [
        binaries["dockerd"],
        *("--data-root", str(directory / "data"), "--exec-root", str(directory / "exec")),
        *("--pidfile", str(directory / "docker.pid")),
        *("--host", f"unix://{directory / 'docker.sock'}"),
        "--iptables=false",
    ]
    bridge_name = None
    if bridge:
        bridge_name = _make_bridge(binaries["ip"])
        (directory / "bridge").write_text(bridge_name)
        argv += ["--bridge", bridge_name, "--ip-forward=false", "--ip-masq=false"]
    else:
        argv.append("--bridge=none")
    daemon = DockerDaemon(directory, binaries, _spawn(argv, directory), argv)
    try:
        _await_api(daemon)
    except BaseException:
        stop_dockerd(daemon)
        raise
    return daemon


def _spawn(argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "dockerd.log").open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )


def restart_dockerd(daemon: DockerDaemon, *, down: Callable[[], None] = lambda: None) -> None:
    """Stop the daemon (as its host's shutdown would: it stops its containers), call *down*
    while it is down, and start it again on the same directories; its containers (exited)
    are still there."""
    _halt(daemon)
    down()
    daemon.popen = _spawn(daemon.argv, daemon.directory)
    _await_api(daemon)


def _halt(daemon: DockerDaemon) -> None:
    """SIGTERM to the daemon by its pid file, and wait for it (and its log copier)."""
    try:
        pid = int(daemon.pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = daemon.popen.pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        daemon.popen.wait(60)
    except subprocess.TimeoutExpired:
        daemon.popen.kill()
        daemon.popen.wait(30)
    if daemon.copier is not None:
        daemon.copier.join(10)  # it closes the pipe at its end
        daemon.copier = None
    elif daemon.popen.stderr is not None:
        daemon.popen.stderr.close()


def _await_api(daemon: DockerDaemon) -> None:
    """Read dockerd's log as it is written until it says the API listens, then leave a thread
    copying the rest to a file (a full pipe would stop the daemon)."""
    stderr = daemon.popen.stderr
    assert stderr is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"API listen on" not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([stderr], [], [], max(0.0, remaining))
        if not ready:
            raise RuntimeError(f"dockerd did not start within 60 s: {seen[-2000:]!r}")
        chunk = os.read(stderr.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"dockerd exited: {seen[-2000:]!r}")
        seen += chunk

    def copy() -> None:
        with stderr, (daemon.directory / "dockerd.err").open("ab") as out:
            out.write(seen)
            while chunk := os.read(stderr.fileno(), 65536):
                out.write(chunk)

    daemon.copier = threading.Thread(target=copy, daemon=True)
    daemon.copier.start()


def stop_dockerd(daemon: DockerDaemon) -> None:
    """Remove what containers are left, stop the daemon by its pid file, remove its files."""
    try:
        if daemon.popen.poll() is None:
            left = daemon.containers()
            if left:
                daemon.run("rm", "-f", *left, check=False)
    finally:
        _halt(daemon)
        _unmount_below(daemon.directory)
        bridge = daemon.directory / "bridge"
        if bridge.exists():
            ip = daemon.binaries["ip"]
            subprocess.run(
                [ip, "link", "del", bridge.read_text()], check=False, capture_output=True
            )
        shutil.rmtree(daemon.directory, ignore_errors=True)


def _make_bridge(ip: str) -> str:
    """A new bridge interface of our own, up, with a random private /24; its name."""
    for _attempt in range(10):
        name = f"knd{secrets.token_hex(4)}"
        made = subprocess.run([ip, "link", "add", name, "type", "bridge"], capture_output=True)
        if made.returncode:
            continue
        subnet = 100 + secrets.randbelow(150)
        subprocess.run([ip, "addr", "add", f"172.31.{subnet}.1/24", "dev", name], check=True)
        subprocess.run([ip, "link", "set", name, "up"], check=True)
        return name
    raise RuntimeError("cannot make a bridge interface for dockerd")


def _unmount_below(directory: Path) -> None:
    """Unmount what the daemon left mounted in its directory (its network namespace file),
    deepest first, so that the directory can be removed."""
    prefix = f"{directory}/"
    with open("/proc/self/mounts", encoding="utf-8") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", point], check=False, capture_output=True)


def build_test_image(daemon: Engine) -> None:
    """Import the tiny test image (see the module's text) into *daemon*."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in [
            ("tmp", 0o1777),
            ("proc", 0o555),
            ("dev", 0o755),
            ("sys", 0o555),
            ("etc", 0o755),
            ("run", 0o755),
            ("root", 0o700),
            ("sbin", 0o755),
            ("usr", 0o755),
            ("work", 0o755),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, target in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, text in [
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        [*daemon.command, "import", "-", IMAGE],
        input=buffer.getvalue(),
        check=True,
        capture_output=True,
        timeout=120,
    )
