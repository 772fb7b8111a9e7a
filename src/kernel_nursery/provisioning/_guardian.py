"""The guardian: one watchdog process per managing process, which stops that process's kernels
when it dies without cleaning up (SIGKILL, the OOM killer, ``os._exit``...).

A kernel normally ends with its manager: :class:`LocalProvisioner` stops it and removes its
connection file. A managing process killed outright does none of that, and its kernels would
live on with their keys on disk. So, at the first launch of a kernel that is not
``independent``, this module starts a small process, the guardian, that reads a pipe whose
write end only the managing process holds. The managing process writes one line per kernel it
launches or adopts and one per kernel it reaps. When the managing process ends, however it
ends, the operating system closes the write end; the guardian reads end of file and, for each
kernel still registered, sends SIGTERM to its process group, waits up to
:data:`GRACE_PERIOD` for it to exit, sends SIGKILL to the group and removes its connection
file (see ``_scripts/guardian.py``, which it runs). A container (:func:`register_container`)
is removed with its engine's ``rm -f``, which stops it too.

The guardian belongs to no event loop (it is started with :class:`subprocess.Popen`, not
``anyio.open_process``, whose asyncio transports kill their process when closed with their loop),
so one guardian serves every kernel, thread and event loop of the process, including successive
``anyio.run`` calls. It runs in a session of its own (Ctrl-C in the terminal reaches the manager,
never the guardian, which must outlive it to do its job). Writing to it never awaits: a line is
a single small write to a pipe it reads at once. Starting it is a spawn, which async code does
in a worker thread (:func:`register_off_loop`).

A forked child (``os.fork``) closes its copy of the write end, so that the parent's death is
still seen, and starts a guardian of its own if it launches kernels.

Linux only (it identifies kernels through pidfds); elsewhere nothing is started and only kernels
that honour ``JPY_PARENT_PID`` exit with their manager.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from .._platform import LINUX

if TYPE_CHECKING:
    from typing import TypeAlias

    Log: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = [
    "GRACE_PERIOD",
    "SUPPORTED",
    "guardian_pid",
    "register",
    "register_container",
    "register_off_loop",
    "unregister",
]

#: Seconds the guardian gives a kernel between SIGTERM and SIGKILL once the managing process
#: has died: enough for a kernel to flush and exit, short enough not to keep it around.
GRACE_PERIOD = 2.0
#: Whether this platform has what the guardian needs (Linux pidfds).
SUPPORTED = LINUX
#: At interpreter exit, how long to wait for an idle guardian to exit, so that it is reaped.
_EXIT_WAIT = 1.0

_SCRIPT = Path(__file__).with_name("_scripts") / "guardian.py"


class _State:
    """The guardian of this process, and the kernels registered with it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # launches may come from several threads and loops
        self.popen: subprocess.Popen[bytes] | None = None
        self.fd: int | None = None  # the write end of the guardian's stdin
        self.registered: dict[int, bytes] = {}  # token -> its register line, for a new guardian
        self.tokens = itertools.count(1)
        self.disabled = False  # the interpreter is exiting: no new guardian
        self.warned = False


_state = _State()
# Guardians of a parent process, as seen by a forked child: kept referenced so that their
# Popen objects are never finalized (which would warn that they are "still running").
_inherited: list[subprocess.Popen[bytes]] = []


def register(
    pid: int,
    *,
    pgid: int | None,
    start_time: int | None,
    connection_file: str | None,
    directory: str | None = None,
    cgroups: Sequence[str] = (),
    tree: str | None = None,
    log: Log,
) -> int | None:
    """Have the guardian stop kernel *pid* (its group *pgid*) and remove *connection_file* and
    the private temporary *directory* (mode 0700: with the sockets it holds, if nothing else is
    there, as an ssh master's control socket directory) if this process dies before
    :func:`unregister`. *start_time* (``/proc`` field 22) tells the kernel from a later process
    with its pid.

    For a sandboxed kernel, also its *cgroups* (directories named ``kn-sandbox-*`` under
    ``/sys/fs/cgroup``: every process still in them is killed, then they are removed) and its
    folder *tree* (named ``kn-sandbox-*``, mode 0700, owned by this user: removed with all it
    holds). The guardian checks those names itself and leaves anything else alone.

    Synchronous and quick: starts the guardian the first time (one spawn, not awaited), then
    writes one line. Never raises for the guardian's sake: if it cannot be started, a warning
    is logged once and ``None`` returned.

    Returns:
        A token for :func:`unregister`, or ``None`` when the kernel is not guarded.
    """

    def line(token: int) -> bytes:
        # The time tells the guardian since when the kernel may have exited (a clock shared by
        # every process): see "RECENT" in the guardian's script.
        fields: list[object] = [pid, pgid, start_time, connection_file, time.monotonic()]
        fields.append(directory)
        if cgroups or tree:
            fields += [list(cgroups), tree]
        return _line("register", token, *fields)

    return _register(line, log)


async def register_off_loop(guard: Callable[[], object]) -> None:
    """Run *guard*, a function that calls :func:`register` and records its token, without
    blocking the event loop: at once when the guardian runs (a write to a pipe, cheaper than a
    hand-off to a thread), else in a worker thread, since it starts the guardian (a spawn).

    Cancellation: the thread is not abandoned (an abandoned one would register a kernel nobody
    unregisters, and could start a guardian nobody knows of); the call returns once *guard*
    has, and the cancellation is delivered at the caller's next checkpoint, after *guard* has
    recorded the token for the caller's cleanup to unregister.
    """
    if _spawn_needed():
        await anyio.to_thread.run_sync(guard)
    else:
        guard()


def _spawn_needed() -> bool:
    """Whether a registration now may start a guardian: none runs, or it has exited (it is
    reaped here; the registration then starts a new one), or another thread holds the lock,
    perhaps starting one (waiting for it here would block the event loop as long)."""
    state = _state
    if not state.lock.acquire(blocking=False):
        return True
    try:
        if not SUPPORTED or state.disabled:
            return False
        return state.fd is None or state.popen is None or state.popen.poll() is not None
    finally:
        state.lock.release()


def unregister(token: int, *, log: Log) -> None:
    """Tell the guardian that the kernel of *token* was stopped and reaped by this process."""
    state = _state
    with state.lock:
        if state.registered.pop(token, None) is None or state.disabled or state.fd is None:
            return  # (with no guardian running, a new one is handed only the others)
        _send(state, _line("unregister", token), log)


def register_container(
    command: list[str],
    *,
    env: dict[str, str],
    cid_file: str,
    directory: str | None = None,
    log: Log,
) -> int | None:
    """Have the guardian remove a container (``COMMAND rm -f ID``, the id read from *cid_file*,
    which the engine's client writes once it has created the container) and the private
    temporary *directory* holding its runtime files, if this process dies before
    :func:`unregister`. *command* is the engine's client and its global options (``["docker",
    "--host", ...]``), *env* what it needs of the environment (``DOCKER_HOST``...): the guardian
    runs it with its own environment updated by *env*.

    Registered before the container is created, so that no moment is left in which it would
    outlive this process unseen. Synchronous and quick, as :func:`register`.

    Returns:
        A token for :func:`unregister`, or ``None`` when the container is not guarded.
    """
    return _register(
        lambda token: _line("container", token, list(command), dict(env), cid_file, directory),
        log,
    )


def guardian_pid() -> int | None:
    """The pid of this process's guardian, if one runs (for tests that count child processes)."""
    state = _state
    with state.lock:
        return state.popen.pid if state.popen is not None and state.fd is not None else None


def _register(line: Callable[[int], bytes], log: Log) -> int | None:
    """Register the line *line* makes for a new token, with the guardian started if needed
    (the lock taken here); the token, or ``None`` when nothing is guarded."""
    if not SUPPORTED:
        return None
    state = _state
    with state.lock:
        if state.disabled:
            return None
        token = next(state.tokens)
        made = line(token)
        state.registered[token] = made
        _send(state, made, log)
        return token


# ---------------------------------------------------------------------- with the lock held


def _line(*fields: object) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _send(state: _State, line: bytes, log: Log) -> None:
    """Write *line* to the guardian, starting it (again) if needed; a new guardian is handed
    every registered kernel, so *line* itself need not be sent to it."""
    if state.fd is not None:
        try:
            _write_all(state.fd, line)
            return
        except OSError as exc:  # BrokenPipeError: the guardian died
            popen = state.popen
            status = popen.poll() if popen is not None else None  # reaps it
            log.warning(
                "The kernel guardian process (pid %s) is gone (%s, exit status %s); starting "
                "a new one for the %d kernel(s) of this process",
                None if popen is None else popen.pid,
                exc.strerror or exc,
                status,
                len(state.registered),
            )
            os.close(state.fd)
            state.fd = None
            state.popen = None
    _spawn(state, log)


def _spawn(state: _State, log: Log) -> None:
    # At most one spawn per registration or unregistration: a guardian that keeps dying costs
    # one process per launch, never a loop. A failure is not final either: the next launch
    # tries again (the kernels registered meanwhile are handed to the guardian that starts).
    if not sys.executable:
        _give_up(state, log, "sys.executable is not set")
        return
    read_end, write_end = os.pipe()  # both close-on-exec: no kernel inherits the write end
    try:
        popen = subprocess.Popen(
            [os.path.abspath(sys.executable), "-I", "-S", str(_SCRIPT), repr(GRACE_PERIOD)],
            stdin=read_end,
            stdout=subprocess.DEVNULL,
            # Not inherited: a guardian outliving its manager must not hold the pipe of
            # whoever reads the manager's stderr (subprocess.run(capture_output=True)).
            stderr=subprocess.DEVNULL,
            cwd="/",  # holds no directory busy
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        os.close(write_end)
        _give_up(state, log, str(exc))
        return
    finally:
        os.close(read_end)
    state.popen, state.fd = popen, write_end
    try:
        _write_all(write_end, b"".join(state.registered.values()))
    except OSError as exc:
        _give_up(state, log, str(exc))
        return
    state.warned = False  # a later failure is worth a warning again


def _give_up(state: _State, log: Log, reason: str) -> None:
    """No guardian for now; the next registration tries again."""
    if state.fd is not None:
        os.close(state.fd)
        state.fd = None
    state.popen = None
    if not state.warned:
        state.warned = True
        log.warning(
            "Cannot run the kernel guardian process (%s): if this process dies without "
            "cleaning up, only its kernels that honour JPY_PARENT_PID will exit",
            reason,
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ---------------------------------------------------------------------- process events


def _after_fork_in_child() -> None:
    """A forked child must not hold the parent's write end (the parent's death would go
    unseen), and starts its own guardian if it launches kernels. The lock may have been held
    by another thread at the fork: the child starts from a fresh state, lock included."""
    global _state
    old = _state
    if old.fd is not None:
        try:
            os.close(old.fd)
        except OSError:
            pass
    if old.popen is not None:
        _inherited.append(old.popen)
    _state = _State()


def _at_exit() -> None:
    """Close the pipe now rather than when the process ends: the guardian stops the kernels
    left registered, and an idle guardian exits at once and is reaped here."""
    state = _state
    with state.lock:
        fd, popen, idle = state.fd, state.popen, not state.registered
        state.fd = None
        state.disabled = True  # a late launch from a daemon thread must not start another
    if fd is not None:
        os.close(fd)
        if popen is not None and idle:
            try:
                popen.wait(_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                pass


if SUPPORTED:
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_at_exit)
