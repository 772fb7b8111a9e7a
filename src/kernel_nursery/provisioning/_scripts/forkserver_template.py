"""The fork server's template: a warm interpreter that forks kernels on request.

Run by the kernel spec's own interpreter (with the spec's interpreter flags) as
``python [flags] forkserver_template.py FD PRELOAD_JSON WARM_JSON``, where FD is this end of a
private
``SOCK_SEQPACKET`` socket pair whose other end only the managing process holds, PRELOAD the
modules to import (each must import) and WARM those a kernel imports as it starts, imported
too where they can be (a failure there is no fault: the kernel imports them itself). Stand-alone:
the standard library at module level; ipykernel and the preloads are imported at run time.

The protocol, one JSON record per message (file descriptors travel as ``SCM_RIGHTS``):

- at start, on the control socket: ``{"ready": true, "pid", "failed": [[module, error]],
  "threads"}`` once the preloads are imported (``failed`` lists those that raised);
- manager → template, on the control socket: a fork request ``{"module", "args", "argv",
  "env", "cwd", "ignored", "independent"}`` with four descriptors: the kernel's own channel
  (a socket pair's end) and its standard input, output and error;
- template → manager, on that kernel's channel: ``{"pid"}`` with a pidfd of the kernel, or
  ``{"error"}`` (nothing was forked); later ``{"status"}`` when the kernel has exited (a
  number: an exit code, or minus the signal that killed it).

The template reaps a kernel only once the manager has closed that kernel's channel, so that
until then the kernel's pid and process group cannot be reused. It creates no thread and no
zmq context. End of file on the control socket (the managing process ended, however it
ended) ends the template: its kernels that are not ``independent`` get SIGTERM, then SIGKILL
after :data:`GRACE` seconds, and are reaped.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

#: Seconds kernels get between SIGTERM and SIGKILL when the managing process has gone.
GRACE = 2.0
#: Records are at most this long (a fork request carries the kernel's environment).
MAX_RECORD = 1 << 20
#: Signals a Python interpreter ignores from its start (the child resets them as exec would).
#: A record of the protocol (see above).
Record = dict[str, Any]
#: Changes to the environment: ``[name, value before, value after]`` (``None``: unset).
EnvironmentChanges = list[list[Any]]
PYTHON_IGNORES = {signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE)}


class _Kernel:
    """A forked kernel, as the template tracks it."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket, independent: bool) -> None:
        self.pid = pid
        self.pidfd: int | None = pidfd
        self.channel: socket.socket | None = channel
        self.independent = independent
        self.exited = False


def _send(sock: socket.socket, record: Record, fds: Sequence[int] = ()) -> None:
    data = json.dumps(record).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def _receive(sock: socket.socket) -> tuple[Record | None, list[int]]:
    """One record and the descriptors that came with it; ``(None, [])`` at end of file."""
    fds = array.array("i")
    data, ancillary, _flags, _addr = sock.recvmsg(MAX_RECORD, socket.CMSG_SPACE(16 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


def _preload(modules: list[str]) -> list[list[str]]:
    """Import *modules*; the failures, each as ``[module, error]``."""
    import importlib

    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # a preload may raise anything, SystemExit included
            failed.append([name, f"{type(exc).__name__}: {exc}"])
    return failed


def _held_descriptors(control: int) -> list[str]:
    """What the preloads left open (a kernel will not have it: it closes what it inherits)."""
    held = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd == control:
            continue
        try:
            held.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return held


def _thread_count() -> int:
    """Threads of this process, native ones included (a preload may start them in C)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


# ---------------------------------------------------------------------- the server


class Template:
    """The template's loop: fork requests on the control socket, exits of its kernels."""

    def __init__(self, control: socket.socket, imported_environment: EnvironmentChanges) -> None:
        self.control = control
        self.imported_environment = imported_environment
        self.poller = select.poll()
        self.poller.register(control, select.POLLIN)
        self.by_pidfd: dict[int, _Kernel] = {}
        self.by_channel: dict[int, _Kernel] = {}
        self.kernels: list[_Kernel] = []

    def serve(self) -> tuple[Record, list[int]] | None:
        """Serve until end of file on the control socket (then return ``None``), or until
        this process is a new kernel (then return its request and descriptors)."""
        while True:
            for fd, _events in self.poller.poll():
                if fd == self.control.fileno():
                    request, fds = _receive(self.control)
                    if request is None:
                        self.end()
                        return None
                    if self.fork(request, fds):
                        request["imported_environment"] = self.imported_environment
                        return request, fds
                    break  # the fork opened descriptors: the batch's numbers may be stale
                elif fd in self.by_pidfd:
                    self.exited(self.by_pidfd[fd])
                elif fd in self.by_channel:
                    self.released(self.by_channel[fd])

    def fork(self, request: Record, fds: list[int]) -> bool:
        """Fork a kernel for *request*; ``True`` in the child."""
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            return False
        channel = socket.socket(fileno=fds[0])
        threads = _thread_count()
        if threads > 1:
            # fork() copies only the calling thread: locks other threads held stay locked.
            self.refuse(
                channel, fds, f"the template has {threads} threads (a preload started them)"
            )
            return False
        # SIGTERM stays blocked across the fork: the child must never run the template's
        # handler (it resets its signals before it unblocks them).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        settled, has_settled = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            os.close(settled)
            os.close(has_settled)
            self.refuse(channel, fds, f"fork failed: {exc.strerror or exc}")
            return False
        if pid == 0:
            os.setsid()  # before the manager learns the pid: the group is there to signal
            os.close(has_settled)
            os.close(settled)
            self.let_go(channel)
            return True
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        os.close(has_settled)
        os.read(settled, 1)  # end of file once the child leads its session (or has died)
        os.close(settled)
        for fd in fds[1:]:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        kernel = _Kernel(pid, pidfd, channel, bool(request.get("independent")))
        self.kernels.append(kernel)
        self.by_pidfd[pidfd] = kernel
        self.by_channel[channel.fileno()] = kernel
        self.poller.register(pidfd, select.POLLIN)
        self.poller.register(channel, 0)  # POLLHUP is always reported: the manager let go
        try:
            _send(channel, {"pid": pid}, [pidfd])
        except OSError:
            self.released(kernel)  # the manager has gone already: its kernel goes with it
            _kill_group(pid, signal.SIGKILL)
        return False

    def let_go(self, channel: socket.socket) -> None:
        """In a new kernel: forget the template's sockets without closing them (the kernel
        closes every inherited descriptor; a socket object closing its number later would
        close whatever the kernel opened under it)."""
        channel.detach()
        self.control.detach()
        for kernel in self.kernels:
            if kernel.channel is not None:
                kernel.channel.detach()

    def refuse(self, channel: socket.socket, fds: list[int], reason: str) -> None:
        try:
            _send(channel, {"error": reason})
        except OSError:
            pass
        channel.close()
        for fd in fds[1:]:
            os.close(fd)

    def exited(self, kernel: _Kernel) -> None:
        """The kernel exited: report its status; the zombie stays until its channel closes."""
        assert kernel.pidfd is not None
        self.poller.unregister(kernel.pidfd)
        del self.by_pidfd[kernel.pidfd]
        os.close(kernel.pidfd)
        kernel.pidfd = None
        kernel.exited = True
        if kernel.channel is None:
            self.reap(kernel)
            return
        info = os.waitid(os.P_PID, kernel.pid, os.WEXITED | os.WNOWAIT)
        assert info is not None  # the pidfd said it has exited
        status = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        try:
            _send(kernel.channel, {"status": status})
        except OSError:
            self.released(kernel)

    def released(self, kernel: _Kernel) -> None:
        """The manager closed the kernel's channel: reap it if it has exited."""
        if kernel.channel is not None:
            self.poller.unregister(kernel.channel)
            del self.by_channel[kernel.channel.fileno()]
            kernel.channel.close()
            kernel.channel = None
        if kernel.exited:
            self.reap(kernel)

    def reap(self, kernel: _Kernel) -> None:
        try:
            os.waitpid(kernel.pid, 0)
        except ChildProcessError:
            pass
        self.kernels.remove(kernel)

    def end(self) -> None:
        """The managing process has gone: stop the kernels it owned, reap every one."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # ending already
        # Only the kernels' exits matter now: hung-up channels would wake every poll below.
        self.poller.unregister(self.control)
        for kernel in self.kernels:
            if kernel.channel is not None:
                self.poller.unregister(kernel.channel)
                kernel.channel.close()
                kernel.channel = None
        self.by_channel.clear()
        owned = [k for k in self.kernels if not k.independent]
        for kernel in owned:
            _kill_group(kernel.pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while any(not k.exited for k in owned) and time.monotonic() < deadline:
            for fd, _events in self.poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                if fd in self.by_pidfd:
                    kernel = self.by_pidfd[fd]
                    self.poller.unregister(fd)
                    del self.by_pidfd[fd]
                    os.close(fd)
                    kernel.pidfd, kernel.exited = None, True
        for kernel in owned:
            _kill_group(kernel.pid, signal.SIGKILL)  # what it left in its group, too
        for kernel in list(self.kernels):
            if kernel.exited or not kernel.independent:
                self.reap(kernel)


def _kill_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except OSError:
        pass


# ---------------------------------------------------------------------- the new kernel


def become_kernel(request: Record, fds: list[int]) -> None:
    """In the forked child, before anything of the kernel runs: make this process what a
    spawned kernel of the same spec would be (it leads its session already), then run the
    kernel's module as ``-m`` does."""
    _reset_signals(set(request["ignored"]))
    for target, fd in enumerate(fds[1:]):
        os.dup2(fd, target)  # dup2 makes 0, 1, 2 inheritable, as a spawned kernel's
    os.closerange(3, _fd_limit())  # the template's sockets, pidfds and the request's fds
    os.environ.clear()
    os.environ.update(_replay(request["imported_environment"], request["env"]))
    os.chdir(request["cwd"])
    _refresh_import_time_environment()
    _reseed()
    sys.argv = [request["module"], *request["args"]]  # argv[0] becomes the file, as with -m
    sys.orig_argv = list(request["argv"])
    if not sys.flags.safe_path:
        sys.path.insert(0, os.getcwd())  # as -m puts the working directory first
    import runpy
    import types

    sys.modules["__main__"] = types.ModuleType("__main__")  # the kernel's, not the template's
    # What "python -m module" runs: the module as __main__, argv[0] set to its file.
    runpy._run_module_as_main(request["module"], alter_argv=True)  # type: ignore[attr-defined]


def _environment_changes(before: dict[str, str], after: dict[str, str]) -> EnvironmentChanges:
    """What importing the preloads did to the environment: each variable set, changed or
    removed, with its value before (``None``: unset) and after (``None``: removed)."""
    names = set(before) | set(after)
    return [
        [n, before.get(n), after.get(n)] for n in sorted(names) if before.get(n) != after.get(n)
    ]


def _replay(changes: EnvironmentChanges, env: dict[str, str]) -> dict[str, str]:
    """*env* as the preloads' imports would have left it, had they run in the kernel: each
    change is made where the kernel's value is the one the template had before it (a module
    that sets a variable unless it is set leaves a kernel that sets it alone)."""
    env = dict(env)
    for name, old, new in changes:
        if env.get(name) != old:
            continue
        if new is None:
            del env[name]
        else:
            env[name] = new
    return env


def _reset_signals(ignored: set[int]) -> None:
    """Signal handling as after exec and an interpreter's start: every signal at its default,
    except those the managing process ignores (exec keeps them ignored) and those a Python
    interpreter ignores (SIGPIPE, SIGXFSZ); SIGINT raises KeyboardInterrupt unless ignored."""
    for signum in signal.valid_signals():
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        ignore = signum in PYTHON_IGNORES or (signum in ignored and signum not in PYTHON_IGNORES)
        try:
            signal.signal(signum, signal.SIG_IGN if ignore else signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # the C library's own real-time signals
    if signal.SIGINT not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _fd_limit() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 65536


def _refresh_import_time_environment() -> None:
    """ipykernel's application reads JPY_PARENT_PID and JPY_INTERRUPT_EVENT when its module is
    imported (in the template): give it the kernel's."""
    module = sys.modules.get("ipykernel.kernelapp")
    app = getattr(module, "IPKernelApp", None)
    if app is None:
        return
    for name, variable in (
        ("parent_handle", "JPY_PARENT_PID"),
        ("interrupt", "JPY_INTERRUPT_EVENT"),
    ):
        value = int(os.environ.get(variable) or 0)
        trait = app.class_traits().get(name)
        if trait is not None:
            trait.default_value = value
        initial = app.__dict__.get("_static_immutable_initial_values")
        if isinstance(initial, dict) and name in initial:
            initial[name] = value


def _reseed() -> None:
    """CPython's ``random`` reseeds itself at fork; numpy's global generator does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


# ---------------------------------------------------------------------- start


def main() -> tuple[Record, list[int]] | None:
    control = socket.socket(fileno=int(sys.argv[1]))
    preloads, warm = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    # The script's folder is not the kernel's: a kernel's path starts with its working directory.
    if not sys.flags.safe_path and sys.path and sys.path[0] == os.path.dirname(__file__):
        del sys.path[0]
    # SIGTERM (the guardian, a user) ends the template as the loss of its manager does.
    signal.signal(signal.SIGTERM, _stop)
    before = dict(os.environ)
    failed = _preload(preloads)
    _preload(warm)
    imported_environment = _environment_changes(before, dict(os.environ))
    # Objects alive now are the template's for good: the kernels' garbage collector leaves
    # them alone, so it does not write to (and copy) the pages they share with the template.
    gc.collect()
    gc.freeze()
    _send(
        control,
        {
            "ready": True,
            "pid": os.getpid(),
            "failed": failed,
            "threads": _thread_count(),
            "descriptors": _held_descriptors(control.fileno()),
        },
    )
    template = Template(control, imported_environment)
    try:
        return template.serve()
    except _Stop:
        template.end()
        return None


class _Stop(Exception):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop


if __name__ == "__main__":
    forked = main()
    if forked is not None:
        become_kernel(*forked)
