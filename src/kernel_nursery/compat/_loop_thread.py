"""A private asyncio event loop in a thread, which a bridge's provisioner owns.

Both bridges run provisioner code on a loop other than their caller's: jupyter_client's
provisioners under trio (they are asyncio code), and ours under jupyter_client's kernel managers
(whose blocking manager calls each method on whichever loop jupyter_core's ``run_sync`` picks,
while what our provisioner holds, a child process above all, is served by the loop it was made
on). :class:`LoopThread` is that loop: it runs as long as its owner lives, so what it holds is
served between calls too, and every call reaches it from any loop, with cancellation carried
across.
"""

from __future__ import annotations

import asyncio  # backend-specific: the private loop is asyncio's (jupyter_client's code is)
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .._errors import ProvisionerError

__all__ = ["CANCEL_WAIT", "LoopThread"]

#: Seconds a cancelled call gets, on the provisioner's own loop, to finish unwinding before we
#: stop waiting for it (a provisioner that blocks its loop cannot hold ours longer than this).
CANCEL_WAIT = 5.0
#: Seconds a stopping private loop gives the calls left on it (abandoned at their deadline,
#: then cancelled) to unwind before it is closed without them.
_LEFTOVER_WAIT = 1.0
#: Seconds to join the private loop's thread once it has said it ends (it has only to return).
_JOIN_WAIT = 1.0

T = TypeVar("T")
_log = logging.getLogger(__name__)


class LoopThread:
    """A private asyncio loop in a daemon thread, owned by one provisioner of a bridge.

    :meth:`run` runs a coroutine there and awaits it from the caller's event loop, whichever it
    is (trio, or any asyncio loop: a call may come from another loop than the last one), without
    a thread of the caller's: the task's end writes a byte to a pipe, which the caller awaits
    with :func:`anyio.wait_readable`. Cancelling :meth:`run` cancels the task there and waits
    (bounded by :data:`CANCEL_WAIT`, or by the *deadline* given, shielded) for it to unwind.
    :meth:`aclose` stops the loop and joins the thread, bounded the same way.

    Args:
        what: Who runs there, for log lines and errors ("a jupyter_client provisioner").
    """

    def __init__(self, *, what: str) -> None:
        self.what = what
        self.loop = asyncio.new_event_loop()
        # Written by the thread as it ends: what aclose() awaits before joining it.
        self._ended_r, self._ended_w = os.pipe()
        # Set by the first aclose(), once the loop is stopped: later ones wait for it.
        self._closing: anyio.Event | None = None
        self._thread = threading.Thread(
            target=self._serve, name=f"kernel-nursery: {what}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.loop.run_forever()
            # What the provisioner left on its loop (a call abandoned at its deadline) is
            # cancelled and given a short while to unwind; one that will not is dropped.
            left = asyncio.all_tasks(self.loop)
            for task in left:
                task.cancel()
            if left:
                self.loop.run_until_complete(asyncio.wait(left, timeout=_LEFTOVER_WAIT))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            try:
                os.write(self._ended_w, b".")
            except OSError:
                pass  # nobody waits any more
            finally:
                os.close(self._ended_w)

    async def run(self, coro: Coroutine[Any, Any, T], *, deadline: float | None = None) -> T:
        if self._closing is not None:
            coro.close()  # never to be awaited
            raise ProvisionerError(f"{self.what}'s call came too late: its event loop is stopped")
        read_fd, write_fd = os.pipe()
        lock = threading.Lock()
        closed = False
        box: dict[str, asyncio.Task[T]] = {}

        def notify(_: object) -> None:  # in the loop's thread
            with lock:
                if not closed:
                    os.write(write_fd, b".")

        def start() -> None:  # in the loop's thread
            task = self.loop.create_task(coro)
            box["task"] = task
            task.add_done_callback(notify)

        def cancel() -> None:  # in the loop's thread, after start()
            task = box.get("task")
            if task is not None:
                task.cancel()

        try:
            self.loop.call_soon_threadsafe(start)
            try:
                await anyio.wait_readable(read_fd)
            except BaseException:
                self.loop.call_soon_threadsafe(cancel)
                wait = CANCEL_WAIT
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - anyio.current_time()))
                with anyio.CancelScope(shield=True), anyio.move_on_after(wait) as bound:
                    await anyio.wait_readable(read_fd)
                if bound.cancelled_caught and deadline is None:
                    _log.warning(
                        "A call of %s did not end within %g s of its cancellation (its event "
                        "loop is blocked); abandoned",
                        self.what,
                        CANCEL_WAIT,
                    )
                raise
            task = box["task"]
            if task.cancelled():  # not by us: the loop was stopped under it (aclose)
                raise ProvisionerError(f"{self.what}'s call was abandoned: its event loop stopped")
            return task.result()
        finally:
            with lock:
                closed = True
                os.close(read_fd)
                os.close(write_fd)

    async def aclose(self) -> None:
        """Stop the loop and join the thread, waiting at most :data:`CANCEL_WAIT` seconds
        (shielded): a loop blocked by the code it runs is abandoned (a warning says so),
        with the task it runs. What is left on the loop is cancelled first. Closing again, or
        from two tasks at once, waits for the first close (bounded the same way), and stops
        nothing twice."""
        closing = self._closing
        if closing is not None:
            if not closing.is_set():
                # Bounded: the first aclose() sets it within CANCEL_WAIT + _JOIN_WAIT.
                with anyio.CancelScope(shield=True):
                    await closing.wait()
            return
        self._closing = closing = anyio.Event()
        try:
            await self._stop()
        finally:
            closing.set()

    async def _stop(self) -> None:
        if not self._thread.is_alive():
            os.close(self._ended_r)
            return
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            pass  # closed already: the thread is ending
        ended = False
        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_WAIT):
                await anyio.wait_readable(self._ended_r)
                ended = True
        finally:
            os.close(self._ended_r)
        if ended:
            # It has said it ends: it has only to return. Shielded (a cancelled caller's
            # thread start would be refused), and bounded by the join's own timeout.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._thread.join, _JOIN_WAIT)
        else:
            _log.warning(
                "The event loop of %s did not stop within %g s (it is blocked); its thread is "
                "abandoned",
                self.what,
                CANCEL_WAIT,
            )
