"""Lifecycle events: what happened to a kernel, delivered to whoever listens, without polling."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["EventKind", "KernelEvent"]

EventKind = Literal[
    "starting", "started", "restarting", "restarted", "dead", "shutdown", "unresponsive"
]


@dataclass(frozen=True, kw_only=True)
class KernelEvent:
    """Something that happened to a kernel.

    ``kind`` is one of ``starting``, ``started`` (ready to use), ``restarting``, ``restarted``,
    ``dead`` (it died and will not be restarted), ``shutdown``, and ``unresponsive`` (it
    missed :attr:`KernelManager.heartbeat_misses` heartbeats in a row, when heartbeat
    supervision is on).

    .. versionchanged:: 0.2
        The ``unresponsive`` kind.

    .. versionadded:: 0.1
    """

    kind: EventKind
    kernel_id: str
    #: The exit status of the process that ended, for ``restarting`` (after a crash),
    #: ``dead`` and ``shutdown``; otherwise ``None``.
    exit_status: int | None = None
    #: ``time.time()`` when it happened.
    time: float = field(default_factory=time.time)


class EventHub:
    """Delivers events to every current subscriber; each has an unbounded queue of its own, so
    a slow listener never blocks the kernel's lifecycle."""

    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[KernelEvent]] = set()
        self._closed = False

    def emit(self, event: KernelEvent) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[KernelEvent]]:
        send, receive = anyio.create_memory_object_stream[KernelEvent](math.inf)
        if self._closed:
            send.close()  # nothing more will happen: the iteration ends at once
        else:
            self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def close(self) -> None:
        """End every subscription, and every later one at once: their iterations finish."""
        self._closed = True
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()
