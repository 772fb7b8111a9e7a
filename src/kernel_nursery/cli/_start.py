"""``kernel-nursery start``: keep a kernel running until a signal, like ``jupyter kernel``."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from traitlets import Bool

from .._signals import cancel_on_signals
from ..manager import KernelEvent, KernelManager
from ._base import KernelNurseryCommand
from ._output import (
    EXIT_CLOSED_PIPE,
    kernel_output,
    progress,
    say,
    stdout_closed,
    until_stdout_closes,
    write,
)
from ._run import announce_stop

__all__ = ["StartApp"]

#: ``start`` has no code to interrupt: Ctrl-C stops it, as SIGTERM and SIGHUP do.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Exit status when the kernel kept dying and was given up.
EXIT_GIVEN_UP = 1


class StartApp(KernelNurseryCommand):
    """kernel-nursery start [KERNEL]: run a kernel until Ctrl-C, like ``jupyter kernel``."""

    name = "kernel-nursery-start"
    usage = "Usage: kernel-nursery start [KERNEL] [OPTIONS]"
    description = (
        "Start a kernel (python3 unless KERNEL is given) and keep it running until Ctrl-C, "
        "SIGTERM or SIGHUP, restarting it if it dies. Standard output carries one line, the "
        "connection file's path, for `kernel-nursery run --existing FILE CODE`, `jupyter "
        "console --existing FILE` or another program; "
        "messages and the kernel's own output go to standard error. Exit status: 130/143/129 "
        "stopped by Ctrl-C/SIGTERM/SIGHUP (the kernel was shut down first), 1 the kernel kept "
        "dying and was given up, 2 it could not be started."
    )
    examples = """
kernel-nursery start
kernel-nursery start ir --kernel-output kernel.log
FILE=$(kernel-nursery start python3 | head -1)   # in the background: ... &
kernel-nursery start --encrypt   # CurveZMQ where the spec declares it: for clients that speak it
"""

    encrypt = Bool(
        False,
        config=True,
        help="Encrypt the kernel's channels with CurveZMQ where its spec declares support "
        "(transport_encryption='auto'). Off by default: the connection file is for other "
        "tools, and a client that predates CurveZMQ cannot reach an encrypted kernel. "
        "KernelManager.transport_encryption, when set, decides instead.",
    )
    flags: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **KernelNurseryCommand.flags,
        "encrypt": ({"StartApp": {"encrypt": True}}, "Encrypt where the kernel supports it."),
    }

    def start(self) -> None:
        kernel_name = self.extra_args[0] if self.extra_args else "python3"
        if len(self.extra_args) > 1:
            self.fail(f"start takes at most one kernel name (got {' '.join(self.extra_args)!r})")
        self.check_kernel_output()
        self.run(lambda: self._serve(kernel_name))

    def kernel_manager(self, kernel_name: str) -> KernelManager:
        """A manager whose kernel runs in clear unless asked (:attr:`encrypt`, or the
        manager's own ``transport_encryption``): the connection file is for other tools."""
        km = super().kernel_manager(kernel_name)
        if not km.transport_encryption:
            km.transport_encryption = "auto" if self.encrypt else "disabled"
        return km

    async def _serve(self, kernel_name: str) -> int:
        """Start the kernel, say where it is, and follow it until a signal or its death."""
        status = 0
        async with (
            cancel_on_signals(*STOP_SIGNALS) as caught,
            kernel_output(self.kernel_output) as launch_kw,
            self.kernel_manager(kernel_name) as km,
            km.events() as events,
        ):
            try:
                with until_stdout_closes():
                    async with progress(f"Starting kernel {kernel_name}"):
                        await km.start_kernel(**launch_kw)
                    _announce_start(km, kernel_name)
                    status = await _follow(events)
            finally:
                announce_stop(caught)
        if caught.exit_status is not None:
            return caught.exit_status
        return EXIT_CLOSED_PIPE if stdout_closed() else status


def _announce_start(km: KernelManager, kernel_name: str) -> None:
    """The connection file on standard output, alone; the rest on standard error."""
    connection_file = km.connection_file or ""
    say(f"Kernel {km.kernel_id} ({kernel_name}) started.")
    write(sys.stdout, f"{connection_file}\n")
    say(f"Connect with: jupyter console --existing {connection_file}")
    say(f"Run code in it with: kernel-nursery run --existing {connection_file} CODE")


async def _follow(events: AsyncIterator[KernelEvent]) -> int:
    """Report restarts on standard error until the kernel is given up (then 1)."""
    async for event in events:
        if event.kind in ("restarting", "restarted", "dead"):
            say(f"Kernel {event.kind}{_exit_detail(event)}")
        if event.kind == "dead":
            return EXIT_GIVEN_UP
    return 0


def _exit_detail(event: KernelEvent) -> str:
    return "" if event.exit_status is None else f" (exit status {event.exit_status})"
