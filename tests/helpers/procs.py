"""Looking at processes through /proc, the way the leak checks need to, and awaiting a
program's exit."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from kernel_nursery._platform import LINUX, PORTABLE_VARIABLE
from kernel_nursery.provisioning._guardian import guardian_pid

#: Skips a test of what the library does only with Linux's pidfds and ``/proc`` (taking a kernel
#: over, the guardian, awaiting a group's members) where they are hidden: ``nox -s portable``.
needs_linux = pytest.mark.skipif(
    not LINUX, reason=f"needs the library's Linux facilities (pidfds, /proc): {PORTABLE_VARIABLE}"
)
#: The opposite: a test of the fallback that platforms without them take.
without_linux = pytest.mark.skipif(
    LINUX, reason=f"tests the fallback without pidfds and /proc: runs with {PORTABLE_VARIABLE}=1"
)


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/PID/stat`` from field 3 (the state) on, or ``None`` when the
    process is gone. The command name (field 2) may hold spaces and ')', so the split starts
    after the last ')'. (Written apart from the package's own parser: a cross-check.)"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def is_running(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie (a zombie has exited; it only awaits reaping,
    and this machine's init may not reap orphans promptly)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def parent_of(pid: int) -> int:
    """The parent process of *pid*, which must exist."""
    fields = stat_fields(pid)
    assert fields is not None, f"process {pid} is gone"
    return int(fields[1])


def children_of(pid: int | None = None) -> set[int]:
    """Every child of *pid* (default: this process), zombies included."""
    pid = os.getpid() if pid is None else pid
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except FileNotFoundError:
            continue
        children.update(int(c) for c in text.split())
    return children


#: Engines a session fixture runs as children of this process (a private dockerd), which live
#: as long as the test session: not a test's leftovers. Each fixture adds its daemon's pid when
#: it starts it and removes it once the daemon is reaped (a pid can be reused).
ENGINE_PIDS: set[int] = set()


def live_children(pid: int | None = None) -> set[int]:
    """The running (non-zombie) children of *pid* (default: this process, whose kernel
    guardian, meant to live as long as the process, and the session's engines
    (:data:`ENGINE_PIDS`) are not counted)."""
    children = children_of(pid)
    if pid is None:
        children.discard(guardian_pid() or 0)
        children -= ENGINE_PIDS
    return {c for c in children if is_running(c)}


def zombie_children() -> set[int]:
    """This process's children that have exited and were not reaped."""
    return {c for c in children_of() if (stat_fields(c) or [b""])[0] == b"Z"}


def process_group_members(pgid: int) -> set[int]:
    """Running processes whose process group is *pgid*."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.add(int(entry.name))
    return members


async def exit_status(proc: anyio.abc.Process) -> tuple[int, str]:
    """Await a program's exit (its cleanup is bounded) and read what it wrote on stderr."""
    with anyio.fail_after(60):
        status = await proc.wait()
    assert proc.stderr is not None
    err = b""
    with anyio.fail_after(10):
        try:
            while True:
                err += await proc.stderr.receive()
        except anyio.EndOfStream:
            pass
    return status, err.decode()


#: Seconds within which a dead manager's kernels must be gone (the guardian's grace is 2 s;
#: ipykernel looks at its parent every second).
GONE_WITHIN = 15


async def gone(pid: int) -> None:
    """Wait until process *pid* (any process, not only a child) has exited: its pidfd
    becomes readable. Fails after GONE_WITHIN seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with anyio.fail_after(GONE_WITHIN):
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def killed_manager_leaves_nothing(argv: list[str], *, ready_within: float) -> None:
    """Run *argv*, a program that starts a kernel with a grandchild in its process group and
    prints ``PID CONNECTION_FILE GUARDIAN_PID`` once it runs; kill it with SIGKILL; check
    that its guardian then stops the kernel's whole group and removes the connection file."""
    process = await anyio.open_process(argv, stdout=-1, stderr=None, start_new_session=True)
    async with process:
        try:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(ready_within):
                async for chunk in process.stdout:
                    line += chunk
                    if b"\n" in line:
                        break
            pid_text, file, guardian_text = line.decode().split()
            pid, guardian = int(pid_text), int(guardian_text)
            [grandchild] = process_group_members(pid) - {pid}
        finally:
            process.send_signal(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
        await gone(guardian)  # it exits once it has stopped the kernel's group
    assert not is_running(pid) and not is_running(grandchild)
    assert not Path(file).exists()


@contextmanager
def fifo_with_a_blocked_writer(path: Path) -> Iterator[threading.Event]:
    """A FIFO made at *path*, with a thread blocked opening it to write; the event yielded is
    set once something opens the FIFO to read (which a mere look at the file must not do). The
    writer is let go at the end."""
    os.mkfifo(path)
    opened = threading.Event()

    def write() -> None:
        fd = os.open(path, os.O_WRONLY)  # blocks until the FIFO is opened to read
        opened.set()
        os.close(fd)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wchan = Path(f"/proc/self/task/{writer.native_id}/wchan")
    deadline = time.monotonic() + 10
    # Only /proc tells that the writer is blocked in its open (a bounded wait, not a guess).
    while wchan.read_text() != "wait_for_partner":
        assert time.monotonic() < deadline, "the FIFO's writer never blocked"
        time.sleep(0.01)
    try:
        yield opened
    finally:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer go
        writer.join(10)
        os.close(fd)
