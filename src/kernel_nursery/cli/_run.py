"""``kernel-nursery run``: run code in a fresh kernel (or a running one) and print its output."""

from __future__ import annotations

import signal
import sys
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import anyio
from traitlets import Float, List, Unicode

from .._errors import KernelDiedError, KernelNurseryError
from .._signals import SignalCancel, cancel_on_signals
from ..kernelspec import KernelSpecManager
from ..manager import KernelManager
from ..messaging import KernelClient
from ._base import EXIT_CODE_RAISED, KernelNurseryCommand
from ._ctrl_c import CtrlC, handle_ctrl_c
from ._input import terminal_stdin
from ._output import (
    EXIT_CLOSED_PIPE,
    kernel_output,
    print_output,
    progress,
    say,
    stdout_closed,
    until_stdout_closes,
)

__all__ = ["RunApp", "announce_stop"]

#: The usage, on one line, for errors that say what is missing.
_USAGE_LINE = (
    "usage: kernel-nursery run [KERNEL] CODE   or   kernel-nursery run [KERNEL] -f FILE "
    "(kernel-nursery run --help for more)"
)


class RunApp(KernelNurseryCommand):
    """kernel-nursery run [KERNEL] CODE | -f FILE...: run code in a kernel."""

    name = "kernel-nursery-run"
    usage = """
Usage: kernel-nursery run [KERNEL] CODE [OPTIONS]
       kernel-nursery run [KERNEL] -f FILE [-f FILE ...] [OPTIONS]
       kernel-nursery run --existing CONNECTION_FILE CODE | -f FILE ... [OPTIONS]
"""
    description = (
        "Start a kernel (python3 unless KERNEL is given), run CODE or the files (one after the "
        "other, in the same kernel, stopping at the first that raises; '-' is standard input) "
        "and shut the kernel down. Standard output carries only the code's output and the "
        "text of its results; errors, the kernel's own output and messages go to standard "
        "error. The first Ctrl-C interrupts the code, a second one stops the kernel. Exit "
        "status: 0 the code ran, 1 it raised, 2 kernel-nursery could not do it, 130/143/129 "
        "stopped by Ctrl-C/SIGTERM/SIGHUP (the kernel was shut down first)."
    )
    examples = """
kernel-nursery run "print(6 * 7)"
kernel-nursery run python3 "import sys; print(sys.version)" > version.txt
kernel-nursery run ir -f prepare.R -f analysis.R
kernel-nursery run --existing kernel-1234.json "x + 1"
kernel-nursery run --backend trio --kernel-output kernel.log python3 "print(1)"
"""
    files = List(
        Unicode(),
        config=True,
        help="Run the code in these files, one after the other in the same kernel ('-' is "
        "standard input).",
    )
    existing = Unicode(
        "",
        config=True,
        help="Run the code in the kernel already running behind this connection file (left "
        "running afterwards) instead of starting one.",
    )
    existing_timeout = Float(
        10.0,
        config=True,
        help="With --existing: how long the kernel has to answer before run gives up (exit 2).",
    )
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **KernelNurseryCommand.aliases,
        "f": "RunApp.files",
        "file": "RunApp.files",
        "existing": "RunApp.existing",
    }

    def start(self) -> None:
        kernel_name, sources = self._parse_arguments(list(self.extra_args))
        self.check_kernel_output()
        if self.existing:
            self.run(lambda: self._run_existing(Path(self.existing), sources))
        self.run(lambda: self._run(kernel_name, sources))

    def _parse_arguments(self, args: list[str]) -> tuple[str, list[tuple[str, str]]]:
        """The kernel's name and the (label, code) pairs to run, from the command line."""
        if self.files:
            most = 0 if self.existing else 1
            if len(args) > most:
                self.fail(
                    "with -f FILE, give "
                    + ("no other argument" if self.existing else "at most a kernel name")
                    + f" (got {' '.join(args)!r})"
                )
            return (args[0] if args else "python3"), [(f, self._read(f)) for f in self.files]
        if self.existing:
            if len(args) != 1:
                self.fail("usage: kernel-nursery run --existing CONNECTION_FILE CODE")
            return "", [("the code", args[0])]
        if len(args) == 2:
            return args[0], [("the code", args[1])]
        if len(args) == 1:
            if args[0].lower() in KernelSpecManager(parent=self).find_kernel_specs():
                self.fail(f"no code to run in kernel {args[0]!r}; {_USAGE_LINE}")
            return "python3", [("the code", args[0])]
        self.fail(f"no code to run; {_USAGE_LINE}")

    def _read(self, path: str) -> str:
        try:
            if path == "-":
                if sys.stdin is None:  # started with standard input closed (0<&-)
                    self.fail("cannot read -: standard input is closed")
                return sys.stdin.read()
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            self.fail(f"cannot read {path}: {exc.strerror or exc}")
        except UnicodeDecodeError as exc:
            self.fail(f"cannot read {path}: not UTF-8 text ({exc.reason} at byte {exc.start})")

    async def _run(self, kernel_name: str, sources: list[tuple[str, str]]) -> int:
        """Start the kernel, run the code, shut the kernel down; the exit status.

        However it ends (the code's end, a signal, Ctrl-C, a closed standard output, an
        error), the kernel manager's block shuts the kernel down on the way out, shielded and
        bounded by ``shutdown_wait_time``: no process, connection file or port is left.
        """
        status = 0
        async with (
            cancel_on_signals(signal.SIGTERM, signal.SIGHUP) as caught,
            handle_ctrl_c() as ctrl_c,
            kernel_output(self.kernel_output) as launch_kw,
            self.kernel_manager(kernel_name) as km,
        ):
            try:
                with until_stdout_closes():
                    async with progress(f"Starting kernel {kernel_name}"):
                        await km.start_kernel(**launch_kw)
                    async with km.client() as kc:
                        with ctrl_c.running(km.interrupt_kernel):
                            status = await _execute_all(kc, sources, ctrl_c)
            finally:
                ctrl_c.stopping()
                announce_stop(caught)
            if stdout_closed():
                await _interrupt_quietly(km)
            await km.shutdown_kernel()
        return _exit_status(caught, ctrl_c, status)

    async def _run_existing(self, connection_file: Path, sources: list[tuple[str, str]]) -> int:
        """Run the code in a kernel this command did not start, and leave it running."""
        status = 0
        async with (
            cancel_on_signals(signal.SIGTERM, signal.SIGHUP) as caught,
            handle_ctrl_c("Received SIGINT; leaving the kernel running.") as ctrl_c,
        ):
            kc = KernelClient.from_connection_file(connection_file)
            async with kc:
                await kc.wait_for_ready(timeout=self.existing_timeout)
                interrupt = partial(kc.interrupt, timeout=self.existing_timeout)
                with until_stdout_closes(), ctrl_c.running(interrupt):
                    status = await _execute_all(kc, sources, ctrl_c)
                if stdout_closed():
                    # Our code may still run there, for nobody: stop it, leave the kernel.
                    with anyio.move_on_after(self.existing_timeout), suppress(KernelNurseryError):
                        await interrupt()
        return _exit_status(caught, ctrl_c, status)


async def _execute_all(kc: KernelClient, sources: list[tuple[str, str]], ctrl_c: CtrlC) -> int:
    """Run each piece of code in turn, printing its output; stop at the first that raises."""
    stdin_handler = terminal_stdin()
    for i, (label, code) in enumerate(sources):
        try:
            result = await kc.execute(code, output_hook=print_output, stdin_handler=stdin_handler)
        except KernelDiedError as exc:
            # The code took its kernel down (os._exit, a crash, the OOM killer): its failure.
            status = "" if exc.exit_status is None else f" (exit status {exc.exit_status})"
            say(f"kernel-nursery: the kernel died while running {label}{status}")
            return EXIT_CODE_RAISED
        if result.status == "error" or ctrl_c.interrupted:
            skipped = [name for name, _ in sources[i + 1 :]]
            if skipped:
                say(f"kernel-nursery: stopped after {label}; not run: {', '.join(skipped)}")
            return EXIT_CODE_RAISED
    return 0


async def _interrupt_quietly(km: KernelManager) -> None:
    """Interrupt the code that may still run (its output has nowhere to go), so that the
    kernel answers the shutdown request at once rather than after ``shutdown_wait_time``."""
    with anyio.move_on_after(km.shutdown_wait_time):
        try:
            await km.interrupt_kernel()
        except KernelNurseryError:
            pass  # the kernel is gone already, or cannot be interrupted: shut it down anyway


def _exit_status(caught: SignalCancel, ctrl_c: CtrlC, status: int) -> int:
    """A signal's status first (it says why the command stopped), then a closed pipe's."""
    if caught.exit_status is not None:
        return caught.exit_status
    if ctrl_c.exit_status is not None:
        return ctrl_c.exit_status
    return EXIT_CLOSED_PIPE if stdout_closed() else status


def announce_stop(caught: SignalCancel) -> None:
    """Say why the kernel is going away, while it does (the block is being cancelled)."""
    if caught.signum is not None:
        say(f"Received {caught.signum.name}; shutting the kernel down.")
