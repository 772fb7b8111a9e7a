"""Event-driven restarters for jupyter_client's IOLoop kernel managers (jupyter_server's).

jupyter_client's restarters ask the kernel manager ``is_alive()`` every ``time_to_dead``
seconds (3 s by default), so a dead kernel is noticed, and restarted, up to that late.
:class:`NurseryRestarter` and :class:`AsyncNurseryRestarter` await the kernel's exit instead,
through our provisioner's ``wait()``, and then run jupyter_client's own ``poll()``: its restart
limit, its ``restart``/``dead`` callbacks, its choice of new ports, its log lines. One line of
configuration selects them (``restarter_class``). For a kernel whose provisioner is not ours
they poll, as jupyter_client's do.
"""

from __future__ import annotations

# jupyter_client's restarters run on the kernel manager's tornado IOLoop, an asyncio loop.
import asyncio  # backend-specific: jupyter_client's IOLoop kernel managers are asyncio code
import contextlib
import inspect
import time
from concurrent.futures import Future as ConcurrentFuture
from typing import Any

from jupyter_client.ioloop.restarter import AsyncIOLoopKernelRestarter, IOLoopKernelRestarter

from ._to_jupyter import NurseryProvisioner

__all__ = ["AsyncNurseryRestarter", "NurseryRestarter"]


class _ExitWatch:
    """What both restarters share: a task on the manager's loop awaiting the kernel's exit,
    and a timer for the stable-start rule (which jupyter_client's restarters apply at their
    polls while the kernel lives)."""

    kernel_manager: Any
    loop: Any
    log: Any
    time_to_dead: float
    stable_start_time: float
    _last_dead: float
    _restarting: bool
    _initial_startup: bool
    _watch: asyncio.Task[None] | None = None
    _settle_timer: asyncio.TimerHandle | None = None
    _polling = False  # fell back to jupyter_client's polls
    _generation = 0  # counts stop()s: a watch asked for before one does not begin

    def start(self) -> None:
        """Watch the kernel: await its exit (our provisioner), or poll (any other). Called
        from any thread (a blocking manager starts it from ``run_sync``'s): the watch begins
        on the manager's loop."""
        provisioner = self.kernel_manager.provisioner
        if self._polling or not isinstance(provisioner, NurseryProvisioner):
            super().start()  # type: ignore[misc]
            return
        loop = self._asyncio_loop()
        if _running_loop() is loop:
            self._begin(provisioner, self._generation)
        else:
            loop.call_soon_threadsafe(self._begin, provisioner, self._generation)

    def _begin(self, provisioner: NurseryProvisioner, generation: int) -> None:
        """On the manager's loop: the watch task and the stable-start timer, unless stopped
        since :meth:`start` asked."""
        if generation != self._generation or self._watch is not None:
            return
        loop = self._asyncio_loop()
        self._watch = loop.create_task(self._await_exit(provisioner))
        self._settle_later(loop)

    def stop(self) -> None:
        """Stop watching (a shutdown or a restart is under way); a restart in progress, started
        by this restarter, goes on: the watch let go of it. Called from any thread."""
        super().stop()  # type: ignore[misc]
        self._generation += 1
        watch, self._watch = self._watch, None
        timer, self._settle_timer = self._settle_timer, None
        loop = self._asyncio_loop()
        for handle in (watch, timer):
            if handle is not None and not loop.is_closed():
                loop.call_soon_threadsafe(handle.cancel)

    def _asyncio_loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self.loop, "asyncio_loop", None)
        return loop if isinstance(loop, asyncio.AbstractEventLoop) else asyncio.get_event_loop()

    async def _await_exit(self, provisioner: NurseryProvisioner) -> None:
        """Await the kernel's exit, then do what jupyter_client's next poll would have done
        (restart it within its limits, or give up with its ``dead`` callbacks). Should that
        raise, this restarter falls back to jupyter_client's polls, which try again."""
        await provisioner.wait()
        self._watch = None  # from here on the restart's own stop() must not cancel this task
        await _settled(self.kernel_manager)
        if self.kernel_manager.shutting_down:
            return
        try:
            result = self.poll()  # type: ignore[attr-defined]
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.log.exception("Restart failed; polling the kernel every %g s", self.time_to_dead)
            self._polling = True
            super().start()  # type: ignore[misc]

    def _settle_later(self, loop: asyncio.AbstractEventLoop) -> None:
        """At the end of the stable-start time after the last death, count the start as
        stable (jupyter_client's polls do so at their first look past it)."""
        if self._settle_timer is not None or not (self._initial_startup or self._restarting):
            return
        provisioner = self.kernel_manager.provisioner
        stable = self.stable_start_time
        if provisioner is not None:
            stable = provisioner.get_stable_start_time(recommended=stable)
        delay = max(0.0, self._last_dead + stable - time.time())
        self._settle_timer = loop.call_later(delay, self._settle, loop)

    def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        self._settle_timer = None
        if self._watch is None:
            return  # stopped, or the kernel died meanwhile: the watch decides
        provisioner = self.kernel_manager.provisioner
        stable = self.stable_start_time
        if provisioner is not None:
            stable = provisioner.get_stable_start_time(recommended=stable)
        if time.time() - self._last_dead < stable:
            self._settle_later(loop)  # a clock that moved: look again when it is due
            return
        self._initial_startup = False
        if self._restarting:
            self.log.debug("KernelRestarter: restart apparently succeeded")
            self._restarting = False


async def _settled(km: Any) -> None:
    """Wait until the start (or restart) the manager has under way has ended, as its own
    interrupt does: a kernel that died during its start is restarted after it, not across it
    (jupyter_client's pending-state bookkeeping allows one operation at a time)."""
    ready = getattr(km, "_ready", None)
    if ready is None or ready.done():
        return
    waitable = asyncio.wrap_future(ready) if isinstance(ready, ConcurrentFuture) else ready
    with contextlib.suppress(Exception):
        await asyncio.shield(waitable)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class NurseryRestarter(_ExitWatch, IOLoopKernelRestarter):
    """jupyter_client's ``IOLoopKernelRestarter``, for its blocking ``IOLoopKernelManager``
    (jupyter_server's synchronous ``MappingKernelManager``), awaiting the kernel's exit instead
    of polling. ``c.IOLoopKernelManager.restarter_class =
    "kernel_nursery.compat.NurseryRestarter"``.

    .. versionadded:: 0.1
    """


class AsyncNurseryRestarter(_ExitWatch, AsyncIOLoopKernelRestarter):
    """jupyter_client's ``AsyncIOLoopKernelRestarter``, for ``AsyncIOLoopKernelManager``
    (jupyter_server's ``ServerKernelManager``), awaiting the kernel's exit instead of polling.
    ``c.AsyncIOLoopKernelManager.restarter_class = "kernel_nursery.compat.AsyncNurseryRestarter"``.

    .. versionadded:: 0.1
    """
