"""Ctrl-C in ``run``: the first interrupts the running code, as in a notebook; the next stops."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from .._errors import KernelNurseryError
from ._output import alongside, say

__all__ = ["CtrlC", "handle_ctrl_c"]

Interrupt = Callable[[], Awaitable[object]]


class CtrlC:
    """What Ctrl-C (SIGINT) does in :func:`handle_ctrl_c`'s block, phase by phase.

    - While code runs (inside :meth:`running`), the first one calls the interrupt (the
      kernel's ``KeyboardInterrupt`` ends the code, and the command goes on to shut the kernel
      down); the next one cancels the block, which stops the kernel.
    - Before (while the kernel starts), the first one cancels the block.
    - Once :meth:`stopping` was called (the kernel is being shut down), they are ignored:
      the shutdown is bounded anyway.
    """

    def __init__(self, stop_message: str) -> None:
        self.stop_message = stop_message
        self.count = 0
        self.scope = anyio.CancelScope()
        self._interrupt: Interrupt | None = None
        self._stopping = False

    @property
    def exit_status(self) -> int | None:
        """130 when Ctrl-C was pressed, as a shell reports a program SIGINT ended."""
        return 128 + signal.SIGINT if self.count else None

    @property
    def interrupted(self) -> bool:
        return self.count > 0

    def running(self, interrupt: Interrupt) -> _Running:
        """While in this block, the first Ctrl-C calls *interrupt*."""
        return _Running(self, interrupt)

    def stopping(self) -> None:
        self._stopping = True

    def _received(self, tg: anyio.abc.TaskGroup) -> None:
        self.count += 1
        if self._stopping:
            return
        if self.count == 1 and self._interrupt is not None:
            say("Interrupting the code; press Ctrl-C again to stop the kernel.")
            tg.start_soon(self._call_interrupt, self._interrupt)
            return
        say(self.stop_message)
        self._stopping = True
        self.scope.cancel()

    async def _call_interrupt(self, interrupt: Interrupt) -> None:
        try:
            await interrupt()
        except KernelNurseryError as exc:
            say(f"Could not interrupt the kernel ({exc}); shutting it down.")
            self._stopping = True
            self.scope.cancel()


class _Running:
    def __init__(self, ctrl_c: CtrlC, interrupt: Interrupt) -> None:
        self._ctrl_c = ctrl_c
        self._interrupt = interrupt

    def __enter__(self) -> None:
        self._ctrl_c._interrupt = self._interrupt

    def __exit__(self, *exc: object) -> None:
        self._ctrl_c._interrupt = None


@asynccontextmanager
async def handle_ctrl_c(
    stop_message: str = "Received SIGINT; shutting the kernel down.",
) -> AsyncIterator[CtrlC]:
    """Receive SIGINT while the block runs and handle it as :class:`CtrlC` says; when it
    cancels the block, it says *stop_message* on stderr.

    A SIGINT that the process ignores when the block starts (a background job of a
    non-interactive shell) stays ignored. The handler SIGINT had before is put back on exit.
    """
    ctrl_c = CtrlC(stop_message)
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        with ctrl_c.scope:
            yield ctrl_c
        return
    try:
        with anyio.open_signal_receiver(signal.SIGINT) as sigints:

            async def receive() -> None:
                async with anyio.create_task_group() as tg:
                    async for _ in sigints:
                        ctrl_c._received(tg)

            async with alongside(receive):
                with ctrl_c.scope:
                    yield ctrl_c
    finally:
        # asyncio resets SIGINT to Python's default handler when its own is removed.
        if previous is not None and signal.getsignal(signal.SIGINT) != previous:
            signal.signal(signal.SIGINT, previous)
