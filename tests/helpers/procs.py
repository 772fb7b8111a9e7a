"""Looking at processes through /proc, the way the leak checks need to."""

from __future__ import annotations

import os
from pathlib import Path

from kernel_nursery.provisioning._guardian import guardian_pid


def is_running(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie (a zombie has exited; it only awaits reaping,
    and this machine's init may not reap orphans promptly)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rindex(b")") + 2 :].split()[0]
    return state not in (b"Z", b"X")


def live_children(pid: int | None = None) -> set[int]:
    """The running (non-zombie) children of *pid* (default: this process, whose kernel
    guardian, meant to live as long as the process, is not counted)."""
    own = pid is None
    pid = os.getpid() if pid is None else pid
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text()
        except FileNotFoundError:
            continue
        children.update(int(c) for c in text.split())
    if own:
        children.discard(guardian_pid() or 0)
    return {c for c in children if is_running(c)}


def process_group_members(pgid: int) -> set[int]:
    """Running processes whose process group is *pgid*."""
    members = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.add(int(entry.name))
    return members
