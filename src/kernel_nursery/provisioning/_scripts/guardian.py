"""The guardian of one managing process: when that process dies, it stops the process's kernels.

Started by :mod:`kernel_nursery.provisioning._guardian` as ``python -I -S <this file> GRACE``,
in a session of its own, with standard input the read end of a pipe whose write end only the
managing process holds. Each line it reads is a JSON array:

``["register", token, pid, pgid, start_time, connection_file, written_at, directory]``
    a kernel was launched (or adopted) and ran when the line was written, at ``written_at``
    (``time.monotonic()``, a clock shared by every process); ``pgid``, ``start_time``,
    ``connection_file`` and ``directory`` (a private temporary directory of the process's, as
    an ssh control master's, removed with the sockets it holds, and only if they are all it
    holds) may be ``null``. The kernel is
    identified by a pidfd opened when the line is read, checked against ``start_time``.
``["register", token, pid, pgid, start_time, connection_file, written_at, directory, ...]``
    with two more fields, ``cgroups`` and ``tree``, for a sandboxed kernel: the cgroup
    directories it runs in (a list) and its private folder (or ``null``). Once its processes
    are killed, any process left in the cgroups is killed, the cgroups are removed, and so is
    the folder with all it holds. Only names the sandbox gives (``kn-sandbox-*``; cgroups
    under ``/sys/fs/cgroup``, a folder of this user's, mode 0700) are touched.
``["unregister", token]``
    the managing process stopped and reaped that kernel itself: forget it.
``["container", token, command, env, cid_file, directory]``
    a container is being created (or was adopted): at the end, ``command + ["rm", "-f", ID]``
    is run with the guardian's environment updated by ``env``, the id read from ``cid_file``
    (written by the engine's client once the container exists; no file: nothing was created),
    and the private ``directory`` (its runtime files; named ``kn-docker-*``, mode 0700) removed
    with what it holds. An ``unregister`` of its token forgets it.

End of file means the managing process is gone, however it ended (the OS closes the write end
of a process killed by SIGKILL or by the OOM killer). Then, for every kernel still registered:
SIGTERM to its process group, up to GRACE seconds for the kernel to exit, SIGKILL to the group,
its connection file (and, for ipc, its socket files) and its directory removed; and the guardian
exits.

Every container still registered is removed by its engine meanwhile (all at once, bounded by
CONTAINER_WAIT in all).

A process group is signalled only while its number certainly names the kernel's group: while
the kernel (its leader) runs; within RECENT seconds of the leader's exit (the number cannot have
gone round the whole pid space yet); after that, while a member found in the group then still
runs (a group number is not reused while any member lives).

Standard library only and never imported by the package: it starts fast, and nothing of the
manager's environment (user site, ``PYTHONPATH``) can break it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import sys
import time

_POLL_IN = select.POLLIN | select.POLLHUP | select.POLLERR
#: Seconds after a kernel's exit during which its process group number is still its group's:
#: a number is reused only once every other pid has been allocated (pids are handed out in
#: turn), which takes far longer. Past that, the group is vouched for by members seen in it.
RECENT = 2.0
#: How the directories the guardian may remove are named (those of ssh control masters).
DIRECTORY_PREFIX = "kn-ssh-"
#: How a sandbox names its cgroups and its kernel's folder, and where cgroups live.
SANDBOX_PREFIX = "kn-sandbox-"
CGROUP_ROOT = "/sys/fs/cgroup/"
#: Seconds to wait for the processes sent SIGKILL to be gone before the guardian exits (only a
#: process stuck in the OS kernel takes longer).
KILL_WAIT = 5.0
#: How a container's runtime directory is named (removed with its contents, if private).
CONTAINER_DIRECTORY_PREFIX = "kn-docker-"
#: Seconds the engines' ``rm -f`` of the containers may take in all (each stops its container
#: first, with SIGKILL).
CONTAINER_WAIT = 20.0


class Kernel:
    """One registered kernel: its leader (through a pidfd), its group, its files."""

    def __init__(
        self,
        pid: int,
        pgid: int | None,
        start_time: int | None,
        path: str | None,
        written_at: float,
        directory: str | None = None,
        cgroups: list[str] | None = None,
        tree: str | None = None,
    ) -> None:
        self.pid = pid
        self.pgid = pgid
        self.path = path
        self.directory = directory
        self.cgroups = cgroups or []
        self.tree = tree
        self.start_time = start_time
        self.pidfd: int | None = None  # open until the leader is seen to exit
        self.unchecked = False  # no pidfd could be had: identified by start time alone
        self.exited_at: float | None = None  # when the leader was seen to exit
        # (pid, pidfd) of the members left in the group soon after the leader's exit
        self.survivors: list[tuple[int, int]] | None = None
        try:
            self.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Exited and reaped since it was launched, before written_at: that is when its
            # group number was last known to be the kernel's.
            self.exited_at = written_at
            return
        except OSError:
            self.unchecked = start_time is not None  # EMFILE, ENOSYS: fall back on start time
            return
        if start_time is not None and _start_time(pid) != start_time:
            # The pid was reused before we got here, which also means the kernel's group was
            # empty (a number is not reused while a group has it): nothing to stop.
            self.close()

    def leader_runs(self) -> bool:
        if self.unchecked:
            return _start_time(self.pid) == self.start_time
        if self.pidfd is not None and _readable(self.pidfd):
            self.leader_exited()  # just now: the serving loop would have seen it otherwise
        return self.pidfd is not None

    def leader_exited(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.exited_at = time.monotonic()

    def snapshot_due(self) -> float | None:
        """When to look for members left in the group (``None``: nothing to look for)."""
        if self.exited_at is None or self.survivors is not None or self.pgid is None:
            return None
        return self.exited_at + RECENT / 2

    def snapshot(self) -> None:
        """Remember the members left in the group, which vouch for its number from now on.
        Due RECENT / 2 after the leader's exit; most kernels are unregistered before, their
        managers having reaped them. Later than RECENT, the number could be another group's."""
        self.survivors = []
        if self.pgid is None or self.exited_at is None:
            return
        if time.monotonic() - self.exited_at > RECENT:
            return
        try:
            os.killpg(self.pgid, 0)  # one syscall answers the common case: the group is empty
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        for pid in _group_members(self.pgid):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            # Checked with the pidfd open: a pid reused meanwhile is in this group only if the
            # group still lives, and then it is a member like any other.
            if _pgid_of(pid) == self.pgid:
                self.survivors.append((pid, pidfd))
            else:
                os.close(pidfd)

    def group_is_ours(self) -> bool:
        """Whether the group's number certainly still names the kernel's group."""
        if self.pgid is None:
            return False
        if self.leader_runs():
            return True
        if self.exited_at is None:
            return False  # the leader was gone before we saw it: its number may be reused
        if self.survivors is None:
            if time.monotonic() - self.exited_at < RECENT:
                return True
            self.snapshot()
        # A survivor that has not exited still holds its pid, so /proc/PID is that process.
        return any(
            not _readable(fd) and _pgid_of(pid) == self.pgid for pid, fd in self.survivors or ()
        )

    def signal(self, signum: int, *, group: bool) -> None:
        if group and self.pgid is not None:
            try:
                os.killpg(self.pgid, signum)
                return
            except OSError:
                pass  # an empty group, or none of it ours to signal: the leader at least
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except OSError:
                pass

    def remove_files(self) -> None:
        if self.directory:
            _remove_directory(self.directory)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)
        if self.tree:
            _remove_tree(self.tree)
        if not self.path:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.load(f)
            if info.get("transport") == "ipc":
                for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
                    _unlink(f"{info['ip']}-{info[name]}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        _unlink(self.path)

    def close(self) -> None:
        for fd in [self.pidfd, *(fd for _pid, fd in self.survivors or ())]:
            if fd is not None:
                os.close(fd)
        self.pidfd = None
        self.survivors = []


def main(argv: list[str]) -> int:
    # A new session already keeps the terminal's Ctrl-C and hang-up away; be sure anyway.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    grace = float(argv[1]) if len(argv) > 1 else 2.0
    _raise_fd_limit()
    containers: dict[int, list[object]] = {}
    kernels = serve(containers)
    removals = start_container_removals(list(containers.values()))
    stop(list(kernels.values()), grace)
    finish_container_removals(removals)
    return 0


def follow_container(
    op: object, token: int, message: list[object], containers: dict[int, list[object]]
) -> bool:
    """Take a ``container`` line in (or let an ``unregister`` forget its token); whether the
    line was about a container, and so needs nothing more."""
    if op == "container" and len(message) == 6:
        containers[token] = list(message[2:])
        return True
    return op == "unregister" and containers.pop(token, None) is not None


def start_container_removals(containers: list[list[object]]) -> list[tuple[object, str | None]]:
    """Start ``rm -f`` of every registered container whose id its cid file gives, all at once
    (each is a client talking to the engine); return them with their runtime directories."""
    import subprocess  # only a guardian with containers pays for the import

    started: list[tuple[object, str | None]] = []
    for command, env, cid_file, directory in containers:
        cid = ""
        try:
            with open(str(cid_file), encoding="ascii") as f:
                cid = f.read().strip()
        except (OSError, ValueError):
            pass
        popen = None
        if cid.isalnum() and isinstance(command, list) and isinstance(env, dict):
            try:
                popen = subprocess.Popen(
                    [str(a) for a in command] + ["rm", "-f", cid],
                    env={**os.environ, **{str(k): str(v) for k, v in env.items()}},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError:
                popen = None
        _unlink(str(cid_file))
        started.append((popen, None if directory is None else str(directory)))
    return started


def finish_container_removals(removals: list[tuple[object, str | None]]) -> None:
    """Wait for the removals (CONTAINER_WAIT in all), then remove the runtime directories."""
    deadline = time.monotonic() + CONTAINER_WAIT
    for popen, directory in removals:
        wait = getattr(popen, "wait", None)
        if wait is not None:
            try:
                wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: S110  (TimeoutExpired: the engine hangs; nothing to do)
                pass
        if directory:
            _remove_container_directory(directory)


def serve(containers: dict[int, list[object]]) -> dict[int, Kernel]:
    """Follow the managing process's lines until end of file; return the kernels left (the
    containers left are in *containers*)."""
    kernels: dict[int, Kernel] = {}
    by_fd: dict[int, Kernel] = {}
    poller = select.poll()
    poller.register(0, _POLL_IN)
    pending = b""
    while True:
        dues = [(due, k) for k in kernels.values() if (due := k.snapshot_due()) is not None]
        timeout = None
        if dues:
            timeout = max(0.0, min(due for due, _k in dues) - time.monotonic()) * 1000
        events = poller.poll(timeout)
        now = time.monotonic()
        for due, kernel in dues:
            if due <= now:
                kernel.snapshot()
        # Exits first, then lines: a line may close a pidfd whose number a new registration in
        # the same batch then reuses, and a stale exit event must not be taken for the new one.
        for fd, _events in sorted(events, key=lambda event: event[0] == 0):
            if fd != 0:
                exited = by_fd.pop(fd, None)
                if exited is not None:
                    poller.unregister(fd)
                    exited.leader_exited()
                continue
            data = os.read(0, 65536)
            if not data:
                return kernels
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line)
                    op, token = message[0], int(message[1])
                except (ValueError, TypeError, IndexError, KeyError):
                    continue  # not ours to understand: ignore it rather than die
                if follow_container(op, token, message, containers):
                    continue
                old = kernels.pop(token, None)
                if old is not None:
                    if old.pidfd is not None:
                        poller.unregister(old.pidfd)
                        by_fd.pop(old.pidfd, None)
                    old.close()
                if op == "register" and len(message) in (7, 8, 10):
                    try:
                        kernel = _kernel_from(message[2:])
                    except (ValueError, TypeError):
                        continue
                    kernels[token] = kernel
                    if kernel.pidfd is not None:
                        by_fd[kernel.pidfd] = kernel
                        poller.register(kernel.pidfd, _POLL_IN)


def _kernel_from(fields: list[object]) -> Kernel:
    """A registered kernel from a register line's fields (after the token)."""
    pid, pgid, start_time, path, written_at, *rest = fields
    directory, cgroups, tree = [*rest, None, None, None][:3]
    if cgroups is not None and not isinstance(cgroups, list):
        raise TypeError("cgroups must be a list")
    return Kernel(
        int(pid),  # type: ignore[call-overload]
        None if pgid is None else int(pgid),  # type: ignore[call-overload]
        None if start_time is None else int(start_time),  # type: ignore[call-overload]
        None if path is None else str(path),
        float(written_at),  # type: ignore[arg-type]
        None if directory is None else str(directory),
        [str(c) for c in cgroups or ()],
        None if tree is None else str(tree),
    )


def stop(kernels: list[Kernel], grace: float) -> None:
    """SIGTERM to each group, up to *grace* seconds for the leaders, SIGKILL, files removed."""
    ours = []
    for kernel in kernels:
        group = kernel.group_is_ours()
        if group or kernel.leader_runs():
            kernel.signal(signal.SIGTERM, group=group)
            ours.append((kernel, group))
    _await_readable([k.pidfd for k, _group in ours if k.pidfd is not None], grace)
    # A leader exited at most `grace` seconds ago (or still runs): as with RECENT, its group
    # number is still its group's.
    for kernel, group in ours:
        kernel.signal(signal.SIGKILL, group=group)
    _await_deaths(ours)
    for kernel in kernels:
        kernel.remove_files()
        kernel.close()


def _await_deaths(ours: list[tuple[Kernel, bool]]) -> None:
    """Wait (up to KILL_WAIT seconds) until the processes sent SIGKILL have exited: SIGKILL
    lands when the process is next scheduled, and whoever sees the guardian gone may look at
    once. Each is awaited through a pidfd, readable at its exit."""
    pidfds = []
    for kernel, group in ours:
        pids = {kernel.pid}
        if group and kernel.pgid is not None:
            pids.update(_group_members(kernel.pgid))
        for pid in pids:
            try:
                pidfds.append(os.pidfd_open(pid))
            except OSError:
                pass  # gone already (or not ours to watch)
    _await_readable(pidfds, KILL_WAIT)
    for fd in pidfds:
        os.close(fd)


def _await_readable(fds: list[int], seconds: float) -> None:
    """Wait until every one of *fds* (pidfds: readable at their process's exit) is readable,
    or *seconds* have passed."""
    deadline = time.monotonic() + seconds
    waiting = select.poll()
    for fd in fds:
        waiting.register(fd, _POLL_IN)
    left = len(fds)
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _events in waiting.poll(remaining * 1000):
            waiting.unregister(fd)
            left -= 1


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, _POLL_IN)
    return bool(poller.poll(0))


def _remove_directory(path: str) -> None:
    """Remove the private directory *path* of a control socket as a killed ssh leaves it: its
    sockets, then the directory if that empties it. Nothing else, whatever the line said: a
    symbolic link, a directory of another user's or open to others is left alone, and so is
    anything in it that is not a socket (the directory then stays), and any directory not named
    as ``_ssh_master`` names them (``kn-ssh-``, by ``mkdtemp``): a home directory is 0700 too."""
    if not os.path.basename(path).startswith(DIRECTORY_PREFIX):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return  # gone, or a symbolic link (ELOOP), or not a directory
    try:
        found = os.fstat(fd)
        if found.st_uid != os.getuid() or found.st_mode & 0o077:
            return  # not private to us: not one of ours (mkdtemp makes them 0700)
        for name in os.listdir(fd):
            try:
                if stat.S_ISSOCK(os.lstat(name, dir_fd=fd).st_mode):
                    os.unlink(name, dir_fd=fd)
            except OSError:
                pass
    except OSError:
        return
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass  # not empty (not only sockets), or gone


def _remove_cgroup(path: str) -> None:
    """Kill what is left in the sandbox's cgroup *path*, then remove it. Only a directory
    named as a sandbox names its cgroups, under the cgroup file system."""
    real = os.path.realpath(path)
    if not (real.startswith(CGROUP_ROOT) and os.path.basename(real).startswith(SANDBOX_PREFIX)):
        return
    for _attempt in range(3):
        try:
            with open(os.path.join(real, "cgroup.procs"), encoding="ascii") as f:
                pids = [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return  # gone already
        pidfds = []
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            pidfds.append(fd)
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
        _await_readable(pidfds, KILL_WAIT)
        for fd in pidfds:
            os.close(fd)
        try:
            os.rmdir(real)
            return
        except OSError:
            continue  # a process forked meanwhile (or a zombie not yet released): again


def _remove_tree(path: str) -> None:
    """Remove a sandboxed kernel's folder *path* with all it holds: only a directory named as
    a sandbox names them, owned by this user and private to it (mode 0700), never through a
    symbolic link (shutil.rmtree does not follow them)."""
    _remove_private_directory(path, SANDBOX_PREFIX)


# Twin of ssh_remote.py _unlink: each script stands alone.
def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _remove_container_directory(path: str) -> None:
    """Remove a container's runtime directory and what it holds (the connection file, ipc
    sockets, the cid file): only a private directory of ours, named as the provisioner names
    them, and nothing through a symbolic link (``shutil.rmtree`` follows none)."""
    _remove_private_directory(path, CONTAINER_DIRECTORY_PREFIX)


# Twin of docker/_engine.py remove_runtime_dir (the same checks, on purpose): this script runs
# alone (``python -I -S``) and cannot import the package.
def _remove_private_directory(path: str, prefix: str) -> None:
    """Remove directory *path* and all it holds, only if its name starts with *prefix* and it
    is this user's and private (mode 0700), never through a symbolic link."""
    if not os.path.basename(path).startswith(prefix):
        return
    try:
        found = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        return
    import shutil  # only here: most guardians never remove a tree

    shutil.rmtree(path, ignore_errors=True)


def _raise_fd_limit() -> None:
    # One pidfd per registered kernel: lift the soft limit as far as allowed.
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, OSError, ValueError):
        pass


def _stat_fields(pid: int) -> list[bytes] | None:
    """``/proc/PID/stat`` from field 3 (the state) on; ``None`` when gone. The command name
    (field 2) may contain spaces or ')', so the split starts after the last ')'.

    The same parsing as ``_process._stat_fields``, on purpose: this script runs alone
    (``python -I -S``) and cannot import the package."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    # A zombie keeps its start time, and its pid: it is still the process registered.
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def _pgid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[2])


def _group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(name))
    return members


if __name__ == "__main__":
    sys.exit(main(sys.argv))
