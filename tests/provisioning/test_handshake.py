"""Tests for kernel_nursery.provisioning._handshake: the start handshake of JEP 66, with the
fake kernel implementing the kernel's side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import pytest
import zmq
from traitlets.config import Config

from kernel_nursery import KernelClient, KernelManager, KernelSpec, LaunchError, LocalProvisioner
from kernel_nursery.wire import Session

from ..conftest import FAKE_KERNEL, TOY_KERNEL

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def spec(*args: str, program: str = FAKE_KERNEL, version: str = "5.5") -> KernelSpec:
    argv = [sys.executable, program, "{connection_file}", *args]
    return KernelSpec(argv=argv, name="fake", kernel_protocol_version=version)


async def test_kernel_registers_the_ports_it_bound() -> None:
    """The kernel gets a registration port and no ports; it reports the ports it bound, the
    connection info and the file then hold them, and a client reaches the kernel there."""
    async with LocalProvisioner(kernel_spec=spec(), kernel_handshake=True) as p:
        kw = await p.pre_launch()
        first = json.loads(Path(p.connection_file).read_text())
        assert "registration_port" in first
        assert not set(PORTS) & set(first)
        info = await p.launch_kernel(kw.pop("cmd"), **kw)
        on_disk = json.loads(Path(p.connection_file).read_text())
        assert {name: on_disk[name] for name in PORTS} == {name: info[name] for name in PORTS}
        assert "registration_port" not in on_disk
        assert on_disk["key"] == first["key"]
        async with KernelClient(info) as kc:
            reply = await kc.wait_for_ready(timeout=60)
            assert reply.content["implementation"] == "fake"


async def test_spec_without_the_declaration_gets_ports_as_usual() -> None:
    """A spec below protocol 5.5 (or silent) is given its ports: the fallback."""
    async with LocalProvisioner(kernel_spec=spec(version="5.3"), kernel_handshake=True) as p:
        await p.pre_launch()
        on_disk = json.loads(Path(p.connection_file).read_text())
        assert set(PORTS) <= set(on_disk)
        assert "registration_port" not in on_disk
        await p.cleanup()


async def test_handshake_is_off_by_default() -> None:
    """Without kernel_handshake, even a declaring spec is given ports (ipykernel declares 5.5
    and implements no handshake)."""
    async with LocalProvisioner(kernel_spec=spec()) as p:
        await p.pre_launch()
        assert set(PORTS) <= set(json.loads(Path(p.connection_file).read_text()))
        await p.cleanup()


async def test_kernel_that_exits_before_registering_is_a_launch_error() -> None:
    """A kernel that exits instead of registering fails the launch at once, leaving nothing."""
    provisioner = LocalProvisioner(
        kernel_spec=spec("--exit", "1", program=TOY_KERNEL), kernel_handshake=True
    )
    async with provisioner as p:
        kw = await p.pre_launch()
        with pytest.raises(LaunchError, match="exited with status 1 before it registered"):
            await p.launch_kernel(kw.pop("cmd"), **kw)
        assert not p.has_process


async def test_kernel_that_never_registers_is_stopped_after_the_timeout() -> None:
    """A kernel that ignores the registration port is stopped after handshake_timeout."""
    provisioner = LocalProvisioner(
        kernel_spec=spec(program=TOY_KERNEL), kernel_handshake=True, handshake_timeout=0.5
    )
    async with provisioner as p:
        kw = await p.pre_launch()
        with pytest.raises(LaunchError, match=r"did not register its ports within 0\.5 s"):
            await p.launch_kernel(kw.pop("cmd"), **kw)
        assert not p.has_process


async def test_cancelled_while_waiting_for_the_registration_leaves_nothing() -> None:
    """Cancelled while it waits for the kernel to register, the launch stops the kernel and
    releases the file and the socket."""
    async with LocalProvisioner(kernel_spec=spec(program=TOY_KERNEL), kernel_handshake=True) as p:
        kw = await p.pre_launch()
        with anyio.move_on_after(0.5) as scope:
            await p.launch_kernel(kw.pop("cmd"), **kw)
        assert scope.cancelled_caught
        assert not p.has_process


@pytest.mark.parametrize("encryption", ["disabled", "required"])
async def test_manager_starts_restarts_and_talks_through_the_handshake(encryption: str) -> None:
    """Under a manager (config reaching its provisioner), a registering kernel starts, a
    restart registers again on new ports, and the manager's client follows it; encrypted too."""
    config = Config({"LocalProvisioner": {"kernel_handshake": True}})
    async with KernelManager(
        kernel_spec=spec("--curve"), config=config, transport_encryption=encryption
    ) as km:
        await km.start_kernel()
        before = km.connection_info
        assert ("curve_publickey" in before) is (encryption == "required")
        async with km.client() as kc:
            await kc.wait_for_ready(timeout=60)
            await km.restart_kernel()
            after = km.connection_info
            assert after.get("curve_publickey") == before.get("curve_publickey")
            assert after["key"] == before["key"]
            reply = await kc.kernel_info(timeout=60)
            assert reply.content["status"] == "ok"
        await km.shutdown_kernel()


async def test_registration_signed_with_another_key_is_ignored() -> None:
    """A handshake_request forged without the kernel's key (and a frame of garbage) is
    dropped; the real kernel's registration is the one taken."""
    async with LocalProvisioner(kernel_spec=spec(), kernel_handshake=True) as p:
        kw = await p.pre_launch()
        port = json.loads(Path(p.connection_file).read_text())["registration_port"]
        forger = Session(key="not the key")
        bogus = dict(zip(PORTS, range(1001, 1006), strict=True))
        ctx = zmq.Context.instance()
        socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
        try:
            for sock in socks:
                sock.linger = 0
                sock.connect(f"tcp://127.0.0.1:{port}")
            forged = forger.serialize(forger.new_message("handshake_request", bogus))
            socks[0].send_multipart([b"", *forged])
            socks[1].send_multipart([b"", b"garbage"])
            info = await p.launch_kernel(kw.pop("cmd"), **kw)
        finally:
            for sock in socks:
                sock.close()
        assert info["shell_port"] != 1001
        async with KernelClient(info) as kc:
            await kc.wait_for_ready(timeout=60)


async def test_an_oversized_message_to_the_registration_socket_is_not_taken_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message of 4 MiB sent to the registration port is refused by zmq before it reaches
    us (never buffered whole, never deserialized); the kernel still registers."""
    async with LocalProvisioner(kernel_spec=spec(), kernel_handshake=True) as p:
        kw = await p.pre_launch()
        port = json.loads(Path(p.connection_file).read_text())["registration_port"]
        sock = zmq.Context.instance().socket(zmq.DEALER)
        try:
            sock.linger = 0
            sock.connect(f"tcp://127.0.0.1:{port}")
            sock.send_multipart([b"", b"x" * (4 << 20)])
            with caplog.at_level("WARNING", logger="kernel_nursery.provisioning"):
                info = await p.launch_kernel(kw.pop("cmd"), **kw)
        finally:
            sock.close()
        assert not [r for r in caplog.records if "registration socket" in r.getMessage()]
        async with KernelClient(info) as kc:
            await kc.wait_for_ready(timeout=60)


async def test_a_replayed_registration_is_refused_at_the_next_start() -> None:
    """A registration captured at one start and replayed at the next (a restart keeps the
    key) is refused as a replay; the launch then times out instead of taking stale ports."""
    provisioner = LocalProvisioner(
        kernel_spec=spec(program=TOY_KERNEL), kernel_handshake=True, handshake_timeout=30
    )
    ctx = zmq.Context.instance()
    socks: list[zmq.Socket[bytes]] = []

    def send(frames: list[bytes], path: str) -> None:
        sock = ctx.socket(zmq.DEALER)
        socks.append(sock)
        sock.linger = 0
        sock.connect(f"tcp://127.0.0.1:{json.loads(Path(path).read_text())['registration_port']}")
        sock.send_multipart([b"", *frames])

    try:
        async with provisioner as p:
            kw = await p.pre_launch()
            session = Session(key=json.loads(Path(p.connection_file).read_text())["key"])
            ports = dict(zip(PORTS, range(2001, 2006), strict=True))
            frames = session.serialize(session.new_message("handshake_request", ports))
            send(frames, p.connection_file)  # standing in for the kernel
            info = await p.launch_kernel(kw.pop("cmd"), **kw)
            assert info["shell_port"] == 2001
            await p.cleanup(restart=True)
            p.handshake_timeout = 1.0
            kw = await p.pre_launch()
            send(frames, p.connection_file)
            with pytest.raises(LaunchError, match="did not register"):
                await p.launch_kernel(kw.pop("cmd"), **kw)
    finally:
        for sock in socks:
            sock.close()
