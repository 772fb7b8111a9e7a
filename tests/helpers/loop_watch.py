"""Watching an event loop for pauses: how long it was kept from running, and which blocking
operation of ours ran on its thread.

A watchdog task sleeps 1 ms in a loop and records the longest gap between its wake-ups. A
synchronous spawn takes a millisecond or so, less than what a loaded machine makes of an
ordinary step of the loop, so the gap alone cannot tell one; two things make the check exact:

- an audit hook (:func:`sys.addaudithook`) records every spawn, temporary file or directory,
  tree removal and file written on the loop's thread (each names itself), and
- it holds every spawn of ours, in whatever thread, for :data:`SLOW_SPAWN` seconds, as a
  spawn from a big or starved process can take: one on the loop's thread would pause it that
  long, far above the bound tests set, one in a worker thread does not pause it at all.

Not ours, recorded apart and never held: the backend's own spawns (asyncio's subprocess
transport spawns on the loop's thread, for ``anyio.open_process``; trio spawns in a worker
thread) in :attr:`LoopWatch.backend`, and what jupyter_client's code does (a provisioner of
its, run through the bridge on the caller's loop under asyncio) in :attr:`LoopWatch.foreign`.

The hook also serves cancellation tests: :meth:`LoopWatch.cancel_at` cancels a scope from
the thread about to run a chosen operation, as a caller's deadline can strike while a worker
thread runs it.

Audit hooks cannot be removed: the hook is installed once and does nothing unless a watch is
active.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread

#: Seconds each spawn of ours is held while a watch runs (see the module's description).
SLOW_SPAWN = 1.0
#: A bound on the loop's longest pause during a start and a shutdown: generous (the longest
#: pauses measured on a loaded two-core machine were 4-134 ms, a Slurm start the longest), and
#: still below :data:`SLOW_SPAWN`, so that one spawn on the loop's thread exceeds it.
PAUSE_BOUND = 0.6

_SPAWNS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty"})
_FILES = frozenset({"tempfile.mkstemp", "tempfile.mkdtemp", "shutil.rmtree"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
# Whose an operation is: that of the innermost frame from one of these (stdlib helpers such
# as subprocess.py or tempfile.py are skipped); anything else is ours.
_ORIGINS = (
    (f"{os.sep}asyncio{os.sep}base_subprocess.py", "backend"),
    (f"{os.sep}jupyter_client{os.sep}", "foreign"),
    (f"{os.sep}kernel_nursery{os.sep}", "ours"),
)


@dataclass
class LoopWatch:
    """What one watch saw."""

    thread: int
    max_pause: float = 0.0
    #: Blocking operations of ours that ran on the loop's thread.
    blocked: list[str] = field(default_factory=list)
    #: Spawns of the backend itself on the loop's thread (asyncio's subprocess transport).
    backend: list[str] = field(default_factory=list)
    #: What jupyter_client's code did on the loop's thread.
    foreign: list[str] = field(default_factory=list)
    #: The operation at which :meth:`cancel_at` cancelled its scope, once it did.
    cancelled_at: str | None = None
    _cancel: tuple[str, anyio.CancelScope] | None = None
    _last: float = 0.0

    def cancel_at(self, needle: str, scope: anyio.CancelScope) -> None:
        """Cancel *scope* from the thread about to run the next watched operation whose
        description holds *needle* (the operation then runs: cancelling does not stop a
        thread)."""
        self._cancel = (needle, scope)

    def check(self, bound: float = PAUSE_BOUND) -> None:
        """Fail unless nothing of ours blocked the loop and no pause exceeded *bound*."""
        assert not self.blocked, f"blocking operations on the event loop: {self.blocked}"
        assert self.max_pause < bound, f"the event loop paused {self.max_pause:.3f} s"

    async def _tick(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        self._last = time.perf_counter()
        task_status.started()  # the watch begins before the block
        while True:
            await anyio.sleep(0.001)
            self._mark()

    def _mark(self) -> None:
        """The time since the last mark is a pause (less the 1 ms slept)."""
        now = time.perf_counter()
        self.max_pause = max(self.max_pause, now - self._last - 0.001)
        self._last = now


_active: LoopWatch | None = None
_installed = False
_inside = threading.local()


def _describe(event: str, args: tuple[Any, ...]) -> str | None:
    """What the audit *event* does that blocks, or ``None`` when it is not watched."""
    if event in _SPAWNS:
        return f"{event} {args[1] if event == 'subprocess.Popen' else args[:1]!r}"
    if event in _FILES:
        return f"{event} {args[0]!r}"
    if event == "open" and isinstance(args[0], str | bytes):
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writing and os.fsdecode(path) != os.devnull:
            return f"open for writing {os.fsdecode(path)!r}"
    return None


def _origin() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        for part, origin in _ORIGINS:
            if part in frame.f_code.co_filename:
                return origin
        frame = frame.f_back
    return "ours"


def _hook(event: str, args: tuple[Any, ...]) -> None:
    watch = _active
    if watch is None or getattr(_inside, "busy", False):
        return
    _inside.busy = True  # the hook's own work raises audit events too
    try:
        what = _describe(event, args)
        if what is None:
            return
        origin = _origin()
        _cancel_if_asked(watch, what)
        if threading.get_ident() == watch.thread:
            records = {"ours": watch.blocked, "backend": watch.backend, "foreign": watch.foreign}
            records[origin].append(what)
        if event in _SPAWNS and origin == "ours":
            time.sleep(SLOW_SPAWN)
    finally:
        _inside.busy = False


def _cancel_if_asked(watch: LoopWatch, what: str) -> None:
    if watch._cancel is None or watch._cancel[0] not in what:
        return
    scope = watch._cancel[1]
    watch._cancel, watch.cancelled_at = None, what
    if threading.get_ident() == watch.thread:
        scope.cancel()
    else:
        anyio.from_thread.run_sync(scope.cancel)  # a worker thread of the loop's


@asynccontextmanager
async def watch_loop() -> AsyncIterator[LoopWatch]:
    """Watch the running loop while the block runs (one watch at a time per process)."""
    global _active, _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    assert _active is None, "one loop watch at a time"
    watch = LoopWatch(thread=threading.get_ident())
    async with anyio.create_task_group() as tg:
        await tg.start(watch._tick)
        _active = watch
        try:
            yield watch
        finally:
            watch._mark()  # the block's last stretch: a pause the watchdog could not end
            _active = None
            tg.cancel_scope.cancel()
