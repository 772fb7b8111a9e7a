"""Awaiting a toy kernel's readiness (and its death) without polling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream


class Notifier:
    """A loopback listener a toy kernel started with ``--notify PORT`` connects to."""

    def __init__(self, listener: SocketListener) -> None:
        self._listener = listener
        self.port: int = listener.extra(SocketAttribute.local_port)
        self._streams: list[SocketStream] = []

    async def ready(self, timeout: float = 30) -> list[int]:
        """Wait for the next kernel to report; return its pid (and its grandchild's, if any)."""
        with anyio.fail_after(timeout):
            stream = await self._listener.accept()
            self._streams.append(stream)
            data = b""
            while not data.endswith(b"\n"):
                data += await stream.receive()
        return [int(p) for p in data.split()]

    async def closed(self, timeout: float = 30) -> None:
        """Wait until the last kernel that reported has died (its socket reaches EOF)."""
        with anyio.fail_after(timeout):
            try:
                while await self._streams[-1].receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass


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
