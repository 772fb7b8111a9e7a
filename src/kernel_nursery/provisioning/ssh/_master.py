"""Shared SSH connections: one OpenSSH control master per destination, for the kernels of this
process that run there at the same time.

Authenticating a new SSH connection takes a few round trips and some cryptography (half a
second on loopback); a session multiplexed over an existing connection takes one round trip.
So when a second kernel on a destination starts while the first runs, a *master* (``ssh -M``,
with a control socket in a private temporary directory) is started beside its own direct
connection, without waiting for it; kernels started while the master lives and is ready run
their sessions through it. A lone kernel never pays for a master it would not use.

The master's owner is the set of kernels using it: each launch takes a reference, each reap
gives it back, and the last one closes it (its standard input closes, its remote ``cat`` ends,
the master exits; SIGKILL after a bound). It is registered with the guardian, so it does not
outlive this process either. It belongs to no event loop (a :class:`subprocess.Popen`), as the
guardian does, since kernels of several loops may share it; what blocks (its spawn, its
directory's creation and removal) runs in worker threads.

Forwards requested through a master belong to the master, not to the session that asked, so
the provisioner cancels its forwards (``ssh -O cancel``) when its session ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .. import _guardian
from .._base import KILL_WAIT_TIME
from .._process import process_start_time

if TYPE_CHECKING:
    import logging
    from typing import TypeAlias

    Log: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["Master", "acquire", "release"]

#: What the master runs remotely: says it is up, then holds the session until its standard
#: input closes.
MASTER_COMMAND = "echo kernel-nursery-ready; exec cat >/dev/null"
#: The longest path a Unix socket can be bound to (``sun_path`` less its final NUL: 107 bytes on
#: Linux, 103 on BSDs and macOS); ssh binds ``<ControlPath>.<16 random characters>`` first.
_MAX_SOCKET_PATH = 107 if os.uname().sysname == "Linux" else 103


#: How a master's directory is named: the guardian removes no other (as its script's
#: ``DIRECTORY_PREFIX``; that script imports nothing of the package).
_DIRECTORY_PREFIX = "kn-ssh-"


def control_directory() -> Path:
    """A new private directory (mode 0700) for a master's control socket: in the temporary
    directory, or in ``/tmp`` when the temporary directory's path is too long for the socket's
    (ssh would refuse it, and no master would ever start)."""
    directory = Path(tempfile.mkdtemp(prefix=_DIRECTORY_PREFIX))
    if len(os.fsencode(directory / "control")) + 17 > _MAX_SOCKET_PATH:
        directory.rmdir()
        # mkdtemp: a new directory of a random name, private to this user, as above.
        directory = Path(tempfile.mkdtemp(prefix=_DIRECTORY_PREFIX, dir="/tmp"))
    return directory


class Master:
    """The kernels of this process on one destination, and their control master once there
    are two of them."""

    def __init__(self, key: tuple[str, ...]):
        self.key = key
        self.users = 0
        self.directory: Path | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._output = b""
        self.guard_token: int | None = None

    @property
    def control_path(self) -> str:
        assert self.directory is not None
        return str(self.directory / "control")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        """Whether sessions can go through the master now: it said so and still runs. Never
        waits (one non-blocking read, the first times)."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return False
        if not self._ready and popen.stdout is not None:
            try:
                self._output += os.read(popen.stdout.fileno(), 4096)
            except (BlockingIOError, OSError):
                pass
            self._ready = b"kernel-nursery-ready\n" in self._output
        return self._ready

    def _spawn(self, master_argv: Callable[[str], list[str]], log: Log) -> None:
        directory = control_directory()
        try:
            popen = subprocess.Popen(
                master_argv(str(directory / "control")),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            log.warning("Cannot start an ssh control master: %s", exc)
            return
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)
        self.directory, self.popen, self._ready, self._output = directory, popen, False, b""
        if _guardian.SUPPORTED:
            self.guard_token = _guardian.register(
                popen.pid,
                pgid=popen.pid,
                start_time=process_start_time(popen.pid),
                connection_file=None,
                directory=str(directory),  # its control socket's, left by a SIGKILLed ssh
                log=log,
            )


_lock = threading.Lock()
_masters: dict[tuple[str, ...], Master] = {}


async def acquire(
    key: tuple[str, ...], master_argv: Callable[[str], list[str]], log: Log
) -> Master:
    """A reference to the kernels of destination *key*. From the second user on, a master is
    started if none runs (``master_argv(control_path)`` is its command); a dead one is not
    replaced while users hold it (it is closed with the last). The spawn is not awaited.

    In a worker thread (it may make a directory and spawn ssh), which a cancellation does not
    abandon: an abandoned one would leave a reference, and maybe a master, nobody releases.
    The reference is returned even then; the cancellation is delivered at the caller's next
    checkpoint, and the caller releases the reference it got.
    """
    return await anyio.to_thread.run_sync(_acquire, key, master_argv, log)


def _acquire(key: tuple[str, ...], master_argv: Callable[[str], list[str]], log: Log) -> Master:
    with _lock:
        master = _masters.get(key)
        if master is None or (master.popen is not None and not master.alive()):
            master = _masters[key] = Master(key)  # (a dead one goes with its last user)
        master.users += 1
        if master.users >= 2 and master.popen is None:
            master._spawn(master_argv, log)
        return master


def _drop(master: Master) -> bool:
    """Take one user off *master*; whether that was the last (it is forgotten then)."""
    with _lock:
        master.users -= 1
        if master.users > 0:
            return False
        if _masters.get(master.key) is master:
            del _masters[master.key]
        return True


async def release(master: Master, log: Log) -> None:
    """Give a reference back; the last one closes the master, if one was started (bounded:
    SIGKILL after :data:`KILL_WAIT_TIME`). The caller shields it.

    The count is taken down in a worker thread: the lock may be held meanwhile by one that
    spawns a master (:func:`acquire`), which the event loop must not wait for.
    """
    if not await anyio.to_thread.run_sync(_drop, master):
        return
    popen = master.popen
    if popen is None:
        return
    if popen.stdin is not None:
        try:
            popen.stdin.close()  # the remote cat ends, the session ends, the master exits
        except OSError:
            pass
    try:
        await anyio.to_thread.run_sync(popen.wait, KILL_WAIT_TIME)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(popen.pid, signal.SIGKILL)
        except OSError:
            popen.kill()
        try:
            await anyio.to_thread.run_sync(popen.wait, KILL_WAIT_TIME)
        except subprocess.TimeoutExpired:
            log.error("The ssh control master (pid %s) did not exit", popen.pid)
    if popen.stdout is not None:
        popen.stdout.close()
    token, master.guard_token = master.guard_token, None
    if token is not None:
        _guardian.unregister(token, log=log)
    if master.directory is not None:
        await anyio.to_thread.run_sync(shutil.rmtree, master.directory, True)
