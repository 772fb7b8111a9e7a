"""Tests for kernel_nursery.wire._socket: awaitable zmq sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import zmq

from kernel_nursery.wire import AsyncSocket

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair() -> AsyncIterator[tuple[AsyncSocket, AsyncSocket]]:
    """A connected ROUTER/DEALER pair on loopback."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    a, b = AsyncSocket(router), AsyncSocket(dealer)
    yield a, b
    a.close()
    b.close()


async def test_send_and_receive(pair: tuple[AsyncSocket, AsyncSocket]) -> None:
    """Messages go both ways, awaited on either backend."""
    router, dealer = pair
    for i in range(100):
        await dealer.send_multipart([b"ping", str(i).encode()])
        ident, *body = await router.recv_multipart()
        assert body == [b"ping", str(i).encode()]
        await router.send_multipart([ident, b"pong"])
        assert await dealer.recv_multipart() == [b"pong"]


async def test_many_waiters_on_one_socket(pair: tuple[AsyncSocket, AsyncSocket]) -> None:
    """Several tasks may wait on one socket (trio allows one waiter per fd: we share it)."""
    router, dealer = pair
    got: list[list[bytes]] = []

    async def receive() -> None:
        got.append(await dealer.recv_multipart())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            await dealer.send_multipart([b"hello"])
            ident, _ = await router.recv_multipart()
            for i in range(3):
                await router.send_multipart([ident, str(i).encode()])
    assert sorted(m[0] for m in got) == [b"0", b"1", b"2"]


async def test_a_receive_elsewhere_does_not_strand_a_waiter(
    pair: tuple[AsyncSocket, AsyncSocket],
) -> None:
    """A task receiving one of two queued messages wakes the waiter for the other.

    zmq's descriptor signals a change once: the receive that takes the first message consumes
    that signal, and a waiter sleeping on the descriptor would never learn of the second one.
    """
    router, dealer = pair
    await dealer.send_multipart([b"hello"])
    ident, _ = await router.recv_multipart()
    got: list[list[bytes]] = []

    async def receive() -> None:
        got.append(await dealer.recv_multipart())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()  # the waiter sleeps on the descriptor
            await router.send_multipart([ident, b"1"])
            await router.send_multipart([ident, b"2"])
            # Without a checkpoint, so the waiter cannot run: let both messages arrive, then
            # take the first one here. (If they arrive late, the test is merely weaker.)
            time.sleep(0.2)  # noqa: ASYNC251 - blocking on purpose: the event loop must not run
            got.append(await dealer.recv_multipart())
    assert sorted(m[0] for m in got) == [b"1", b"2"]


async def test_many_tasks_send_and_receive_at_once(
    pair: tuple[AsyncSocket, AsyncSocket],
) -> None:
    """Ten receivers and ten senders on one socket pair: every message reaches someone."""
    router, dealer = pair
    await dealer.send_multipart([b"hello"])
    ident, _ = await router.recv_multipart()
    got: list[bytes] = []

    async def receive(n: int) -> None:
        for _ in range(n):
            got.append((await dealer.recv_multipart())[0])

    async def send(start: int, n: int) -> None:
        for i in range(start, start + n):
            await router.send_multipart([ident, str(i).encode()])
            if i % 3 == 0:
                await anyio.lowlevel.checkpoint()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(receive, 50)
            for k in range(10):
                tg.start_soon(send, k * 50, 50)
    assert sorted(int(m) for m in got) == list(range(500))


async def test_close_wakes_waiters(pair: tuple[AsyncSocket, AsyncSocket]) -> None:
    """Closing a socket wakes every waiter with ClosedResourceError; later calls fail too."""
    _, dealer = pair
    errors: list[BaseException] = []

    async def receive() -> None:
        try:
            await dealer.recv_multipart()
        except anyio.ClosedResourceError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            dealer.close()
    assert len(errors) == 2
    assert dealer.closed
    with pytest.raises(anyio.ClosedResourceError):
        await dealer.send_multipart([b"x"])
    dealer.close()  # idempotent


async def test_cancelled_receive_leaves_socket_usable(
    pair: tuple[AsyncSocket, AsyncSocket],
) -> None:
    """A receive cancelled while waiting does not break later receives."""
    router, dealer = pair
    with anyio.move_on_after(0.05):
        await dealer.recv_multipart()
    await dealer.send_multipart([b"hi"])
    ident, _ = await router.recv_multipart()
    await router.send_multipart([ident, b"back"])
    with anyio.fail_after(5):
        assert await dealer.recv_multipart() == [b"back"]
