"""Remote kernels over SSH, against a throwaway sshd on loopback (the tests' own).

    python benchmarks/bench.py --scenarios ssh,ssh-floor,ssh-ipykernel   # these rows alone

Each ssh scenario starts an sshd of its own (:func:`serving`), so any of them runs alone.

(`nox -s bench-3.11` runs them too.)

Rows (the minimal kernel, tests/helpers/fake_kernel.py, run "remotely" on this machine):
  ssh.start_1st       start to ready of the first kernel on the host (its own connection)
  ssh.start_10th      start to ready of the tenth, nine others running (through the master)
  ssh.graceful        shutdown_kernel() of a running kernel, through the master
  ssh.now             shutdown_kernel(now=True)
  ssh.kill_noticed    SIGKILL to the remote kernel, to the provisioner's wait() returning
  ssh-floor.start     the raw floor: ``ssh -L ... host python fake_kernel.py FILE`` by hand,
                      the connection file already on disk, to a client's kernel_info reply
  ssh-floor.start_mux the same through a control master already up
  ssh-ipykernel.*     a real ipykernel, the remote host's ``python3`` kernel spec, through a
                      shared connection (one kernel kept running beside): start to ready,
                      graceful shutdown, shutdown(now=True), SIGKILL to exit noticed; against
                      sshpyk (from PyPI, in the jupyter_client column) where it is installed,
                      with the ControlMaster/ControlPersist config it requires
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE_KERNEL = str(ROOT / "tests" / "helpers" / "fake_kernel.py")
KERNELS = 10
ENV = "KN_BENCH_SSHD"  # JSON: what the workers need to reach the driver's sshd


def available() -> bool:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return all(shutil.which(b, path=search) for b in ("ssh", "sshd", "ssh-keygen"))


def start(directory: Path, jupyter_path: Path) -> tuple[Any, dict[str, str]]:
    """Start the sshd; return it and the environment entries the workers need. sshpyk's
    kernel spec goes to *jupyter_path*."""
    sys.path.insert(0, str(ROOT))
    from tests.helpers.sshd import start_sshd

    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    binaries = {b: shutil.which(b, path=search) or b for b in ("ssh", "sshd", "ssh-keygen")}
    directory.mkdir(parents=True, exist_ok=True)
    server = start_sshd(directory, binaries)
    # sshpyk requires a persistent control master in the ssh config.
    pyk_config = directory / "sshpyk_config"
    pyk_config.write_text(
        server.client_config.read_text()
        + f"  ControlMaster auto\n  ControlPath {directory}/pyk-%C\n  ControlPersist 10m\n"
    )
    folder = jupyter_path / "kernels" / "sshpyk-bench"
    folder.mkdir(parents=True, exist_ok=True)
    stanza = {
        "provisioner_name": "sshpyk-provisioner",
        "config": {
            "ssh_host_alias": "kn-sshd",
            "ssh_config": str(pyk_config),
            "remote_python": sys.executable,
            "remote_kernel_name": "python3",
        },
    }
    spec = {"argv": [], "display_name": "sshpyk", "language": "python"}
    (folder / "kernel.json").write_text(
        json.dumps({**spec, "metadata": {"kernel_provisioner": stanza}})
    )
    where = {"config": str(server.client_config), "alias": "kn-sshd"}
    return server, {ENV: json.dumps(where)}


def sshpyk_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("sshpyk") is not None


def stop(server: Any) -> None:
    from tests.helpers.sshd import stop_sshd

    # sshpyk's persistent master, if it made one.
    subprocess.run(
        [
            server.binaries["ssh"],
            "-F",
            str(server.directory / "sshpyk_config"),
            "-O",
            "exit",
            "kn-sshd",
        ],
        check=False,
        capture_output=True,
    )
    stop_sshd(server)


def _config(**extra: Any) -> dict[str, Any]:
    where = json.loads(os.environ[ENV])
    return {
        "host": where["alias"],
        "ssh_options": ["-F", where["config"]],
        "remote_python": sys.executable,
        **extra,
    }


async def ours(scenario: str, reps: int) -> dict[str, list[float]]:
    """kernel-nursery's rows (and, for ``ssh-floor``, the floor's)."""
    if scenario == "ssh-floor":
        return await _floor(reps)
    if scenario == "ssh-ipykernel":
        return await _ours_ipykernel(reps)
    from kernel_nursery import KernelManager, KernelSpec, SSHProvisioner

    spec = KernelSpec(
        argv=["python", FAKE_KERNEL, "{connection_file}"],
        name="fake",
        metadata={"kernel_provisioner": {"provisioner_name": "ssh", "config": _config()}},
    )
    out: dict[str, list[float]] = {
        k: [] for k in ("start_1st", "start_10th", "graceful", "now", "kill_noticed")
    }
    for _ in range(reps):
        async with AsyncExitStack() as stack:
            managers = []
            for i in range(KERNELS):
                km = await stack.enter_async_context(
                    KernelManager(kernel_spec=spec, autorestart=False)
                )
                t0 = time.perf_counter()
                await km.start_kernel()
                elapsed = time.perf_counter() - t0
                if i == 0:
                    out["start_1st"].append(elapsed)
                elif i == KERNELS - 1:
                    out["start_10th"].append(elapsed)
                managers.append(km)
            p = managers[-1].provisioner
            assert isinstance(p, SSHProvisioner)
            assert p.remote_pid is not None
            t0 = time.perf_counter()
            os.kill(p.remote_pid, signal.SIGKILL)
            await p.wait()
            out["kill_noticed"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await managers[-2].shutdown_kernel()
            out["graceful"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await managers[-3].shutdown_kernel(now=True)
            out["now"].append(time.perf_counter() - t0)
    return out


async def _floor(reps: int) -> dict[str, list[float]]:
    """ssh running the kernel by hand: the least any SSH launcher can take."""
    import anyio

    from kernel_nursery import KernelClient
    from kernel_nursery.connection import (
        PORT_NAMES,
        new_connection_info,
        release_connection_info,
    )
    from kernel_nursery.provisioning.ssh._provisioner import _choose_remote_ports

    config = _config()
    base = ["ssh", "-T", "-o", "BatchMode=yes", *config["ssh_options"]]
    out: dict[str, list[float]] = {"start": [], "start_mux": []}
    with tempfile.TemporaryDirectory(prefix="kn-") as tmp:
        control = f"{tmp}/c"
        master = await anyio.open_process(
            [*base, "-M", "-S", control, config["host"], "echo up; exec cat"], stderr=None
        )
        assert master.stdout is not None
        await master.stdout.receive()  # "up": the master is connected
        try:
            for _ in range(reps):
                for key, mux in (("start", []), ("start_mux", ["-S", control])):
                    local = new_connection_info(ip="127.0.0.1")
                    remote = dict(local)
                    ports = _choose_remote_ports()
                    remote.update(dict(zip(PORT_NAMES, ports, strict=True)))
                    path = Path(tmp) / "kernel.json"
                    path.write_text(json.dumps(remote))
                    forwards = []
                    for name, port in zip(PORT_NAMES, ports, strict=True):
                        forwards += ["-L", f"127.0.0.1:{local[name]}:127.0.0.1:{port}"]  # type: ignore[literal-required]
                    t0 = time.perf_counter()
                    proc = await anyio.open_process(
                        [
                            *base,
                            *(mux or ["-o", "ControlPath=none"]),
                            *forwards,
                            config["host"],
                            f"exec {sys.executable} {FAKE_KERNEL} {path}",
                        ],
                        stdin=subprocess.PIPE,
                        stdout=None,
                        stderr=None,
                    )
                    async with KernelClient(local) as kc:
                        await kc.wait_for_ready(timeout=60)
                    out[key].append(time.perf_counter() - t0)
                    async with KernelClient(local) as kc:
                        await kc.shutdown(timeout=10)
                    await proc.wait()
                    if mux:
                        await anyio.run_process(
                            [*base, "-S", control, "-O", "cancel", *forwards, config["host"]],
                            check=False,
                        )
                    release_connection_info(local)
        finally:
            master.terminate()
            await master.wait()
            await master.aclose()
    return out


IPYKERNEL_ROWS = ("start_to_ready", "graceful", "now", "kill_noticed")


async def _ours_ipykernel(reps: int) -> dict[str, list[float]]:
    import anyio

    from kernel_nursery import KernelManager, KernelSpec, SSHProvisioner

    stanza = {"provisioner_name": "ssh", "config": _config(remote_kernel_name="python3")}
    spec = KernelSpec(argv=["unused"], name="remote", metadata={"kernel_provisioner": stanza})
    out: dict[str, list[float]] = {k: [] for k in IPYKERNEL_ROWS}
    # Two kernels kept running hold a shared connection, as sshpyk's persistent master does.
    async with KernelManager(kernel_spec=spec) as warm, KernelManager(kernel_spec=spec) as warm2:
        await warm.start_kernel()
        await warm2.start_kernel()  # the second kernel on the host starts the master
        assert isinstance(warm2.provisioner, SSHProvisioner)
        hub = warm2.provisioner._master
        assert hub is not None
        assert hub.popen is not None
        assert hub.popen.stdout is not None
        while not hub.ready():
            await anyio.wait_readable(hub.popen.stdout.fileno())
        for _ in range(reps):
            async with KernelManager(kernel_spec=spec) as km:
                t0 = time.perf_counter()
                await km.start_kernel()
                out["start_to_ready"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await km.shutdown_kernel()
                out["graceful"].append(time.perf_counter() - t0)
            async with KernelManager(kernel_spec=spec) as km:
                await km.start_kernel()
                t0 = time.perf_counter()
                await km.shutdown_kernel(now=True)
                out["now"].append(time.perf_counter() - t0)
            async with KernelManager(kernel_spec=spec, autorestart=False) as km:
                await km.start_kernel()
                p = km.provisioner
                assert isinstance(p, SSHProvisioner)
                assert p.remote_pid is not None
                t0 = time.perf_counter()
                os.kill(p.remote_pid, signal.SIGKILL)
                await p.wait()
                out["kill_noticed"].append(time.perf_counter() - t0)
    return out


async def theirs(scenario: str, reps: int) -> dict[str, list[float]]:
    """sshpyk's rows, under jupyter_client (asyncio only)."""
    if scenario != "ssh-ipykernel":
        return {}
    from jupyter_client import AsyncKernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    os.makedirs(jupyter_runtime_dir(), exist_ok=True)  # sshpyk writes there

    async def started() -> Any:
        km = AsyncKernelManager(kernel_name="sshpyk-bench")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        kc.stop_channels()
        return km

    out: dict[str, list[float]] = {k: [] for k in IPYKERNEL_ROWS}
    warm = await started()  # opens its persistent master
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            km = await started()
            out["start_to_ready"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            out["graceful"].append(time.perf_counter() - t0)
            km = await started()
            t0 = time.perf_counter()
            await km.shutdown_kernel(now=True)
            out["now"].append(time.perf_counter() - t0)
            km = await started()
            pid = km.provisioner.rem_pid_k
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            await km.provisioner.wait()
            out["kill_noticed"].append(time.perf_counter() - t0)
            await km.shutdown_kernel(now=True)
    finally:
        await warm.shutdown_kernel(now=True)
    return out


@contextlib.contextmanager
def serving(jupyter_path: Path) -> Iterator[dict[str, str]]:
    """An sshd for one scenario's workers, in a directory of its own, stopped and removed
    after: yields the environment entries the workers need (see :func:`start`)."""
    directory = Path(tempfile.mkdtemp(prefix="kn-sshd-"))
    try:
        server, env = start(directory, jupyter_path)
        try:
            yield env
        finally:
            stop(server)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
