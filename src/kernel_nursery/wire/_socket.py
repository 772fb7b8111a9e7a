"""Awaitable zmq sockets under anyio: a thin layer over a plain (non-blocking) pyzmq socket.

No background task and no future: a call that cannot complete at once awaits the socket's file
descriptor with :func:`anyio.wait_readable`, under whichever backend runs it.

zmq's descriptor is edge-triggered: it becomes readable when the socket's state *changes*, and
any call into the socket (a send, a receive, reading ``zmq.EVENTS``) may consume that edge while
processing zmq's internal commands. Each wait therefore reads ``EVENTS`` first and waits on the
descriptor only when its event is not already there.

trio lets one task wait on a descriptor at a time (asyncio one reader per descriptor), so the
first waiter *watches* the descriptor and wakes the others through an :class:`anyio.Event`. The
watcher can then miss an edge that another task's call consumed while it slept: a task that
receives one of two queued messages leaves the second one ready and the descriptor silent. So
every call made while a watcher sleeps reads ``EVENTS`` afterwards, and if an event some waiter
wants is ready it wakes the watcher (cancelling its wait), and everyone looks again.
"""

from __future__ import annotations

import anyio
import zmq

__all__ = ["AsyncSocket"]


class AsyncSocket:
    """A zmq socket whose sends and receives are awaited, not blocked on or polled.

    Any number of tasks may send and receive at once. Closing it (:meth:`close`) wakes every
    task waiting on it with :class:`anyio.ClosedResourceError`, so a closed socket never hangs a
    caller.
    """

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self.socket = socket
        self._fd = int(socket.getsockopt(zmq.FD))
        self._woken: anyio.Event | None = None  # set when the descriptor's watcher wakes
        self._watch: anyio.CancelScope | None = None  # the watcher's wait, while it sleeps
        self._wanted: dict[int, int] = {zmq.POLLIN: 0, zmq.POLLOUT: 0}  # waiters, per event
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send_multipart(self, frames: list[bytes]) -> None:
        """Send a multipart message; waits only while the socket's send queue is full.

        Cancelled while waiting, nothing was sent.
        """
        while True:
            self._check_open()
            try:
                self.socket.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                await self._wait(zmq.POLLOUT)
            else:
                self._wake_watcher_if_ready()
                return

    async def recv_multipart(self) -> list[bytes]:
        """Receive the next multipart message, waiting for it without polling.

        Cancelled while waiting, no message was taken from the socket.
        """
        while True:
            self._check_open()
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await self._wait(zmq.POLLIN)
            else:
                self._wake_watcher_if_ready()
                return frames

    async def _wait(self, event: int) -> None:
        self._wanted[event] += 1
        try:
            while not self._events() & event:
                if self._woken is None:
                    self._woken = woken = anyio.Event()
                    try:
                        with anyio.CancelScope() as self._watch:
                            await anyio.wait_readable(self._fd)
                    finally:
                        self._watch = self._woken = None
                        woken.set()
                else:
                    await self._woken.wait()
                self._check_open()
        finally:
            self._wanted[event] -= 1

    def _events(self) -> int:
        self._check_open()
        events = int(self.socket.getsockopt(zmq.EVENTS))
        if self._watch is not None and events & self._wanted_events():
            self._watch.cancel()
        return events

    def _wake_watcher_if_ready(self) -> None:
        # Our call may have consumed the edge a sleeping watcher waits for.
        if self._watch is not None:
            self._events()

    def _wanted_events(self) -> int:
        return (zmq.POLLIN if self._wanted[zmq.POLLIN] else 0) | (
            zmq.POLLOUT if self._wanted[zmq.POLLOUT] else 0
        )

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
