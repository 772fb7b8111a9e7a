"""Tests for kernel_nursery.messaging._comms: comms both ways, with ipykernel's comm API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest

from kernel_nursery import ChannelClosedError, Comm, KernelClient, KernelDiedError, KernelStateError

from ..helpers.kernels import running_kernel

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

#: An "echo" target in the kernel: greets a new comm with its open data, answers each message
#: with its data and buffers, and remembers what it was sent.
ECHO_TARGET = """\
import comm
received = []
def echo_target(c, open_msg):
    @c.on_msg
    def _echo(msg):
        received.append(msg["content"]["data"])
        c.send({"echo": msg["content"]["data"]}, buffers=msg["buffers"])
    c.send({"opened_with": open_msg["content"]["data"]})
comm.get_comm_manager().register_target("echo", echo_target)
"""


@asynccontextmanager
async def ipykernel_client() -> AsyncIterator[KernelClient]:
    """A ready client of an ipykernel with the echo target registered."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        assert (await kc.execute(ECHO_TARGET, timeout=60)).status == "ok"
        yield kc


async def test_open_send_receive_and_close_a_comm() -> None:
    """A comm opened to a kernel target gets its greeting and the echo of each message
    (buffers too); comm_info lists it; leaving the block closes it in the kernel. A comm to a
    target the kernel lacks is closed by the kernel."""
    async with ipykernel_client() as kc:
        async with kc.open_comm("echo", {"hello": 1}) as comm:
            greeting = await comm.receive()
            assert greeting.content["data"] == {"opened_with": {"hello": 1}}
            await comm.send({"ping": 2}, buffers=[b"\x00\x01"])
            echo = await comm.receive()
            assert echo.content["data"] == {"echo": {"ping": 2}}
            assert echo.buffers == [b"\x00\x01"]
            info = await kc.comm_info("echo")
            assert info.content["comms"] == {comm.comm_id: {"target_name": "echo"}}
        assert comm.closed
        with pytest.raises(ChannelClosedError, match="closed"):
            await comm.send({})
        assert (await kc.comm_info("echo")).content["comms"] == {}
        kept = await kc.execute("print(received)", timeout=30)
        assert kept.stdout == "[{'ping': 2}]\n"

        # ipykernel closes a comm to a target it does not have: iteration just ends.
        async with kc.open_comm("no-such-target") as unknown:
            with anyio.fail_after(30):
                assert [msg async for msg in unknown] == []
            assert unknown.closed and unknown.close_message is not None


async def test_accept_a_comm_the_kernel_opens() -> None:
    """A comm the kernel opens to an accepted target arrives with its data; messages go both
    ways; the kernel's close ends iteration, with its data."""
    code = """\
from comm import create_comm
got = []
c = create_comm(target_name="from-kernel", data={"n": 1})
c.on_msg(lambda m: got.append(m["content"]["data"]))
c.send({"first": True})
"""
    async with ipykernel_client() as kc:
        with kc.accept_comms("from-kernel") as incoming:
            with pytest.raises(KernelStateError, match="already"):
                kc.accept_comms("from-kernel")
            assert (await kc.execute(code, timeout=30)).status == "ok"
            with anyio.fail_after(30):
                comm = await incoming.receive()
            async with comm:
                assert comm.target_name == "from-kernel" and comm.open_data == {"n": 1}
                assert (await comm.receive()).content["data"] == {"first": True}
                await comm.send({"back": 2})
                await kc.execute("import time\nwhile not got: time.sleep(0.01)", timeout=30)
                await kc.execute("c.close({'bye': 3})", timeout=30)
                with anyio.fail_after(30):
                    assert [m async for m in comm] == []
                assert comm.close_message is not None
                assert comm.close_message.content["data"] == {"bye": 3}
        assert not kc._comms._targets and not kc._comms._comms
        assert (await kc.execute("print(got)", timeout=30)).stdout == "[{'back': 2}]\n"


async def test_closing_the_client_ends_comms_and_acceptors() -> None:
    """Comms and acceptors end when their client closes; nothing can be opened after."""
    async with ipykernel_client() as kc:
        with kc.accept_comms("anything") as incoming:
            async with kc.open_comm("echo") as comm:
                await comm.receive()
                await kc.__aexit__(None, None, None)
                assert [m async for m in comm] == []
                assert [c async for c in incoming] == []
        with pytest.raises(ChannelClosedError):
            kc.open_comm("echo")


async def test_a_comm_whose_kernel_died_leaves_its_block_quietly() -> None:
    """When the kernel dies under an open comm, the comm's iteration ends and leaving its
    block raises nothing of its own: the block's exception, if any, is the one that
    propagates."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.execute(ECHO_TARGET, timeout=60)
        comms: list[Comm] = []

        async def die_inside() -> None:
            async with kc.open_comm("echo") as comm:
                comms.append(comm)
                await comm.receive()
                await p.kill()
                with anyio.fail_after(30):
                    assert [m async for m in comm] == []  # ends, rather than waiting forever
                assert comm.closed
                with pytest.raises(KernelDiedError):
                    await kc.kernel_info(timeout=10)  # the client has seen the death
                raise LookupError("mine")

        with pytest.raises(LookupError, match="mine"):
            await die_inside()
        assert comms[0].closed
