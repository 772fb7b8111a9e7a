"""Turning SIGTERM and SIGHUP into cancellation, so that a program stopped by them still shuts
its kernels down.

Python's default action for SIGTERM and SIGHUP ends the process at once: no ``finally`` block
and no ``__aexit__`` runs, so every kernel the program started is orphaned, with its connection
file. :func:`cancel_on_signals` receives those signals while its block runs and cancels the
block instead, so the scopes inside it clean up as they would for any cancellation.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType
from typing import Any

import anyio

from ._errors import KernelStateError
from ._taskgroup import OwnedTaskGroup

__all__ = ["SignalCancel", "cancel_on_signals"]

_log = logging.getLogger("kernel_nursery")

if sys.platform == "win32":
    _DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM,)
else:
    _DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

# Signals some cancel_on_signals() block receives now. Only the main thread installs handlers,
# so no lock is needed.
_active: set[signal.Signals] = set()

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class SignalCancel:
    """What :func:`cancel_on_signals` yields: which signal, if any, cancelled its block.

    .. versionadded:: 0.1
    """

    __slots__ = ("_signum",)

    def __init__(self) -> None:
        self._signum: signal.Signals | None = None

    @property
    def signum(self) -> signal.Signals | None:
        """The signal that cancelled the block (the first one received while it ran), or
        ``None`` when no signal came."""
        return self._signum

    @property
    def exit_status(self) -> int | None:
        """``128 + signum``, the status a shell reports for a program ended by that signal, or
        ``None`` when no signal came: ``sys.exit(caught.exit_status)`` exits 0 then."""
        return None if self._signum is None else 128 + self._signum

    def __repr__(self) -> str:
        name = None if self._signum is None else self._signum.name
        return f"<SignalCancel signum={name}>"


def cancel_on_signals(*signums: int) -> AbstractAsyncContextManager[SignalCancel]:
    """Cancel the block when the process receives one of *signums* (default ``SIGTERM`` and
    ``SIGHUP``), so that the kernels started in it are shut down instead of orphaned.

    Use it around the whole of a program's work, in the main thread, and exit with the status it
    reports:

    .. code-block:: python

        import sys

        import trio

        from kernel_nursery import cancel_on_signals, start_kernel


        async def main() -> int | None:
            async with cancel_on_signals() as caught:  # SIGTERM and SIGHUP
                async with start_kernel("python3") as km:
                    ...  # until done, or until a signal cancels the block
            return caught.exit_status  # None (exit 0), or 128 + the signal's number


        sys.exit(trio.run(main))

    Under asyncio, the same ``main`` runs with ``sys.exit(asyncio.run(main()))``.

    While the block runs, the signals are received with :func:`anyio.open_signal_receiver` by a
    task of its own. The first one cancels the block's scope and is recorded in the yielded
    :class:`SignalCancel`; the cancellation ends the block (the ``async with`` is left without an
    exception), and the kernel managers inside shut their kernels down on the way out, shielded
    and bounded by their ``shutdown_wait_time``. Further signals received while that cleanup
    runs are ignored (logged at debug level on the ``kernel_nursery`` logger): they never
    interrupt it. An exception raised in the block propagates as itself, never wrapped in an
    ExceptionGroup. When the block ends, the signals' previous handlers are back.

    A signal that the process ignores when the block starts (``SIGHUP`` under ``nohup``) stays
    ignored. ``SIGINT`` is left alone unless it is asked for: trio and asyncio already turn it
    into :class:`KeyboardInterrupt`, which also runs the cleanup. Under asyncio, a handler added
    with ``loop.add_signal_handler()`` for one of the signals is removed by the block (asyncio
    keeps one per signal); add it again afterwards.

    Args:
        signums: The signals to receive; none given means ``SIGTERM`` and ``SIGHUP``.

    Returns:
        An async context manager yielding a :class:`SignalCancel`.

    Raises:
        ValueError: a number that is not a signal, or ``SIGKILL``/``SIGSTOP``, which cannot be
            caught (when called).
        KernelStateError: on entering, outside the main thread (Python runs signal handlers
            there only), or while another ``cancel_on_signals()`` block receives one of the
            same signals.

    .. versionadded:: 0.1
    """
    return _cancel_on_signals(_catchable(signums))


def _catchable(signums: tuple[int, ...]) -> tuple[signal.Signals, ...]:
    """*signums* as signals, without repeats (the defaults when empty), checked at the call
    rather than on entering, so a wrong number fails where it is written.

    Raises:
        ValueError: a number that is not a signal, or one that cannot be caught.
    """
    wanted = tuple(dict.fromkeys(signal.Signals(s) for s in signums)) or _DEFAULT_SIGNALS
    uncatchable = [s.name for s in wanted if s in (signal.SIGKILL, signal.SIGSTOP)]
    if uncatchable:
        raise ValueError(f"{', '.join(uncatchable)} cannot be caught")
    return wanted


@asynccontextmanager
async def _cancel_on_signals(wanted: tuple[signal.Signals, ...]) -> AsyncIterator[SignalCancel]:
    if threading.current_thread() is not threading.main_thread():
        raise KernelStateError(
            "cancel_on_signals() works only in the main thread, where Python runs signal "
            "handlers: run the event loop there"
        )
    busy = [s.name for s in wanted if s in _active]
    if busy:
        raise KernelStateError(
            f"cancel_on_signals() is already active for {', '.join(busy)}: use one block for "
            "the whole program"
        )
    caught = SignalCancel()
    handled = tuple(s for s in wanted if signal.getsignal(s) != signal.SIG_IGN)
    if not handled:
        yield caught
        return
    previous: dict[signal.Signals, _Handler] = {s: signal.getsignal(s) for s in handled}
    _active.update(handled)
    try:
        with anyio.open_signal_receiver(*handled) as signals:
            # The block runs in this task and only the receiver in the group, which is closed
            # with no exception passed in: the block's own exception propagates unwrapped.
            group = OwnedTaskGroup()

            def stop() -> None:
                # Shielded because bounded (the receiver ends at once): a cancellation from
                # outside must not replace the block's own exception here.
                task_group.cancel_scope.shield = True
                task_group.cancel_scope.cancel()

            task_group = await group.open(stop)
            block = anyio.CancelScope()
            task_group.start_soon(_receive, signals, block, caught)
            try:
                with block:
                    yield caught
            finally:
                await group.close()
    finally:
        _active.difference_update(handled)
        _restore(previous)


async def _receive(
    signals: AsyncIterator[signal.Signals], block: anyio.CancelScope, caught: SignalCancel
) -> None:
    """Cancel *block* on the first signal; swallow the later ones until cancelled.

    It keeps receiving while the block's cleanup runs, so a second signal meets our handler
    rather than the default action that ends the process.
    """
    async for signum in signals:
        if caught._signum is None:
            caught._signum = signum
            _log.info("Received %s: cancelling the block to clean up", signum.name)
            block.cancel()
        else:
            _log.debug(
                "Received %s while cleaning up after %s: ignored",
                signum.name,
                caught._signum.name,
            )


def _restore(previous: dict[signal.Signals, _Handler]) -> None:
    """Put back the handlers the signals had before the block.

    trio restores them itself; asyncio's loop resets a signal to its default action when its
    handler is removed, which would lose a handler set with :func:`signal.signal` (asyncio's own
    SIGINT handler among them).
    """
    for signum, handler in previous.items():
        if handler is not None and signal.getsignal(signum) != handler:
            signal.signal(signum, handler)
