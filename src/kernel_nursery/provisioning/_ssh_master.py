"""Shared SSH connections: one OpenSSH control master per destination, for the kernels of this
process that run there at the same time.

Authenticating a new SSH connection takes a few round trips and some cryptography (half a
second on loopback); a session multiplexed over an existing connection takes one round trip.
So the first kernel on a destination starts a *master* (``ssh -M``, with a control socket in a
private temporary directory) beside its own direct connection, without waiting for it; kernels
started while the master lives and is ready run their sessions through it.

The master's owner is the set of kernels using it: each launch takes a reference, each reap
gives it back, and the last one closes it (its standard input closes, its remote ``cat`` ends,
the master exits; SIGKILL after a bound). It is registered with the guardian, so it does not
outlive this process either. It belongs to no event loop (a :class:`subprocess.Popen`), as the
guardian does, since kernels of several loops may share it.

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

from . import _guardian
from ._base import KILL_WAIT_TIME
from ._process import process_start_time

if TYPE_CHECKING:
    import logging
    from typing import TypeAlias

    Log: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

__all__ = ["Master", "acquire", "release"]

#: What the master runs remotely: says it is up, then holds the session until its standard
#: input closes.
MASTER_COMMAND = "echo kernel-nursery-ready; exec cat >/dev/null"


class Master:
    """One control master: its process, socket and users."""

    def __init__(self, key: tuple[str, ...], directory: Path, popen: subprocess.Popen[bytes]):
        self.key = key
        self.directory = directory
        self.popen = popen
        self.users = 0
        self._ready = False
        self._output = b""
        self.guard_token: int | None = None
        assert popen.stdout is not None
        os.set_blocking(popen.stdout.fileno(), False)

    @property
    def control_path(self) -> str:
        return str(self.directory / "control")

    def ready(self) -> bool:
        """Whether sessions can go through it now: it said so and still runs. Never waits
        (one non-blocking read, the first times)."""
        if self.popen.poll() is not None:
            return False
        if not self._ready and self.popen.stdout is not None:
            try:
                self._output += os.read(self.popen.stdout.fileno(), 4096)
            except (BlockingIOError, OSError):
                pass
            self._ready = b"kernel-nursery-ready\n" in self._output
        return self._ready


_lock = threading.Lock()
_masters: dict[tuple[str, ...], Master] = {}


def acquire(
    key: tuple[str, ...], master_argv: Callable[[str], list[str]], log: Log
) -> Master | None:
    """A reference to the master for *key* (started now if there is none, or if the last one
    died). ``master_argv(control_path)`` is the command that starts one. ``None`` when it
    cannot be started (the kernel then connects directly). Synchronous and quick: a spawn,
    never awaited."""
    with _lock:
        master = _masters.get(key)
        if master is not None and master.popen.poll() is not None:
            del _masters[key]  # died: its users still hold it and reap it
            master = None
        if master is None:
            directory = Path(tempfile.mkdtemp(prefix="kn-ssh-"))  # short: a socket path
            argv = master_argv(str(directory / "control"))
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                shutil.rmtree(directory, ignore_errors=True)
                log.warning("Cannot start an ssh control master: %s", exc)
                return None
            master = Master(key, directory, popen)
            if _guardian.SUPPORTED:
                master.guard_token = _guardian.register(
                    popen.pid,
                    pgid=popen.pid,
                    start_time=process_start_time(popen.pid),
                    connection_file=None,
                    log=log,
                )
            _masters[key] = master
        master.users += 1
        return master


async def release(master: Master, log: Log) -> None:
    """Give a reference back; the last one closes the master (bounded: SIGKILL after
    :data:`KILL_WAIT_TIME`). The caller shields it."""
    with _lock:
        master.users -= 1
        if master.users > 0:
            return
        if _masters.get(master.key) is master:
            del _masters[master.key]
    popen = master.popen
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
    shutil.rmtree(master.directory, ignore_errors=True)
