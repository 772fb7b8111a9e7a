"""Lifecycle events: what happened to a kernel, delivered to whoever listens, without polling."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["EventKind", "KernelEvent", "PoolEvent", "PoolEventKind", "PoolStatus"]

EventKind = Literal[
    "starting",
    "started",
    "restarting",
    "restarted",
    "dead",
    "shutdown",
    "unresponsive",
    "culling",
    "progress",
]


@dataclass(frozen=True, kw_only=True)
class KernelEvent:
    """Something that happened to a kernel.

    ``kind`` is one of ``starting``, ``started`` (ready to use), ``restarting``, ``restarted``,
    ``dead`` (it died and will not be restarted), ``shutdown``, ``unresponsive`` (it
    missed :attr:`KernelManager.heartbeat_misses` heartbeats in a row, when heartbeat
    supervision is on), ``culling`` (a :class:`KernelNursery` is about to shut it down for
    being idle), and ``progress`` (between ``starting`` or ``restarting`` and what follows: the
    provisioner reports where the launch stands, in ``state``, ``node`` and ``detail``; e.g. a
    Slurm job ``PENDING`` in the queue, then ``RUNNING`` on a node; see
    :meth:`~kernel_nursery.provisioning.KernelProvisionerBase.report_progress`). Kinds may be
    added: a listener passes over those it does not know.

    .. versionadded:: 0.1
    """

    kind: EventKind
    kernel_id: str
    #: The exit status of the process that ended, for ``restarting`` (after a crash),
    #: ``dead`` and ``shutdown``; otherwise ``None``.
    exit_status: int | None = None
    #: For ``dead`` and ``restarting``: why the kernel's process ended, in a few words, when
    #: its provisioner knows more than the exit status (``killed by the out-of-memory killer
    #: at its memory limit of 512 MiB``; see
    #: :attr:`~kernel_nursery.provisioning.KernelProvisionerBase.end_reason`); otherwise
    #: ``None``.
    reason: str | None = None
    #: For ``dead`` and ``restarting``: the name of the resource limit that ended the kernel
    #: (``memory``, ``pids``, ``cpu_time``, ``cpus``, ``file_size``, ``open_files``), when one
    #: did; otherwise ``None``.
    limit: str | None = None
    #: For ``culling``: seconds since the kernel's last activity; otherwise ``None``.
    idle_time: float | None = None
    #: For ``progress``: the stage the launch reached, in the provisioner's words (Slurm's:
    #: ``SUBMITTED``, ``PENDING``, ``RUNNING``); otherwise ``None``.
    state: str | None = None
    #: For ``progress``: the host (node) the kernel runs on, once known; otherwise ``None``.
    node: str | None = None
    #: For ``progress``: one line for people (``job 42 is pending in the queue``), or ``None``.
    detail: str | None = None
    #: ``time.time()`` when it happened.
    time: float = field(default_factory=time.time)


PoolEventKind = Literal[
    "starting", "warm", "taken", "released", "discarded", "start_failed", "culling"
]


@dataclass(frozen=True, kw_only=True)
class PoolStatus:
    """A snapshot of a :class:`KernelPool`'s counts.

    .. versionadded:: 0.1
    """

    #: How many kernels the pool keeps warm (its ``size`` setting).
    size: int
    #: Kernels started, ready, and waiting to be taken.
    warm: int
    #: Kernels starting now: refills, and the starts of takes that found no warm kernel.
    starting: int
    #: Kernels taken and not yet given back (their takers' scopes have not ended).
    taken: int
    #: Takes so far, and how many of them found no warm kernel (each then started one, and
    #: took whichever kernel was ready first: that one or a refill).
    takes: int = 0
    cold_takes: int = 0
    #: Warm kernels that died (or were restarted, or shut down) before they were taken, and
    #: were discarded.
    discarded: int = 0
    #: Refills that failed to start.
    failed_starts: int = 0
    #: Taken kernels culled for being idle.
    culled: int = 0


@dataclass(frozen=True, kw_only=True)
class PoolEvent:
    """Something that happened in a :class:`KernelPool`.

    ``kind`` is one of ``starting`` (a refill, or the start of a take that found no warm
    kernel, begins), ``warm`` (a
    kernel is ready to be taken), ``taken`` (with
    ``take_time``, and ``cold`` when the take found no warm kernel and started its own),
    ``released`` (a taker's scope ended and its kernel was shut down), ``discarded`` (a warm
    kernel died, was restarted or shut down before anyone took it), ``start_failed`` (a refill
    did not start; ``error`` says why) and ``culling`` (a taken kernel is about to be shut down
    for being idle).

    .. versionadded:: 0.1
    """

    kind: PoolEventKind
    #: The kernel concerned (``None`` for ``starting`` and ``start_failed``).
    kernel_id: str | None
    #: The pool's counts just after it happened.
    status: PoolStatus
    #: For ``taken``: seconds from the call of ``take()`` to the kernel handed over.
    take_time: float | None = None
    #: For ``taken``: whether the take found no warm kernel (it started one, and waited).
    cold: bool = False
    #: For ``start_failed``: the error, as text.
    error: str | None = None
    #: ``time.time()`` when it happened.
    time: float = field(default_factory=time.time)


E = TypeVar("E")


class Hub(Generic[E]):
    """Delivers events to every current subscriber; each has an unbounded queue of its own, so
    a slow listener never blocks the kernel's lifecycle."""

    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[E]] = set()
        self._closed = False

    def emit(self, event: E) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._subscribers.discard(send)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[MemoryObjectReceiveStream[E]]:
        send, receive = anyio.create_memory_object_stream[E](math.inf)
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


class EventHub(Hub[KernelEvent]):
    """The hub of a kernel's lifecycle events."""
