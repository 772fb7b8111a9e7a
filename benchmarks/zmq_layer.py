"""Which async zmq layer for kernel-nursery's messaging: ours (AsyncSocket) or zmq-anyio?

Measures a DEALER/ROUTER ping-pong over loopback tcp in one process (round trips per second,
median of several repetitions), on asyncio and trio, for both layers in one run; then checks
how each behaves when a socket is closed under a task waiting to receive (does the waiter
wake with an error, or hang?).

Run: python benchmarks/zmq_layer.py   (needs zmq-anyio installed; not part of the test suite)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import zmq

from kernel_nursery.wire import AsyncSocket

try:
    from importlib.metadata import version as _version
except ImportError:  # pragma: no cover
    raise

ROUND_TRIPS = 2000
REPEATS = 5


def pair(ctx: zmq.Context[Any]) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    server = ctx.socket(zmq.ROUTER)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = ctx.socket(zmq.DEALER)
    client.connect(f"tcp://127.0.0.1:{port}")
    return server, client


async def ours() -> float:
    ctx = zmq.Context()
    s, c = pair(ctx)
    server, client = AsyncSocket(s), AsyncSocket(c)

    async def serve() -> None:
        for _ in range(ROUND_TRIPS):
            await server.send_multipart(await server.recv_multipart())

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        for _ in range(ROUND_TRIPS):
            await client.send_multipart([b"ping"])
            await client.recv_multipart()
    elapsed = time.perf_counter() - start
    server.close()
    client.close()
    ctx.term()
    return ROUND_TRIPS / elapsed


async def theirs() -> float:
    import zmq_anyio

    ctx = zmq.Context()
    s, c = pair(ctx)
    async with zmq_anyio.Socket(s) as server, zmq_anyio.Socket(c) as client:

        async def serve() -> None:
            for _ in range(ROUND_TRIPS):
                # 0.4 on anyio 4.16: Future.wait() returns None; the message is in .return_value
                received = server.arecv_multipart()
                await received.wait()
                await server.asend_multipart(received.return_value).wait()

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            for _ in range(ROUND_TRIPS):
                await client.asend_multipart([b"ping"]).wait()
                reply = client.arecv_multipart()
                await reply.wait()
                assert reply.return_value == [b"ping"]
        elapsed = time.perf_counter() - start
    ctx.term()
    return ROUND_TRIPS / elapsed


async def close_under_waiter_ours() -> str:
    ctx = zmq.Context()
    sock = AsyncSocket(ctx.socket(zmq.DEALER))
    outcome = "hung (3 s)"
    with anyio.move_on_after(3):
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                nonlocal outcome
                try:
                    await sock.recv_multipart()
                    outcome = "returned?"
                except Exception as exc:
                    outcome = f"woke with {type(exc).__name__}"

            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            sock.close()
    ctx.term()
    return outcome


async def close_under_waiter_theirs() -> str:
    import zmq_anyio

    ctx = zmq.Context()
    outcome = "hung (3 s)"
    with anyio.move_on_after(3):
        async with zmq_anyio.Socket(ctx.socket(zmq.DEALER)) as sock:
            async with anyio.create_task_group() as tg:

                async def receive() -> None:
                    nonlocal outcome
                    try:
                        await sock.arecv_multipart().wait()
                        outcome = "returned?"
                    except BaseException as exc:
                        outcome = f"woke with {type(exc).__name__}"
                        if isinstance(exc, anyio.get_cancelled_exc_class()):
                            raise

                tg.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                sock.close()
    ctx.term()
    return outcome


async def measure(fn: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    rates = [await fn() for _ in range(REPEATS)]
    return statistics.median(rates), statistics.pstdev(rates)


def main() -> None:
    print(
        f"python {sys.version.split()[0]}, pyzmq {zmq.pyzmq_version()}, "
        f"libzmq {zmq.zmq_version()}, zmq-anyio {_version('zmq-anyio')}"
    )
    header = f"{'backend':8} {'layer':10} {'round trips/s (median)':>24} {'stdev':>8}"
    print(f"{header}  close under waiter")
    for backend in ("asyncio", "trio"):
        for name, fn, close in (
            ("ours", ours, close_under_waiter_ours),
            ("zmq-anyio", theirs, close_under_waiter_theirs),
        ):
            try:
                median, stdev = anyio.run(measure, fn, backend=backend)
                rate = f"{median:24.0f} {stdev:8.0f}"
            except Exception as exc:  # report, do not hide
                rate = f"{'failed: ' + type(exc).__name__ + ': ' + str(exc)[:40]:>33}"
            try:
                closing = anyio.run(close, backend=backend)
            except BaseException as exc:
                closing = f"raised {type(exc).__name__}: {exc}"[:60]
            print(f"{backend:8} {name:10} {rate}  {closing}")


if __name__ == "__main__":
    main()
