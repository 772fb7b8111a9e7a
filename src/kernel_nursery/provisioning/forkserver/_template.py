"""Templates: warm interpreters that fork kernels, one per (interpreter, preloads), per process.

A template runs ``_scripts/forkserver_template.py`` in the kernel spec's own interpreter. This
module starts it, hands it fork requests over a private socket pair, and ends it. Templates
belong to no event loop (they are started with :class:`subprocess.Popen`, as the guardian is),
so one template serves every thread, event loop and successive ``anyio.run`` of the process.

Ownership: the registry holds one entry per :class:`TemplateKey`; each entry counts its holders,
the :class:`~kernel_nursery.provisioning.forkserver.ForkServerProvisioner` instances that have
a kernel forked from it, and any open :func:`hold_fork_templates` scope. The last holder to let go
closes it: its control socket is closed, the template reads end of file, and exits (stopping
any kernel still its own). The managing process's death closes that socket too, and the
guardian stops the template (it is registered like a kernel).
"""

from __future__ import annotations

import array
import functools
import json
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ..._errors import ProvisionerError
from .. import _guardian
from .._process import UNKNOWN_EXIT_STATUS, process_start_time

if TYPE_CHECKING:
    from .._guardian import Log

__all__ = [
    "ForkedProcess",
    "Template",
    "TemplateError",
    "TemplateKey",
    "acquire",
    "hold_fork_templates",
    "release",
]

_SCRIPT = Path(__file__).parent.parent / "_scripts" / "forkserver_template.py"
#: What a kernel gets from ipykernel's command before the preloads: what its launch imports.
BASE_PRELOAD = ("ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell")
#: Modules ipykernel imports as each kernel starts (IPython's debugger and shell helpers...),
#: imported by the template where they can be: each kernel finds them imported and shares
#: their pages. Not required: a template that lacks one is no less safe. Not ipykernel's own
#: debugger (debugpy): imported in the template, it leaves its kernels with one descriptor
#: fewer than a spawned kernel has (the parity test finds it), for reasons not yet known.
WARM = (
    "IPython.core.debugger",
    "IPython.core.completerlib",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "tornado.platform.asyncio",
    "tornado.queues",
    "sqlite3",
    "psutil",
    "faulthandler",
    "importlib.readers",
    "importlib.resources.readers",
)
#: Environment variables that decide a Python interpreter's ``sys.path`` and site: templates
#: differ when they differ, since a kernel's path is its template's.
PATH_VARIABLES = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONPLATLIBDIR",
    "PYTHONNOUSERSITE",
)
#: Seconds a template gets to exit once its control socket is closed.
CLOSE_WAIT = 5.0
#: Seconds a fork request's answer (the pid) may take: a fork, not an import.
ANSWER_WAIT = 30.0
_RECORD = 1 << 20


class TemplateError(ProvisionerError):
    """A template cannot fork this kernel (it failed to start, died, or refuses as unsafe)."""


@dataclass(frozen=True)
class TemplateKey:
    """What makes two kernels able to share a template: the interpreter and its flags, the
    modules preloaded, and the environment variables that decide ``sys.path``."""

    interpreter: tuple[str, ...]
    preload: tuple[str, ...]
    path_env: tuple[tuple[str, str | None], ...]

    @classmethod
    def of(
        cls, interpreter: Sequence[str], preload: Sequence[str], env: Mapping[str, str]
    ) -> TemplateKey:
        names = PATH_VARIABLES + (() if os.sep in interpreter[0] else ("PATH",))
        return cls(
            tuple(interpreter),
            tuple(dict.fromkeys([*BASE_PRELOAD, *preload])),
            tuple((name, env.get(name)) for name in names),
        )


class Template:
    """One template process and its control socket (thread-safe: requests are one
    ``sendmsg`` each, under a lock)."""

    def __init__(self, key: TemplateKey, popen: subprocess.Popen[bytes], control: socket.socket):
        self.key = key
        self.popen = popen
        self.control = control
        self.lock = threading.Lock()
        self.holders = 0
        self.refusal: str | None = None  # why it must not fork (failed preload, threads)
        self.guard_token: int | None = None
        self.closed = False
        # /dev/null for kernels' standard streams, opened once, off the event loop.
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return not self.closed and self.popen.poll() is None

    def request(self, record: dict[str, Any], fds: Sequence[int]) -> socket.socket:
        """Send a fork request; the kernel's channel, on which the answer comes.

        Raises:
            TemplateError: the template is gone, or the request cannot be sent.
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            data = json.dumps(record).encode()
            ancillary = [
                (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno(), *fds]))
            ]
            with self.lock:
                if self.closed:
                    raise TemplateError("the template was closed")
                # Never waits (this runs on the event loop's thread): a template that has not
                # read its earlier requests is stuck, and the kernel is spawned instead.
                self.control.sendmsg([data], ancillary, socket.MSG_DONTWAIT)
        except OSError as exc:
            mine.close()
            raise TemplateError(
                f"the template (pid {self.pid}) took no request: {exc.strerror or exc}"
            ) from None
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return mine

    def close(self, log: Log) -> int | None:
        """Close the control socket and reap the template (blocking, bounded by
        :data:`CLOSE_WAIT`, then SIGKILL). Returns its exit status."""
        with self.lock:
            if self.closed:
                return self.popen.poll()
            self.closed = True
            self.control.close()
            os.close(self.devnull)
        try:
            status = self.popen.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            log.warning("Fork-server template (pid %s) did not exit: killing it", self.pid)
            self.popen.kill()
            status = self.popen.wait()
        token, self.guard_token = self.guard_token, None
        if token is not None:
            _guardian.unregister(token, log=log)
        return status


# ---------------------------------------------------------------------- the registry


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starting: dict[TemplateKey, threading.Lock] = {}
        self.templates: dict[TemplateKey, Template] = {}
        self.scopes = 0  # open hold_fork_templates() scopes
        self.held: list[Template] = []  # what those scopes keep


_registry = _Registry()


def acquire(key: TemplateKey, env: Mapping[str, str], *, timeout: float, log: Log) -> Template:
    """The live template for *key*, started (with *env*) if there is none; counted as held
    until :func:`release`. Blocking (a template's start imports ipykernel): run it in a worker
    thread. A template found dead is replaced, with a warning.

    Raises:
        TemplateError: the template could not be started within *timeout* seconds.
    """
    with _registry.lock:
        starting = _registry.starting.setdefault(key, threading.Lock())
    with starting:  # one start per key at a time; others wait for it and share it
        with _registry.lock:
            template = _registry.templates.get(key)
            if template is not None and template.alive:
                template.holders += 1
                return template
            if template is not None:
                del _registry.templates[key]
        if template is not None:
            log.warning(
                "Fork-server template (pid %s) for %s died (exit status %s); starting another",
                template.pid,
                " ".join(key.interpreter),
                template.popen.poll(),
            )
        template = _start(key, env, timeout=timeout, log=log)
        with _registry.lock:
            _registry.templates[key] = template
            template.holders += 1
            if _registry.scopes:
                template.holders += 1
                _registry.held.append(template)
        return template


def release(template: Template, *, log: Log) -> None:
    """Let go of *template*; the last holder closes it (blocking, bounded: a worker thread)."""
    with _registry.lock:
        template.holders -= 1
        if template.holders > 0:
            return
        if _registry.templates.get(template.key) is template:
            del _registry.templates[template.key]
    template.close(log)


@asynccontextmanager
async def hold_fork_templates() -> AsyncIterator[None]:
    """Keep every template started while this scope is open alive until it ends, even when
    no kernel of theirs is left: a program that starts kernels one after another pays a
    template's start once. On exit, those templates are released (closed unless kernels
    still hold them), in a worker thread, shielded: each close is bounded."""
    with _registry.lock:
        _registry.scopes += 1
    try:
        yield
    finally:
        with _registry.lock:
            _registry.scopes -= 1
            held = [] if _registry.scopes else _registry.held
            if not _registry.scopes:
                _registry.held = []
        if held:
            log = _logger()
            with anyio.CancelScope(shield=True):  # each close waits at most CLOSE_WAIT
                for template in held:
                    await anyio.to_thread.run_sync(functools.partial(release, template, log=log))


def _logger() -> Log:
    import logging

    return logging.getLogger("kernel_nursery.provisioning.forkserver")


def live_templates() -> list[int]:
    """Pids of this process's live templates (for tests and the docs' "how to see")."""
    with _registry.lock:
        return [t.pid for t in _registry.templates.values() if t.alive]


# ---------------------------------------------------------------------- starting one


def _start(key: TemplateKey, env: Mapping[str, str], *, timeout: float, log: Log) -> Template:
    """Start a template and wait for its ready record.

    Raises:
        TemplateError: it cannot be run, or exited or did not answer within *timeout*.
    """
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [
        *key.interpreter,
        str(_SCRIPT),
        str(theirs.fileno()),
        json.dumps(key.preload),
        json.dumps(WARM),
    ]
    with tempfile.TemporaryFile() as errors:
        try:
            popen = subprocess.Popen(
                argv,
                pass_fds=[theirs.fileno()],
                env=dict(env),
                cwd="/",  # holds no directory busy
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # the terminal's Ctrl-C is for the manager
            )
        except OSError as exc:
            mine.close()
            raise TemplateError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        template = Template(key, popen, mine)
        try:
            ready = _await_ready(template, timeout)
        except BaseException:
            template.close(log)
            errors.seek(0)
            detail = errors.read()[-2000:].decode(errors="replace").strip()
            if detail:
                log.warning("Fork-server template's error output: %s", detail)
            raise
    _check_ready(template, ready, log)
    template.guard_token = _guardian.register(
        popen.pid,
        pgid=popen.pid,
        start_time=process_start_time(popen.pid),
        connection_file=None,
        log=log,
    )
    log.info("Fork-server template (pid %s) ready: %s", popen.pid, " ".join(key.interpreter))
    return template


def _await_ready(template: Template, timeout: float) -> dict[str, Any]:
    template.control.settimeout(timeout)
    try:
        data = template.control.recv(_RECORD)
    except TimeoutError:
        raise TemplateError(f"the template did not start within {timeout:g} s") from None
    except OSError as exc:
        raise TemplateError(f"the template did not start: {exc.strerror or exc}") from None
    finally:
        template.control.settimeout(ANSWER_WAIT)
    if not data:
        raise TemplateError(f"the template exited at start (status {template.popen.wait()})")
    ready: dict[str, Any] = json.loads(data)
    return ready


def _check_ready(template: Template, ready: dict[str, Any], log: Log) -> None:
    """Record why a template that started must not fork: a failed preload, or threads."""
    failed = ready.get("failed") or []
    if failed:
        template.refusal = "preload failed: " + "; ".join(f"{m} ({e})" for m, e in failed)
    elif int(ready.get("threads", 1)) > 1:
        template.refusal = f"the template has {ready['threads']} threads after its preloads"
    if ready.get("descriptors"):
        log.warning(
            "Fork-server template (pid %s): its preloads left descriptors open (%s); kernels "
            "forked from it close them, so a module that relies on one will fail there",
            template.pid,
            ", ".join(ready["descriptors"][:5]),
        )


# ---------------------------------------------------------------------- a forked kernel


class ForkedProcess:
    """A kernel forked by a template: watched through a pidfd the template sent, its exit
    status reported by the template (its parent), which keeps it unreaped (so its pid and
    process group cannot be reused) until :meth:`aclose` closes the kernel's channel."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self._pid = pid
        self._pidfd: int | None = pidfd
        self._channel: socket.socket | None = channel
        self._status: int | None = None
        self._orphan = False  # the template died: the status is lost
        self._wait_lock = anyio.Lock()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        if self._status is None:
            self._read(block=False)
        if self._status is None and self._orphan and _readable(self._pidfd):
            self._status = UNKNOWN_EXIT_STATUS
        return self._status

    @property
    def group_is_ours(self) -> bool:
        # While its template holds it unreaped, the kernel's number names its group; an
        # orphan is reaped by whoever adopted it, at once.
        return self._channel is not None and (not self._orphan or self.returncode is None)

    async def wait(self) -> int:
        async with self._wait_lock:  # trio allows one waiter per descriptor
            while self._status is None and not self._orphan and self._channel is not None:
                await anyio.wait_readable(self._channel)
                self._read(block=False)
            if self._status is None and self._pidfd is not None:
                await anyio.wait_readable(self._pidfd)  # the template died: the pidfd tells
                self._status = UNKNOWN_EXIT_STATUS
        return UNKNOWN_EXIT_STATUS if self._status is None else self._status

    def _read(self, *, block: bool) -> None:
        if self._channel is None or self._orphan:
            return
        try:
            data = self._channel.recv(_RECORD, 0 if block else socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._orphan = True
            return
        record = json.loads(data)
        if "status" in record:
            self._status = int(record["status"])

    def send_signal(self, signum: int) -> None:
        if self._pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            pass

    async def aclose(self) -> None:
        """Close the channel (the template reaps the kernel) and the pidfd."""
        channel, self._channel = self._channel, None
        if channel is not None:
            anyio.notify_closing(channel)
            channel.close()
        pidfd, self._pidfd = self._pidfd, None
        if pidfd is not None:
            anyio.notify_closing(pidfd)
            os.close(pidfd)


def _readable(fd: int | None) -> bool:
    if fd is None:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


async def fork(template: Template, record: dict[str, Any], fds: Sequence[int]) -> ForkedProcess:
    """Ask *template* to fork a kernel; its handle once the template answers.

    The answer is awaited shielded (a fork, bounded by :data:`ANSWER_WAIT`): a kernel forked
    by the time a cancellation arrives is handed back, for the caller to stop.

    Raises:
        TemplateError: the template refused (the reason), died, or did not answer in time.
    """
    # One sendmsg to a socket the template reads at once: no need for a thread (and none
    # whose result a cancellation could drop).
    channel = template.request(record, fds)
    try:
        with anyio.CancelScope(shield=True), anyio.move_on_after(ANSWER_WAIT):
            await anyio.wait_readable(channel)
        data, ancillary, _flags, _address = channel.recvmsg(
            _RECORD, socket.CMSG_SPACE(array.array("i").itemsize), socket.MSG_DONTWAIT
        )
    except (BlockingIOError, InterruptedError):
        channel.close()
        raise TemplateError(
            f"the template (pid {template.pid}) did not answer within {ANSWER_WAIT:g} s"
        ) from None
    except BaseException:
        channel.close()
        raise
    pidfds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            pidfds.frombytes(payload[: len(payload) - len(payload) % pidfds.itemsize])
    answer = json.loads(data) if data else {"error": "the template died"}
    if "pid" not in answer or not pidfds:
        channel.close()
        for fd in pidfds:
            os.close(fd)
        raise TemplateError(str(answer.get("error", "the template answered nonsense")))
    return ForkedProcess(int(answer["pid"]), pidfds[0], channel)


# ---------------------------------------------------------------------- process events


def _after_fork_in_child() -> None:
    """A forked child must not hold its parent's control sockets (the templates would not see
    the parent's death); it starts templates of its own."""
    global _registry
    for template in _registry.templates.values():
        try:
            template.control.close()
        except OSError:
            pass
    _registry = _Registry()


def _at_exit() -> None:
    """Close every template at interpreter exit (each exits at its control socket's end)."""
    with _registry.lock:
        templates = list(_registry.templates.values())
        _registry.templates.clear()
    for template in templates:
        template.close(_logger())


if hasattr(os, "register_at_fork"):
    import atexit

    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_at_exit)
