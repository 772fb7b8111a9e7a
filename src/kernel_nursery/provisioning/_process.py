"""Handles on a kernel process: one we spawned, or one adopted from another process (pidfd).

Both wait for the exit by awaiting an event from the OS (the child's exit, or the pidfd becoming
readable), never by polling, and both serve any number of concurrent waiters.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from typing import Protocol

import anyio
import anyio.abc

__all__ = [
    "UNKNOWN_EXIT_STATUS",
    "AdoptedProcess",
    "ChildProcess",
    "ProcessHandle",
    "process_start_time",
]

#: Reported by :meth:`~kernel_nursery.provisioning.LocalProvisioner.poll` and ``wait()`` for an
#: adopted kernel (see ``load_provisioner_info``) that has exited: only a process's parent can
#: learn its exit status. The value can be neither an exit code (0-255) nor a signal (-1 to -64).
UNKNOWN_EXIT_STATUS = -255


class ProcessHandle(Protocol):
    """What :class:`LocalProvisioner` needs from a process."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def send_signal(self, signum: int) -> None: ...
    async def aclose(self) -> None: ...


class ChildProcess:
    """A kernel process this process started (an :class:`anyio.abc.Process`)."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        # asyncio records the status when its child watcher sees the exit; trio asks waitpid().
        return self._process.returncode

    async def wait(self) -> int:
        return await self._process.wait()

    def send_signal(self, signum: int) -> None:
        # asyncio raises ProcessLookupError for an exited child, trio says nothing: make both quiet.
        try:
            self._process.send_signal(signal.Signals(signum))
        except ProcessLookupError:
            pass

    async def aclose(self) -> None:
        # Closes the pipes the caller may have asked for (none by default); the process has
        # been reaped by then, so this does not wait.
        for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
            if stream is not None:
                await stream.aclose()


class AdoptedProcess:
    """A kernel started by another process, watched through a Linux pidfd.

    A pidfd names one process, not a number, so a pid reused after the kernel's exit is never
    signalled by mistake, and it becomes readable when the process exits, which is what
    :meth:`wait` awaits. The exit status itself belongs to the kernel's parent, so it is
    reported as :data:`UNKNOWN_EXIT_STATUS`.
    """

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self._pid = pid
        self._pidfd = pidfd  # None: the process was already gone when adopted
        self._exited = pidfd is None
        self._wait_lock = anyio.Lock()

    @classmethod
    def adopt(cls, pid: int, start_time: int | None) -> AdoptedProcess:
        """Open a pidfd on *pid*; a process that is gone, or whose start time differs from
        *start_time* (the pid was reused), is adopted as already exited."""
        if not hasattr(os, "pidfd_open"):
            raise NotImplementedError("re-attaching to a kernel needs Linux pidfds (Linux 5.3+)")
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return cls(pid, None)
        # Checked after the pidfd is open: if the pid was reused before, the start time differs.
        if start_time is not None and process_start_time(pid) != start_time:
            os.close(pidfd)
            return cls(pid, None)
        return cls(pid, pidfd)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        if not self._exited and self._pidfd is not None:
            # A zero-timeout look at the pidfd: one syscall, not a loop.
            ready, _, _ = select.select([self._pidfd], [], [], 0)
            self._exited = bool(ready)
        return UNKNOWN_EXIT_STATUS if self._exited else None

    async def wait(self) -> int:
        # trio allows one waiter per file descriptor; the lock lines further waiters up behind
        # the first, and each finds the exit recorded when its turn comes.
        async with self._wait_lock:
            if not self._exited and self._pidfd is not None:
                try:
                    await anyio.wait_readable(self._pidfd)
                except anyio.ClosedResourceError:
                    pass
                self._exited = True
        return UNKNOWN_EXIT_STATUS

    def send_signal(self, signum: int) -> None:
        if self._pidfd is None or self._exited:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, signum)
        except ProcessLookupError:
            self._exited = True

    async def aclose(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            self._exited = True
            anyio.notify_closing(fd)
            os.close(fd)


def process_start_time(pid: int) -> int | None:
    """The start time of *pid* in clock ticks since boot (Linux ``/proc/PID/stat`` field 22),
    which tells a process from a later one that reuses its pid; ``None`` where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])
