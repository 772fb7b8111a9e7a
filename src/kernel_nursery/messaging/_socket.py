"""Awaitable zmq sockets under anyio: a thin layer over a plain (non-blocking) pyzmq socket.

No background task and no future: a call that cannot complete at once awaits the socket's file
descriptor with :func:`anyio.wait_readable`, under whichever backend runs it.

zmq's descriptor is edge-triggered: it becomes readable when the socket's state *changes*, and
reading ``zmq.EVENTS`` both answers whether a message can be received (or sent) and re-arms it.
So each wait reads ``EVENTS`` first and waits on the descriptor only when the event is not
already there; no wake-up can be lost in between, because only our own calls into zmq clear it.
trio lets one task wait on a descriptor at a time, so the first waiter watches it and wakes the
others through an :class:`anyio.Event`.
"""

from __future__ import annotations

import anyio
import zmq

__all__ = ["AsyncSocket"]


class AsyncSocket:
    """A zmq socket whose sends and receives are awaited, not blocked on or polled.

    Closing it (:meth:`close`) wakes every task waiting on it with
    :class:`anyio.ClosedResourceError`, so a closed socket never hangs a caller.
    """

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self.socket = socket
        self._fd = int(socket.getsockopt(zmq.FD))
        self._watching: anyio.Event | None = None  # set when the descriptor's watcher wakes
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send_multipart(self, frames: list[bytes]) -> None:
        """Send a multipart message; waits only while the socket's send queue is full."""
        while True:
            self._check_open()
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                await self._wait(zmq.POLLOUT)

    async def recv_multipart(self) -> list[bytes]:
        """Receive the next multipart message, waiting for it without polling."""
        while True:
            self._check_open()
            try:
                return self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await self._wait(zmq.POLLIN)

    async def _wait(self, event: int) -> None:
        while not self._events() & event:
            if self._watching is None:
                self._watching = woke = anyio.Event()
                try:
                    await anyio.wait_readable(self._fd)
                finally:
                    self._watching = None
                    woke.set()
            else:
                await self._watching.wait()
            self._check_open()

    def _events(self) -> int:
        self._check_open()
        return int(self.socket.getsockopt(zmq.EVENTS))

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError

    def close(self, linger: int = 0) -> None:
        """Close the socket; waiters get :class:`anyio.ClosedResourceError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        anyio.notify_closing(self._fd)
        self.socket.close(linger=linger)
