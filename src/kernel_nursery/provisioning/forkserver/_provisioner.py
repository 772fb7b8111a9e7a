"""``ForkServerProvisioner``: local Python kernels forked from a warm template process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Any, Protocol

import anyio
import anyio.to_thread
from traitlets import Bool, Float, List, Unicode

from .._process import ProcessHandle
from ..local import LocalProvisioner
from . import _template
from ._errors import ForkServerError
from ._template import Template, TemplateError, TemplateKey

__all__ = ["ForkServerProvisioner"]

#: Interpreter options that take a value in the next argument.
_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "--check-hash-based-pycs"})


class _Options(Protocol):
    """What the local provisioner's launch options hold (the process's, checked)."""

    env: Mapping[str, str] | None
    cwd: str | bytes | os.PathLike[Any] | None
    stdin: Any
    stdout: Any
    stderr: Any


class ForkServerProvisioner(LocalProvisioner):
    """Runs a Python kernel (``python -m ipykernel_launcher -f {connection_file}`` or the like)
    as a process forked from a warm template: a process of the spec's own interpreter that
    has already imported ipykernel, IPython and the modules in :attr:`preload`. A kernel is
    ready in tens of milliseconds instead of hundreds, and shares the template's memory pages
    until it writes them.

    Each kernel, before anything of it runs, starts its own session and process group,
    restores default signal handling, closes every descriptor of the template, takes the
    environment, working directory and ``sys.argv`` a spawned kernel would have, and reseeds
    ``random`` (and numpy's global generator when numpy is loaded). It is then supervised as
    a :class:`~kernel_nursery.provisioning.LocalProvisioner` kernel: its exit awaited through
    a pidfd and the template's report (the template is its parent, reaps it and says how it
    ended), its process group interrupted, terminated or killed, restarted, taken over by
    another process, and stopped by the guardian if this process dies.

    One template serves every kernel of an interpreter and preload set in this process. It
    starts with the first launch that needs it and ends when the last kernel forked from it
    is cleaned up, or when a :func:`hold_fork_templates` scope that saw it start ends; it also ends
    with this process, however that ends. A template found dead is replaced, with a warning.

    A kernel that cannot be forked safely is spawned as :class:`LocalProvisioner` would, with a
    warning in the log, unless :attr:`fallback` is off (then :class:`ForkServerError`): a spec
    that is not ``python [options] -m module ...``, a preload that failed, a template with more
    than one thread (a preload started one), pipes asked for as standard streams, or no pidfds
    (Linux 5.3+). :attr:`forked` says which way the kernel started.

    .. versionadded:: 0.1
    """

    preload = List(
        Unicode(),
        config=True,
        help="Modules the template imports besides ipykernel's (numpy, pandas...): each kernel "
        "finds them imported. They import with the template's environment (that of the first "
        "kernel that needed it), and must start no thread.",
    )
    fallback = Bool(
        True,
        config=True,
        help="When a kernel cannot be forked safely (see the class), spawn it instead with a "
        "warning; when False, fail the launch with ForkServerError.",
    )
    template_timeout = Float(
        120.0,
        config=True,
        help="Seconds a template has to start (import ipykernel and the preloads) before the "
        "launch falls back to spawning (or fails, without fallback).",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._template: Template | None = None  # held from a fork until cleanup
        self._forked = False

    @property
    def forked(self) -> bool:
        """Whether the kernel running (or last launched) was forked, not spawned."""
        return self._forked

    @property
    def template_pid(self) -> int | None:
        """The pid of the template the kernel was forked from, or ``None``."""
        return self._template.pid if self._template is not None and self._forked else None

    async def _start_process(self, argv: list[str], options: Any) -> ProcessHandle:
        """Fork the kernel from its template; spawn it if that is unsafe (see the class).

        Cancelled, it lets a template's start (bounded by :attr:`template_timeout`) or a fork
        (a few milliseconds) finish, then releases the connection file, the ports and the
        template: no kernel is left.

        Raises:
            ForkServerError: the kernel cannot be forked and :attr:`fallback` is off (the file
                and ports are released).
            LaunchError: spawning it failed (fallback).
        """
        try:
            handle = await self._fork(argv, options)
        except TemplateError as exc:
            if not self.fallback:
                self._release(remove_file=True)
                await self._let_go_of_template()
                raise ForkServerError(f"cannot fork kernel: {exc}", argv=argv) from None
            self.log.warning(
                "Kernel %s is spawned, not forked: %s (ForkServerProvisioner.fallback)",
                self.kernel_id,
                exc,
            )
            self._forked = False
            return await super()._start_process(argv, options)
        except BaseException:
            # Cancelled (a template's start, or a fork, is awaited to its end first, so no
            # kernel can be left): nothing of the launch remains, as when a spawn fails.
            self._release(remove_file=True)
            await self._let_go_of_template()
            raise
        self._forked = True
        return handle

    async def _fork(self, argv: list[str], options: _Options) -> ProcessHandle:
        """Fork the kernel, starting or replacing its template if needed.

        Raises:
            TemplateError: it cannot be forked (the reason says why).
        """
        if not hasattr(os, "pidfd_open") or not sys.platform.startswith("linux"):
            raise TemplateError("forking kernels needs Linux pidfds (Linux 5.3+)")
        interpreter, module, args = _python_command(argv)
        env = dict(options.env if options.env is not None else os.environ)
        key = TemplateKey.of(interpreter, self.preload, env)
        await self._hold_template(key, env)
        template = self._template
        assert template is not None
        if template.refusal is not None:
            raise TemplateError(template.refusal)
        record = {
            "module": module,
            "args": args,
            "argv": argv,
            "env": env,
            "cwd": os.fsdecode(options.cwd) if options.cwd is not None else os.getcwd(),
            "ignored": _ignored_signals(),
            "independent": bool(self.independent),
        }
        streams = _standard_streams(options, template.devnull)
        process = await _template.fork(template, record, streams)
        self.log.debug("Forked kernel %s from template %s", self.kernel_id, template.pid)
        return process

    async def _hold_template(self, key: TemplateKey, env: dict[str, str]) -> None:
        """Hold the template for *key* (kept across restarts; a dead or different one is let
        go first). Its start runs in a worker thread, not abandoned on cancellation: the
        template it returns is recorded there, and let go by :meth:`cleanup`.

        Raises:
            TemplateError: no template could be started.
        """
        held = self._template
        if held is not None and held.key == key and held.alive:
            return
        if held is not None:
            await self._let_go_of_template()

        def hold() -> None:
            self._template = _template.acquire(
                key, env, timeout=self.template_timeout, log=self.log
            )

        await anyio.to_thread.run_sync(hold)

    async def _let_go_of_template(self) -> None:
        template, self._template = self._template, None
        if template is not None:
            # Closing the last hold reaps the template: bounded by CLOSE_WAIT, then SIGKILL.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: _template.release(template, log=self.log))

    async def cleanup(self, restart: bool = False) -> None:
        """As :meth:`LocalProvisioner.cleanup`; unless *restart*, also lets go of the template
        (the last kernel's cleanup ends it, unless a :func:`hold_fork_templates` scope holds it)."""
        await super().cleanup(restart)
        if not restart:
            await self._let_go_of_template()

    async def get_provisioner_info(self) -> dict[str, Any]:
        """As :meth:`LocalProvisioner.get_provisioner_info`, plus ``forked`` and
        ``template_pid`` (for the record: a process taking the kernel over adopts it by pidfd
        whatever its parent)."""
        info = await super().get_provisioner_info()
        info.update({"forked": self._forked, "template_pid": self.template_pid})
        return info


def _python_command(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """Split ``python [options] -m module args...`` into the interpreter with its options,
    the module and its arguments.

    Raises:
        TemplateError: *argv* is not that shape (a script, ``-c``, standard input...).
    """
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" and i + 1 < len(argv):
            return argv[:i], argv[i + 1], argv[i + 2 :]
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
        elif arg.startswith("-") and not arg.startswith(("-c", "-m", "--")) and arg != "-":
            i += 1  # flags such as -I, -E, -Xdev
        else:
            break  # a script, -c, standard input, an option we do not know
    raise TemplateError(f"the kernel's command is not 'python [options] -m module': {argv}")


def _standard_streams(options: _Options, devnull: int) -> list[int]:
    """The kernel's standard input, output and error as descriptors to send (*devnull* is
    the template's /dev/null, for ``DEVNULL`` and for a stream this process has closed):
    what spawning would give it.

    Raises:
        TemplateError: a pipe is asked for (the template cannot make one for this process).
    """
    streams = []
    for number, wanted in enumerate((options.stdin, options.stdout, options.stderr)):
        if wanted == subprocess.DEVNULL:
            streams.append(devnull)
        elif wanted is None:
            streams.append(number if _is_open(number) else devnull)
        elif isinstance(wanted, int) and wanted >= 0:
            streams.append(wanted)
        elif hasattr(wanted, "fileno"):
            streams.append(int(wanted.fileno()))
        else:
            raise TemplateError(
                f"standard stream {number} is {wanted!r}: only spawning makes pipes"
            )
    return streams


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _ignored_signals() -> list[int]:
    """Signals this process ignores: a spawned kernel inherits them ignored through exec."""
    ignored = []
    for signum in signal.valid_signals():
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                ignored.append(int(signum))
        except (OSError, ValueError):
            continue
    return ignored
