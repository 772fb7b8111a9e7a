"""The ``kernel-nursery`` command: list kernel specs and provisioners, start and run kernels."""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO

import anyio
from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import Bool, Enum, Unicode

from .._errors import KernelNurseryError, KernelSpecError
from .._signals import SignalCancel, cancel_on_signals
from ..kernelspec import KernelSpecManager
from ..manager import KernelManager
from ..messaging import Message
from ..provisioning import KernelProvisionerFactory, LocalProvisioner

__all__ = ["KernelNurseryApp", "main"]

#: Exit status when kernel-nursery could not do what was asked (bad kernel, failed start...).
EXIT_ERROR = 2
#: Exit status of ``run`` when the code raised.
EXIT_CODE_RAISED = 1
#: The signals that stop ``run`` and ``start``: the kernel is shut down, and the command exits
#: with 128 + the signal's number (130, 143, 129), as a shell reports a program they ended.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class KernelNurseryCommand(JupyterApp):
    """What every subcommand shares: the backend, configuration, one-line errors."""

    backend = Enum(
        ["asyncio", "trio"],
        default_value="asyncio",
        config=True,
        help="The async backend to run on: asyncio (default) or trio (needs trio installed).",
    )
    aliases = {**base_aliases, "backend": "KernelNurseryCommand.backend"}
    flags = dict(base_flags)
    classes = [KernelManager, KernelProvisionerFactory, KernelSpecManager, LocalProvisioner]

    def fail(self, message: str) -> NoReturn:
        """One line on stderr, no traceback, and a non-zero exit."""
        print(f"kernel-nursery: {message}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR)

    def run(self, fn: Callable[[], Awaitable[int]]) -> NoReturn:
        """Run *fn* on the chosen backend; errors a user can fix become one line."""
        try:
            status = anyio.run(fn, backend=self.backend)
        except ModuleNotFoundError as exc:
            if exc.name == "trio" and self.backend == "trio":
                self.fail("--backend trio needs trio: pip install 'kernel-nursery[trio]'")
            self.fail(str(exc))
        except KernelNurseryError as exc:
            self.fail(str(exc))
        except KeyboardInterrupt:  # Ctrl-C before (or after) the kernel's scope
            status = 128 + signal.SIGINT
        raise SystemExit(status)

    def kernel_manager(self, kernel_name: str) -> KernelManager:
        return KernelManager(kernel_name=kernel_name, parent=self)


class SpecsApp(KernelNurseryCommand):
    """kernel-nursery specs: the installed kernel specs."""

    name = "kernel-nursery-specs"
    description = "List the installed kernel specs and whether their provisioner is available."
    json_output = Bool(False, config=True, help="Print JSON, for scripts.")
    flags = {
        **KernelNurseryCommand.flags,
        "json": ({"SpecsApp": {"json_output": True}}, "Print JSON."),
    }

    def start(self) -> None:
        ksm = KernelSpecManager(parent=self)
        factory = KernelProvisionerFactory.instance(parent=self)
        registered = factory.get_provisioner_entries()
        rows: dict[str, dict[str, Any]] = {}
        for name, resource_dir in sorted(ksm.find_kernel_specs().items()):
            try:
                spec = ksm.get_kernel_spec(name, require_provisioner=False)
            except KernelSpecError as exc:
                print(f"kernel-nursery: skipping {name}: {exc}", file=sys.stderr)
                continue
            stanza = spec.kernel_provisioner
            provisioner = stanza["provisioner_name"] if stanza else factory.default_provisioner_name
            rows[name] = {
                "display_name": spec.display_name,
                "language": spec.language,
                "provisioner": provisioner,
                "available": provisioner in registered,
                "resource_dir": resource_dir,
                "spec": spec.to_dict(),
            }
        if self.json_output:
            print(json.dumps({"kernelspecs": rows}, indent=2))
            return
        _table(
            ["NAME", "DISPLAY NAME", "LANGUAGE", "PROVISIONER", "AVAILABLE", "PATH"],
            [
                [
                    n,
                    r["display_name"],
                    r["language"],
                    r["provisioner"],
                    "yes" if r["available"] else "no",
                    r["resource_dir"],
                ]
                for n, r in rows.items()
            ],
        )


class ProvisionersApp(KernelNurseryCommand):
    """kernel-nursery provisioners: the registered provisioners."""

    name = "kernel-nursery-provisioners"
    description = "List the provisioners registered in the kernel_nursery.provisioners group."

    def start(self) -> None:
        factory = KernelProvisionerFactory.instance(parent=self)
        default = factory.default_provisioner_name
        _table(
            ["NAME", "OBJECT", "DEFAULT"],
            [
                [name, value, "*" if name == default else ""]
                for name, value in factory.get_provisioner_entries().items()
            ],
        )


class StartApp(KernelNurseryCommand):
    """kernel-nursery start [KERNEL]: run a kernel until Ctrl-C, like ``jupyter kernel``."""

    name = "kernel-nursery-start"
    description = (
        "Start a kernel and keep it running until Ctrl-C, SIGTERM or SIGHUP (then exit 128 + "
        "the signal's number), restarting it if it dies. Prints its connection file, for "
        "`jupyter console --existing FILE`."
    )

    def start(self) -> None:
        kernel_name = self.extra_args[0] if self.extra_args else "python3"
        if len(self.extra_args) > 1:
            self.fail("start takes at most one kernel name")
        self.run(lambda: self._serve(kernel_name))

    async def _serve(self, kernel_name: str) -> int:
        status = 0
        async with cancel_on_signals(*STOP_SIGNALS) as caught:
            async with self.kernel_manager(kernel_name) as km, km.events() as events:
                try:
                    async with _Spinner(f"Starting kernel {kernel_name}"):
                        await km.start_kernel()
                    assert km.provisioner is not None
                    connection_file = getattr(km.provisioner, "connection_file", "")
                    print(f"Kernel {km.kernel_id} ({kernel_name}) started.", file=sys.stderr)
                    print(connection_file, flush=True)
                    print(
                        f"Connect with: jupyter console --existing {connection_file}",
                        file=sys.stderr,
                    )
                    async for event in events:
                        if event.kind in ("restarting", "restarted", "dead"):
                            detail = (
                                ""
                                if event.exit_status is None
                                else f" (exit status {event.exit_status})"
                            )
                            print(f"Kernel {event.kind}{detail}", file=sys.stderr, flush=True)
                        if event.kind == "dead":
                            status = 1
                            break
                finally:
                    _announce_stop(caught)
        return caught.exit_status or status


class RunApp(KernelNurseryCommand):
    """kernel-nursery run [KERNEL] CODE | -f FILE: run code in a fresh kernel."""

    name = "kernel-nursery-run"
    description = (
        "Start a kernel, run CODE (or the file given with -f) in it, stream its output, and "
        "shut it down. Exits 1 when the code raised, 128 + the signal's number when stopped by "
        "Ctrl-C, SIGTERM or SIGHUP."
    )
    file = Unicode("", config=True, help="Run the code in this file.")
    aliases = {**KernelNurseryCommand.aliases, "f": "RunApp.file", "file": "RunApp.file"}

    def start(self) -> None:
        args = list(self.extra_args)
        if self.file:
            if len(args) > 1:
                self.fail("with -f FILE, give at most a kernel name")
            try:
                code = Path(self.file).read_text(encoding="utf-8")
            except OSError as exc:
                self.fail(f"cannot read {self.file}: {exc.strerror or exc}")
            kernel_name = args[0] if args else "python3"
        elif len(args) == 1:
            kernel_name, code = "python3", args[0]
        elif len(args) == 2:
            kernel_name, code = args
        else:
            self.fail("usage: kernel-nursery run [KERNEL] CODE   or   run [KERNEL] -f FILE")
        self.run(lambda: self._run(kernel_name, code))

    async def _run(self, kernel_name: str, code: str) -> int:
        status = 0
        async with cancel_on_signals(*STOP_SIGNALS) as caught:
            async with self.kernel_manager(kernel_name) as km:
                try:
                    async with _Spinner(f"Starting kernel {kernel_name}"):
                        await km.start_kernel()
                    async with km.client() as kc:
                        result = await kc.execute(code, output_hook=_print_output)
                    status = EXIT_CODE_RAISED if result.status == "error" else 0
                finally:
                    _announce_stop(caught)
                await km.shutdown_kernel()
        return caught.exit_status or status


def _announce_stop(caught: SignalCancel) -> None:
    """Say why the kernel is going away, while it does (the block is being cancelled)."""
    if caught.signum is not None:
        print(
            f"Received {caught.signum.name}; shutting the kernel down.", file=sys.stderr, flush=True
        )


def _print_output(msg: Message) -> None:
    """Print an output message as it arrives: streams to their stream, results as text."""
    content = msg.content
    if msg.msg_type == "stream":
        stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
        _write(stream, str(content.get("text", "")))
    elif msg.msg_type in ("execute_result", "display_data"):
        text = content.get("data", {}).get("text/plain")
        if text is not None:
            _write(sys.stdout, f"{text}\n")
    elif msg.msg_type == "error":
        traceback = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        _write(sys.stderr, "\n".join(str(line) for line in traceback) + "\n")


def _write(stream: TextIO, text: str) -> None:
    if not stream.isatty():
        text = _ANSI.sub("", text)  # colours are for terminals
    stream.write(text)
    stream.flush()


class _Spinner:
    """A progress line on a terminal's stderr while something runs; nothing when piped."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, message: str) -> None:
        self.message = message
        self._tg: Any = None

    async def __aenter__(self) -> None:
        if not sys.stderr.isatty():
            return
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._spin)

    async def _spin(self) -> None:
        for i in range(sys.maxsize):
            sys.stderr.write(f"\r{self.FRAMES[i % len(self.FRAMES)]} {self.message}…")
            sys.stderr.flush()
            await anyio.sleep(0.1)  # an animation's frame rate, not a poll

    async def __aexit__(self, *exc: object) -> None:
        if self._tg is None:
            return
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        sys.stderr.write("\r\x1b[2K")
        sys.stderr.flush()


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class KernelNurseryApp(KernelNurseryCommand):
    """kernel-nursery: launch and supervise Jupyter kernels."""

    name = "kernel-nursery"
    description = "Launch and supervise Jupyter kernels (trio or asyncio)."
    subcommands = {
        "specs": (SpecsApp, SpecsApp.description),
        "provisioners": (ProvisionersApp, ProvisionersApp.description),
        "start": (StartApp, StartApp.description),
        "run": (RunApp, RunApp.description),
    }

    def start(self) -> None:
        if self.subapp is not None:
            self.subapp.start()
            return
        self.print_subcommands()
        raise SystemExit(EXIT_ERROR)


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    KernelNurseryApp.launch_instance(argv=argv)
