"""The process's own limits, as they bear on starting kernels: open files above all.

Every kernel costs the managing process a few file descriptors (its client's zmq sockets, the
handle on its process) and a start briefly costs more (the ports held until the kernel binds
them, the spawn's pipes, the connection file). Under the soft ``RLIMIT_NOFILE`` of 1,024 that
many machines still have, a process supervising hundreds of kernels meets the limit.

Running out must be a typed error at once, not a hang: zmq, out of descriptors, does not fail
a ``connect`` but retries it in its I/O thread, so a client made without descriptors waits for a
kernel it can never reach. :func:`claim_descriptors` therefore refuses a start before it opens
anything when the descriptors it needs are not there, and :func:`limit_error` recognises the
errors that running out raises (``EMFILE``, ``ENFILE``, ``ENOMEM`` from the OS or from zmq) where
they surface anyway.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import Callable

import anyio
import zmq

from ._errors import ResourceLimitError
from ._platform import LINUX

__all__ = ["raise_open_file_limit"]

_log = logging.getLogger("kernel_nursery")

if sys.platform != "win32":  # Windows has no rlimits
    import resource

    _INFINITY = resource.RLIM_INFINITY
else:
    _INFINITY = -1

#: Descriptors one start needs at its peak besides those the kernel keeps once ready: the
#: ports held until the kernel binds them (5), the spawn's pipes and /dev/null (3), the
#: connection file (1), the client's sockets until the kernel is ready (8 beyond control's
#: two), with a margin.
START_PEAK = 20

#: errno values that mean "a limit of this process or of the system is reached".
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def open_file_limits() -> tuple[int, int] | None:
    """The soft and hard ``RLIMIT_NOFILE`` of this process, or ``None`` where there are none."""
    if sys.platform == "win32":
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit, as servers commonly
    do at start, and return ``(old, new)`` soft limits (equal when nothing changed: already at
    the hard limit, or a platform without such limits, where both are ``-1``). The change is
    logged at debug level on the ``kernel_nursery`` logger; it is never made implicitly.

    Each kernel costs the managing process a few descriptors (see the docs' "Many kernels"),
    so the 1,024 that many systems give by default bounds how many kernels one process
    supervises. The hard limit itself can only be raised by an administrator (``ulimit -Hn``,
    ``/etc/security/limits.conf``, systemd's ``LimitNOFILE``). The ``kernel-nursery`` command
    calls this when it starts.

    .. versionadded:: 0.1
    """
    if sys.platform == "win32":
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if sys.platform == "darwin" and (hard == _INFINITY or hard > 10240):
        target = 10240  # macOS refuses an unlimited soft limit (OPEN_MAX)
    if soft != _INFINITY and (target == _INFINITY or target > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            _log.debug("Could not raise the open file limit from %d to %d: %s", soft, target, exc)
            return soft, soft
        _log.debug(
            "Raised the soft limit on open files from %d to %d (the hard limit)", soft, target
        )
        return soft, target
    _log.debug("The soft limit on open files is %d, already the hard limit", soft)
    return soft, soft


def _open_descriptors() -> int | None:
    """How many descriptors this process has open, where the OS says cheaply: ``/proc`` on
    Linux, ``/dev/fd`` on macOS (as CPython's subprocess module reads it there)."""
    try:
        # less the one listdir itself opened
        return len(os.listdir("/proc/self/fd" if LINUX else "/dev/fd")) - 1
    except FileNotFoundError:
        return None


def _how_to_raise(soft: int, hard: int) -> str:
    if hard == _INFINITY:
        return (
            "raise it (the hard limit is unlimited) with 'ulimit -n' before starting the "
            "process, or kernel_nursery.raise_open_file_limit() in it"
        )
    if soft < hard:
        return (
            f"raise it (up to the hard limit, {hard}) with 'ulimit -n {hard}' before starting "
            "the process, or kernel_nursery.raise_open_file_limit() in it"
        )
    return (
        "it is the hard limit already: ask for a higher one ('ulimit -Hn', as root), "
        "or use fewer kernels per process"
    )


def _open_files_error(what: str, *, number: int = errno.EMFILE) -> ResourceLimitError:
    limits = open_file_limits()
    if number == errno.ENFILE:
        return ResourceLimitError(
            f"{what}: the system's table of open files is full (ENFILE); "
            "raise fs.file-max (sysctl) or close files elsewhere",
            limit="open files",
            errno=number,
        )
    if limits is None:
        return ResourceLimitError(f"{what}: too many open files", limit="open files", errno=number)
    soft, hard = limits
    return ResourceLimitError(
        f"{what}: this process is at its limit of {soft} open files (RLIMIT_NOFILE); "
        + _how_to_raise(soft, hard),
        limit="open files",
        errno=number,
    )


class _Claims:
    """The descriptors claimed by the starts under way in one thread (one event loop), and an
    event set (then replaced) whenever one of them ends."""

    def __init__(self) -> None:
        self.count = 0
        self.changed: anyio.Event | None = None

    def release(self, need: int) -> None:
        self.count -= need
        changed, self.changed = self.changed, anyio.Event()
        if changed is not None:
            changed.set()


#: Per thread, since each event loop runs in one (the blocking face runs loops in threads).
_claims: dict[int, _Claims] = {}


def _claimed() -> int:
    return sum(claims.count for claims in list(_claims.values()))


async def claim_descriptors(what: str, *, keep: int) -> Callable[[], None]:
    """Hold back the descriptors a start needs (*keep* that it keeps once the kernel is ready,
    and :data:`START_PEAK` more while it starts) until the function returned is called.

    Starts under way claim theirs too, so that many starts at once are not all admitted
    against the same free descriptors. When this start does not fit now but would once starts
    under way (in this event loop) end, it waits for them, each of which is bounded by its
    own ``ready_timeout``; when it does not fit and none are under way, it fails at once.
    Where the OS does not say cheaply how many descriptors are open (not Linux), nothing is
    checked or waited for.

    Cancelled while waiting, it has claimed nothing.

    Raises:
        ResourceLimitError: fewer descriptors are free than this start needs, and no start
            under way will free any; nothing was opened.
    """
    need = START_PEAK + keep
    claims = _claims.setdefault(threading.get_ident(), _Claims())
    if not claims.count:
        # Nobody waits: an event of this event loop (the thread may have run another before).
        claims.changed = anyio.Event()
    limits = open_file_limits()
    while limits is not None and limits[0] != _INFINITY:
        try:
            used = _open_descriptors()
        except OSError as exc:
            if exc.errno in _EXHAUSTED and not claims.count:
                raise _open_files_error(what, number=exc.errno) from exc
            if exc.errno not in _EXHAUSTED:
                raise
            used = limits[0]
        if used is None:
            break
        # What starts under way have opened is counted in *used* already: this errs on the
        # side of caution, and the wait below makes up for it.
        if used + _claimed() + need <= limits[0]:
            break
        if not claims.count:
            free = max(limits[0] - used, 0)
            raise _open_files_error(f"{what}: {free} descriptors are free, {need} needed")
        assert claims.changed is not None
        await claims.changed.wait()
    claims.count += need
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            claims.release(need)

    return release


def exhausted_errno(exc: BaseException) -> int | None:
    """The errno of the error in *exc*, its causes, contexts or group members that says a limit
    was reached (``EMFILE``, ``ENFILE``, ``ENOMEM``), or ``None``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (OSError, zmq.ZMQError)) and current.errno in _EXHAUSTED:
            return int(current.errno)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)
    return None


def limit_error(exc: BaseException, what: str) -> ResourceLimitError | None:
    """The :class:`ResourceLimitError` that *exc* amounts to (see :func:`exhausted_errno`),
    or ``None`` when it is about something else."""
    if isinstance(exc, ResourceLimitError):
        return None
    number = exhausted_errno(exc)
    if number is None:
        return None
    if number == errno.ENOMEM:
        return ResourceLimitError(
            f"{what}: out of memory (ENOMEM); free memory or raise this process's limits "
            "('ulimit -v')",
            limit="memory",
            errno=number,
        )
    return _open_files_error(what, number=number)


def check_free_descriptors(what: str, need: int) -> None:
    """Refuse at once when fewer than *need* descriptors are free (Linux; elsewhere nothing is
    checked). zmq sockets take one for their mailbox when made and one for their connection
    later, in zmq's I/O thread, which retries a connection it has no descriptor for instead of
    failing: checked first, a client never waits for a kernel it cannot reach.

    Raises:
        ResourceLimitError: fewer than *need* descriptors are free.
    """
    limits = open_file_limits()
    if limits is None or limits[0] == _INFINITY:
        return
    try:
        used = _open_descriptors()
    except OSError as exc:
        if exc.errno in _EXHAUSTED:
            raise _open_files_error(what, number=exc.errno) from exc
        raise
    if used is not None and used + need > limits[0]:
        raise _open_files_error(
            f"{what}: {max(limits[0] - used, 0)} descriptors are free, {need} needed"
        )


def at_open_file_limit(margin: int = 8) -> bool:
    """Whether fewer than *margin* descriptors are free now (Linux; ``False`` elsewhere)."""
    limits = open_file_limits()
    try:
        used = _open_descriptors()
    except OSError as exc:
        return exc.errno in _EXHAUSTED
    return limits is not None and used is not None and used + margin > limits[0]
