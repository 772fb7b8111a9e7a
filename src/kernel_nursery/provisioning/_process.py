"""Handles on a kernel process: one we spawned, or one adopted from another process (pidfd).

Both wait for the exit by awaiting an event from the OS (the child's exit, or the pidfd becoming
readable), never by polling, and both serve any number of concurrent waiters.
"""

from __future__ import annotations

import os
import select
import signal
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread

from .._errors import launch_os_error
from .._platform import LINUX

__all__ = [
    "UNKNOWN_EXIT_STATUS",
    "AdoptedProcess",
    "ChildProcess",
    "ProcessHandle",
    "process_start_time",
    "spawn_shielded",
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
    @property
    def group_is_ours(self) -> bool:
        """Whether the process group numbered like the kernel is certainly still the kernel's,
        so that signalling it cannot reach a stranger."""
        ...

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

    @property
    def group_is_ours(self) -> bool:
        # Our child's pid stays allocated until we reap it, and after that the group id stays
        # allocated while any member lives: the number cannot name another group meanwhile.
        return True

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
        if not LINUX:
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
            poller = select.poll()  # not select.select(): that fails for fds >= 1024
            poller.register(self._pidfd, select.POLLIN)
            self._exited = bool(poller.poll(0))
        return UNKNOWN_EXIT_STATUS if self._exited else None

    @property
    def group_is_ours(self) -> bool:
        # Not our child: once it has exited (or was found replaced at adoption), its number may
        # be reused, by a process that could lead a group of that number.
        return self.returncode is None

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


async def wait_for_group_exit(pgid: int) -> None:
    """Wait until every process of group *pgid* has exited (zombies count as exited).

    Used after the group was sent SIGKILL: the signal is delivered asynchronously, and members
    other than the kernel are not our children, so they cannot be awaited with ``waitpid``. On
    Linux each remaining member is found in ``/proc`` and awaited through a pidfd (readable at
    its exit); nothing polls. The scan of ``/proc`` runs in a worker thread, which a
    cancellation abandons (it only reads). Elsewhere the group is asked after, at growing
    intervals (:func:`_ask_until_group_exit`). Callers bound it with a cancel scope.
    """
    try:
        os.killpg(pgid, 0)  # one syscall answers the common case: the group is already empty
    except ProcessLookupError:
        return
    except PermissionError:
        pass  # a member we may not signal: look closer
    if not LINUX:
        await _ask_until_group_exit(pgid)
        return
    # Reading /proc costs a file per process of the machine: in a worker thread, abandoned
    # if cancelled (it only reads).
    members = await anyio.to_thread.run_sync(_group_members, pgid, abandon_on_cancel=True)
    for pid in members:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)


async def _ask_until_group_exit(pgid: int) -> None:
    """Without pidfds and ``/proc`` (macOS...), a group's end can only be asked about:
    ``killpg(pgid, 0)`` fails once no member is left. Asked at intervals growing from 5 ms to
    100 ms, as members killed by SIGKILL are usually gone within the first few. A member that
    has exited but is not yet reaped still counts, so where orphans are not reaped promptly
    this lasts until the caller's bound."""
    delay = 0.005
    while True:
        await anyio.sleep(delay)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass  # a member we may not signal is still there
        delay = min(delay * 2, 0.1)


def _group_members(pgid: int) -> list[int]:
    """Running (not zombie) processes in group *pgid*, from ``/proc``."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue  # exited meanwhile
        # fields[0] is the state (field 3), fields[2] the process group (field 5)
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(name))
    return members


def process_start_time(pid: int) -> int | None:
    """The start time of *pid* in clock ticks since boot (Linux ``/proc/PID/stat`` field 22),
    which tells a process from a later one that reuses its pid; ``None`` where unavailable."""
    if not LINUX:
        return None
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


async def spawn_shielded(
    argv: list[str], *, program: str, shown: list[str], **options: Any
) -> anyio.abc.Process:
    """Start *argv* with :func:`anyio.open_process` and *options*, shielded from cancellation:
    cancelled inside the spawn, asyncio would kill the child but leave it unreaped, with no
    handle of ours to clean it up. A spawn is bounded (fork + exec); a cancellation that
    arrived meanwhile is delivered at the caller's next checkpoint, once it holds the handle.

    Raises:
        LaunchError: the program cannot be run; the message names it as *program* says
            (``"srun (/usr/bin/srun)"``), and its ``argv`` is *shown*. A missing program is a
            :class:`~kernel_nursery.LaunchFileNotFoundError`, one not executable a
            :class:`~kernel_nursery.LaunchPermissionError`.
    """
    with anyio.CancelScope(shield=True):  # bounded: fork + exec
        try:
            process = await anyio.open_process(argv, **options)
        except OSError as exc:
            message = f"cannot run {program}: {exc.strerror or exc}"
            raise launch_os_error(message, argv=shown, cause=exc) from exc
    return process


# Twins: _scripts/guardian.py _stat_fields and _scripts/ssh_remote.py _start_time parse the same
# line; those scripts run alone, stdlib only, and cannot import this module.
def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` from field 3 (the state) on, or ``None`` when the
    process is gone. The command name (field 2) is in parentheses and may itself contain
    spaces or ')', so the split starts after the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()
