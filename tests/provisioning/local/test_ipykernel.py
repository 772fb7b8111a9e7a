"""LocalProvisioner with a real ipykernel: the kernel reads our connection file, binds our
ports and lives until it is signalled."""

from __future__ import annotations

import signal
import tempfile

import anyio
import anyio.to_thread
import pytest
import zmq

from kernel_nursery import KernelSpecManager, LocalProvisioner
from kernel_nursery.connection import ConnectionInfo
from kernel_nursery.provisioning import shutdown_kernel_process
from kernel_nursery.wire import set_curve_client_options

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def heartbeat(info: ConnectionInfo, timeout: float) -> bool:
    """Send one heartbeat to the kernel and wait for the echo (a blocking call, in a thread);
    as a CurveZMQ client when the kernel is encrypted (ipykernel 7.4 is, by default)."""
    sep = "-" if info["transport"] == "ipc" else ":"
    url = f"{info['transport']}://{info['ip']}{sep}{info['hb_port']}"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    try:
        sock.linger = 0
        set_curve_client_options(sock, info)
        sock.connect(url)
        sock.send(b"ping")
        if sock.poll(int(timeout * 1000)):
            return sock.recv() == b"ping"
        return False
    finally:
        sock.close()
        ctx.term()


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
async def test_ipykernel_binds_our_ports_and_stays_alive(transport: str) -> None:
    """ipykernel answers heartbeats on the port we wrote, survives SIGINT when idle, and is
    stopped by shutdown_kernel_process."""
    spec = KernelSpecManager().get_kernel_spec("python3")
    # pytest's temporary runtime directory is too deep for Unix socket paths: ipc goes to /tmp.
    with tempfile.TemporaryDirectory(prefix="kn-", dir="/tmp") as short:
        ip = f"{short}/k" if transport == "ipc" else ""
        await run_and_stop(LocalProvisioner(kernel_spec=spec, transport=transport, ip=ip))


async def run_and_stop(provisioner: LocalProvisioner) -> None:
    async with provisioner as p:
        kw = await p.pre_launch()
        info = await p.launch_kernel(kw.pop("cmd"), **kw)
        assert await anyio.to_thread.run_sync(heartbeat, info, 60)
        await p.send_signal(signal.SIGINT)  # an idle kernel ignores an interrupt
        assert await anyio.to_thread.run_sync(heartbeat, info, 30)
        assert await p.poll() is None
        status = await shutdown_kernel_process(p, wait_time=10)
        assert status is not None and status != -signal.SIGKILL
