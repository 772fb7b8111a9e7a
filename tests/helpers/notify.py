"""Awaiting a toy kernel's readiness without polling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

#: Seconds a test waits for a toy kernel to report or die before failing.
TIMEOUT = 30


class Notifier:
    """A loopback listener a toy kernel started with ``--notify PORT`` connects to."""

    def __init__(self, listener: SocketListener) -> None:
        self._listener = listener
        self.port: int = listener.extra(SocketAttribute.local_port)
        self._streams: list[SocketStream] = []

    async def ready(self) -> list[int]:
        """Wait for the next kernel to report; return its pid (and its grandchild's, if any)."""
        with anyio.fail_after(TIMEOUT):
            stream = await self._listener.accept()
            self._streams.append(stream)
            data = b""
            while not data.endswith(b"\n"):
                data += await stream.receive()
        return [int(p) for p in data.split()]


@asynccontextmanager
async def notifier() -> AsyncIterator[Notifier]:
    """Open a :class:`Notifier` for the duration of the block."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = multi.listeners[0]
        n = Notifier(listener)
        try:
            yield n
        finally:
            for stream in n._streams:
                await stream.aclose()
