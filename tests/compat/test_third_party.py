"""A third-party jupyter_client provisioner from PyPI under our manager: sshpyk, against a
throwaway sshd on loopback (its own port, host key, client key and config, in a temporary
directory), on both backends. Skipped, with the reason, where OpenSSH is not installed."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from kernel_nursery import KernelManager, KernelSpec

from ..helpers.engines import engine_required, need_binaries
from ..helpers.procs import is_running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

ALIAS = "kn-test"
READY = 120  # sshpyk makes several ssh round trips per start; the machine may be busy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ssh_config(tmp_path: Path) -> Iterator[Path]:
    """An sshd on 127.0.0.1 (foreground, our child) and an ssh client config for it, naming the
    host ``kn-test``; the sshd and the client's control master are stopped after."""
    bins = need_binaries("ssh", "sshd", "ssh", "ssh-keygen")
    pytest.importorskip("sshpyk", reason="sshpyk is in the test dependencies")
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for key in ("hostkey", "clientkey"):
        subprocess.run(
            [bins["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True
        )
    (d / "authorized_keys").write_text((d / "clientkey.pub").read_text())
    remote_runtime = tmp_path / "remote-runtime"
    # A Unix socket path must stay under 108 bytes: the control socket gets a short directory.
    control = Path(tempfile.mkdtemp(prefix="kn-bridge-ssh-", dir="/tmp"))
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    except PermissionError:
        reason = "ssh: sshd needs /run/sshd, which only root can create"
        if engine_required("ssh"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = free_port()
    (d / "sshd_config").write_text(
        textwrap.dedent(
            f"""
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {d / "hostkey"}
            PidFile {d / "sshd.pid"}
            AuthorizedKeysFile {d / "authorized_keys"}
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            PermitRootLogin prohibit-password
            AllowTcpForwarding yes
            SetEnv JUPYTER_RUNTIME_DIR={remote_runtime} PYTHONDONTWRITEBYTECODE=1
            """
        )
    )
    config = d / "ssh_config"
    config.write_text(
        textwrap.dedent(
            f"""
            Host {ALIAS}
              HostName 127.0.0.1
              Port {port}
              User {os.environ.get("USER") or "root"}
              IdentityFile {d / "clientkey"}
              IdentitiesOnly yes
              UserKnownHostsFile {d / "known_hosts"}
              StrictHostKeyChecking accept-new
              BatchMode yes
              ControlMaster auto
              ControlPath {control / "cm-%C"}
              ControlPersist 60
            """
        )
    )
    sshd = subprocess.Popen(
        [bins["sshd"], "-D", "-e", "-f", str(d / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert sshd.stderr is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"Server listening" not in seen:  # sshd says when it listens
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sshd.stderr], [], [], left)[0]:
                pytest.fail(f"sshd did not start: {seen.decode(errors='replace')}")
            chunk = os.read(sshd.stderr.fileno(), 4096)
            if not chunk:
                pytest.fail(f"sshd exited: {seen.decode(errors='replace')}")
            seen += chunk
        yield config
    finally:
        subprocess.run(
            [bins["ssh"], "-F", str(config), "-O", "exit", ALIAS],
            capture_output=True,
            check=False,
            timeout=30,
        )
        sshd.terminate()
        try:
            sshd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait()
        if sshd.stderr is not None:
            sshd.stderr.close()
        shutil.rmtree(control, ignore_errors=True)


async def remote_pid(km: KernelManager) -> int:
    async with km.client() as kc:
        result = await kc.execute("import os; print(os.getpid())", timeout=READY)
    return int(result.stdout)


async def test_sshpyk_runs_a_kernel_over_ssh(anyio_backend: str, ssh_config: Path) -> None:
    """sshpyk (jupyter:sshpyk-provisioner) starts ipykernel over ssh through the bridge; we run
    code in it, restart it and shut it down, and no kernel process remains."""
    config = {
        "ssh_host_alias": ALIAS,
        "ssh_config": str(ssh_config),
        "remote_python": sys.executable,
        "remote_kernel_name": "python3",
    }
    stanza = {"provisioner_name": "jupyter:sshpyk-provisioner", "config": config}
    spec = KernelSpec(
        argv=["unused-by-sshpyk"],
        name="ssh",
        language="python",
        metadata={"kernel_provisioner": stanza},
    )
    async with KernelManager(kernel_spec=spec, ready_timeout=READY) as km:
        with anyio.fail_after(READY):
            await km.start_kernel()
        first = await remote_pid(km)
        assert first != os.getpid() and is_running(first)
        with anyio.fail_after(READY):
            await km.restart_kernel()
        second = await remote_pid(km)
        assert second != first and not is_running(first)
        with anyio.fail_after(READY):
            await km.shutdown_kernel()
        assert not is_running(second)
