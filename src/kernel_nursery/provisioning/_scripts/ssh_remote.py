"""The remote side of an SSH kernel: run on the remote host, it starts the kernel and ties the
kernel's life to the SSH channel.

:class:`~kernel_nursery.provisioning.SSHProvisioner` runs ``exec PYTHON -I -S -c BOOT N`` on the
remote host; the bootstrap reads exactly N bytes from standard input (this file's source) and
executes them. Everything else travels on the channel too, never in argv:

Standard input, after the source, carries JSON lines from the local side:

``{"kernel_id", "connection_info", "argv", "kernel_name", "env", "cwd", "grace"}``
    the first line: what to start. ``argv`` is a kernel spec's argv (``{connection_file}``,
    ``{resource_dir}`` and ``{prefix}`` substituted here, ``python``/``python3`` meaning this
    interpreter), or ``null`` with ``kernel_name`` naming a kernel spec installed on this host.
    ``connection_info`` holds the key; it is written to a file of mode 0600 in a fresh private
    directory, removed at the end (by a small watchdog process if this script is killed
    outright, unless the kernel is ``independent`` and so outlives it).
``{"op": "signal", "name": "SIGINT"}``
    send that signal to the kernel's process group (by name: numbers differ between systems).

End of file on standard input means the local side is gone (its process ended, or the
connection dropped): the kernel's process group gets SIGTERM, ``grace`` seconds, then SIGKILL.
SIGTERM to this script (the remote host shutting down, an administrator) does the same, so the
kernel and its connection file go with it. SIGINT and SIGHUP are caught and ignored here, but
the kernel starts with them as they were.

Standard output carries JSON lines to the local side: ``{"event": "started", "pid": ...}``
once the kernel runs, ``{"event": "exit", "status": ...}`` when it has exited, or
``{"event": "error", "kind": ..., "message": ...}`` when it could not start (``kind``:
``ports-in-use``, ``no-kernel``, ``bad-config``). The kernel's own standard output goes to
standard error, which SSH passes through, so nothing the kernel prints can be taken for a
status line. The kernel gets ``JPY_PARENT_PID`` set to this process (kernels such as
ipykernel then exit by themselves if it dies).

Waiting is event-driven: a thread waits for the kernel (``waitpid``) and writes to a pipe; the
main thread polls that pipe and standard input, with no timeout. Any POSIX Python 3.8+ with
nothing but its standard library runs this; it is never imported by the package.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# As kernel_nursery.provisioning._base._KERNEL_ID: what may name a connection file.
_KERNEL_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")
_KILL_WAIT = 5.0
# As kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS: the status of a kernel we did not start.
_UNKNOWN_STATUS = -255


def send(event: dict) -> None:  # type: ignore[type-arg]
    """One status line to the local side; a closed channel is not an error here."""
    try:
        os.write(1, (json.dumps(event) + "\n").encode())
    except OSError:
        pass


def fail(kind: str, message: str) -> int:
    send({"event": "error", "kind": kind, "message": message})
    return 3


def ports_in_use(ip: str, ports: list[int]) -> list[int]:
    """The ports a socket on this host listens on now. Bound with SO_REUSEADDR, as the kernel
    (libzmq) binds: connections of an earlier kernel lingering in TIME_WAIT do not count."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    taken.append(port)
                else:
                    raise
    return taken


def data_dirs(environ: dict[str, str]) -> list[str]:
    """Jupyter's data directories on this host, in Jupyter's order (JUPYTER_PATH, user,
    environment, system), as the kernel's environment *environ* sets them."""
    dirs = [p for p in environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    user = environ.get("JUPYTER_DATA_DIR")
    if not user:
        if sys.platform == "darwin":
            user = os.path.expanduser("~/Library/Jupyter")
        else:
            xdg = environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
            user = os.path.join(xdg, "jupyter")
    dirs.append(user)
    dirs.append(os.path.join(env_prefix(), "share", "jupyter"))
    dirs.extend(["/usr/local/share/jupyter", "/usr/share/jupyter"])
    return dirs


def env_prefix() -> str:
    """This Python's environment, as ``sys.prefix`` would say without ``-S``: a virtual
    environment is found by its pyvenv.cfg (beside the interpreter, or one level up), which
    the site module, disabled here, would have read."""
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    for folder in (exe_dir, os.path.dirname(exe_dir)):
        if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            return folder
    return sys.prefix


def find_spec(name: str, environ: dict[str, str]) -> tuple[list[str], str, dict[str, str]] | str:
    """The argv, resource directory and env of kernel spec *name*, or why it cannot be used."""
    for base in data_dirs(environ):
        folder = os.path.join(base, "kernels", name)
        path = os.path.join(folder, "kernel.json")
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
            argv = spec["argv"]
            env = spec.get("env") or {}
            if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
                return f"{path}: 'argv' is not a non-empty list of strings"
            if not isinstance(env, dict):
                return f"{path}: 'env' is not an object"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{path}: unreadable kernel spec ({exc})"
        return argv, folder, {str(k): str(v) for k, v in env.items()}
    return f"no kernel spec named {name!r} on this host"


def substitute(argv: list[str], fields: dict[str, str]) -> list[str]:
    cmd = list(argv)
    major, minor = sys.version_info[:2]
    if cmd and cmd[0] in ("python", f"python{major}", f"python{major}.{minor}"):
        cmd[0] = sys.executable
    out = []
    for arg in cmd:
        for name, value in fields.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out


class Kernel:
    """The kernel process and a file descriptor that becomes readable when it exits."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.status: int | None = None
        self.read_end = -1

    @classmethod
    def spawn(cls, popen: subprocess.Popen) -> Kernel:  # type: ignore[type-arg]
        """Our child: a thread awaits its exit status and writes to a pipe."""
        kernel = cls(popen.pid)
        kernel.read_end, write_end = os.pipe()

        def wait() -> None:
            kernel.status = popen.wait()
            os.write(write_end, b"x")

        threading.Thread(target=wait, daemon=True).start()
        return kernel

    @classmethod
    def adopt(cls, pid: int, start_time: int | None) -> Kernel | tuple[str, str]:
        """A kernel started by another launcher: watched through a pidfd (Linux), readable
        at its exit, whose status only its parent learns. Else (error kind, message)."""
        if not hasattr(os, "pidfd_open"):
            return "no-kernel", "taking a kernel over needs Linux pidfds on the remote host"
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return "no-kernel", f"the kernel (pid {pid}) is gone"
        if start_time is not None and _start_time(pid) != start_time:
            os.close(pidfd)
            return (
                "no-kernel",
                f"the kernel (pid {pid}) is gone (its pid now names another process)",
            )
        try:
            # Its group is what gets signalled: the kernel leads one (as launched here), and
            # is neither this script nor what runs it.
            leads = os.getpgid(pid) == pid and pid not in (os.getpid(), os.getppid())
        except OSError:
            leads = True  # gone just now: nothing will be signalled
        if not leads:
            os.close(pidfd)
            return "bad-config", f"pid {pid} does not lead a process group of its own: no kernel"
        kernel = cls(pid)
        kernel.read_end = pidfd
        return kernel

    def exited(self) -> None:
        if self.status is None:
            self.status = _UNKNOWN_STATUS

    def signal_group(self, signum: int) -> None:
        # The kernel leads its group: while it runs (or has just exited), the number is its.
        try:
            os.killpg(self.pid, signum)
        except OSError:
            if self.status is None:
                try:
                    os.kill(self.pid, signum)
                except OSError:
                    pass

    def wait(self, seconds: float) -> bool:
        poller = select.poll()
        poller.register(self.read_end, select.POLLIN)
        done = bool(poller.poll(seconds * 1000))
        if done:
            self.exited()
        return done


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, what the kernel's child process runs before exec so that it gets SIGKILL if
    this script dies without stopping it (SIGKILL, a crash): the kernel holds the channel's
    standard error, and would otherwise keep the channel open, its owner waiting, and itself
    running. ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return preexec


# Twin of the library's _process.process_start_time (and guardian.py's _stat_fields): this script
# runs alone on the remote host and cannot import the package.
def _start_time(pid: int) -> int | None:
    """/proc/PID/stat field 22 (Linux), which tells a process from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def attach(reader: Lines, config: dict) -> int:  # type: ignore[type-arg]
    """Take over a kernel that another launcher started (get/load_provisioner_info)."""
    try:
        pid = int(config["attach"]["pid"])
        start_time = config["attach"].get("start_time")
    except (KeyError, TypeError, ValueError) as exc:
        return fail("bad-config", f"unreadable attach request: {exc}")
    kernel = Kernel.adopt(pid, start_time)
    if isinstance(kernel, tuple):
        return fail(*kernel)
    send({"event": "started", "pid": pid, "start_time": start_time})
    status = serve(reader, kernel, float(config.get("grace", 2.0)), bool(config.get("independent")))
    if status is None:
        return 0
    # The launcher left the connection file to the kernel: it goes with the kernel, if it is
    # the kernel's (a launcher's private directory, the key of the kernel taken over), not
    # any file the request names.
    path = config["attach"].get("connection_file")
    if isinstance(path, str) and path and _holds_key(path, config["attach"].get("key")):
        _unlink(path)
        folder = os.path.dirname(path)
        if os.path.basename(folder).startswith("kernel-nursery-"):
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if status == _UNKNOWN_STATUS else _exit_code(status)


# Twin of local/_provisioner.py _kernel_file (the same non-blocking, same-inode read); this
# script cannot import the package.
def _holds_key(path: str, key: object) -> bool:
    """Whether *path* is a connection file written by a launcher (in its private directory)
    holding *key*. Read without blocking, at most 64 KiB."""
    if not isinstance(key, str) or not os.path.basename(os.path.dirname(path)).startswith(
        "kernel-nursery-"
    ):
        return False
    try:
        # Looked at before it is opened: opening a FIFO or a device has effects of its own.
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return False
    try:
        found_stat = os.fstat(fd)
        same = (found_stat.st_dev, found_stat.st_ino) == (before.st_dev, before.st_ino)
        data = os.read(fd, 65536) if same and stat.S_ISREG(found_stat.st_mode) else b""
        found = json.loads(data)
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return isinstance(found, dict) and found.get("key") == key


# Twin of guardian.py _unlink: each script stands alone.
def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _exit_code(status: int) -> int:
    # ssh exits with this status too: the kernel's, or 128 + the signal that killed it.
    return status if 0 <= status <= 255 else 128 + (-status % 128)


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing. Not SIG_IGN: an ignored signal stays ignored across exec,
    and the kernel must start with SIGINT and SIGHUP as they were (a Python kernel without a
    handler of its own then raises KeyboardInterrupt on interrupt)."""


#: Readable once SIGTERM has come (the remote system shutting down, an administrator's kill):
#: :func:`serve` then ends the kernel as when the channel closes. -1 until :func:`main` sets it.
_TERMINATED = -1


def _catch_signals() -> None:
    global _TERMINATED
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _ignore)  # the local side decides, through the channel
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    os.set_blocking(read_end, False)
    signal.set_wakeup_fd(write_end)  # the number of each caught signal, written there
    signal.signal(signal.SIGTERM, _ignore)
    _TERMINATED = read_end


def _terminated() -> bool:
    """Whether SIGTERM came (SIGINT and SIGHUP, written to the same pipe, do not count)."""
    try:
        data = os.read(_TERMINATED, 512)
    except OSError:
        return False
    return bytes([signal.SIGTERM]) in data


def main() -> int:
    _catch_signals()
    reader = Lines(0)
    line = reader.next_line()
    if line is None:
        return 2
    try:
        config = json.loads(line)
        if config.get("attach"):
            return attach(reader, config)
        info = config["connection_info"]
        ports = [int(info[name]) for name in _PORT_NAMES]
        ip = str(info["ip"])
        grace = float(config.get("grace", 2.0))
        independent = bool(config.get("independent"))
        kernel_id = str(config.get("kernel_id") or "ssh")
    except (ValueError, KeyError, TypeError) as exc:
        return fail("bad-config", f"unreadable launch request: {exc}")
    if not _KERNEL_ID.match(kernel_id):  # it names the connection file (the local side checks)
        return fail("bad-config", f"invalid kernel id {kernel_id!r:.80}")

    taken = ports_in_use(ip, ports)
    if taken:
        return fail("ports-in-use", ", ".join(map(str, taken)))

    found = _kernel_command(config, independent)
    if isinstance(found, str):
        return fail("no-kernel", found)
    argv, resource_dir, env = found

    # Mode 0700. Unless the kernel may outlive this script, a watchdog removes it should this
    # script die without doing so (SIGKILL).
    folder = tempfile.mkdtemp(prefix="kernel-nursery-") if independent else _watched_folder()
    try:
        path = os.path.join(folder, f"kernel-{kernel_id}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        fields = {"connection_file": path, "resource_dir": resource_dir, "prefix": env_prefix()}
        cmd = substitute(argv, fields)
        popen = _spawn(cmd, config.get("cwd") or None, env, independent)
        if isinstance(popen, str):
            return fail("no-kernel", popen)
        kernel = Kernel.spawn(popen)
        send(
            {
                "event": "started",
                "pid": popen.pid,
                "start_time": _start_time(popen.pid),
                "connection_file": path,
            }
        )
        status = serve(reader, kernel, grace, independent)
        if status is None:
            folder = ""  # the kernel lives on, and may still be reading its connection file
            return 0
        return _exit_code(status)
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def _kernel_command(
    config: dict[str, Any], independent: bool
) -> tuple[list[str], str, dict[str, str]] | str:
    """The kernel's argv, resource directory and environment, from the launch request: its
    argv, or the remote kernel spec it names; or why there is none (no such spec)."""
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
    resource_dir = ""
    if config.get("argv"):
        argv = [str(a) for a in config["argv"]]
    else:
        found = find_spec(str(config.get("kernel_name") or ""), env)
        if isinstance(found, str):
            return found
        argv, resource_dir, spec_env = found
        env.update(spec_env)
        env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
    if independent:
        env.pop("JPY_PARENT_PID", None)
    else:
        env["JPY_PARENT_PID"] = str(os.getpid())
    return argv, resource_dir, env


def _spawn(
    cmd: list[str], cwd: str | None, env: dict[str, str], independent: bool
) -> subprocess.Popen[bytes] | str:
    """Start the kernel in a session of its own (it leads its process group), tied to this
    script unless *independent*; or say why it cannot be run."""
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=2,  # standard output is the status channel
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=None if independent else _die_with_parent(),
        )
    except OSError as exc:
        if cwd is not None and not os.path.isdir(cwd):
            return f"working directory {cwd} does not exist"
        return f"cannot run {cmd[0]!r}: {exc.strerror or exc}"


def _watched_folder() -> str:
    """A new private temporary directory, made by a watchdog process that removes it once this
    script has ended, however it ended: the watchdog waits for the end of file on a pipe whose
    write end only this script holds (not inherited by the kernel: pipes are close-on-exec).
    It runs in a session of its own, with nothing of the channel open, so it neither holds the
    channel open nor is signalled with this script's group. Where it cannot be started, the
    directory is made here, unwatched."""
    try:
        paths_in, paths_out = os.pipe()
        watch_in, watch_out = os.pipe()
    except OSError:
        return tempfile.mkdtemp(prefix="kernel-nursery-")
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the watchdog
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(paths_in)
            os.close(watch_out)
            folder = tempfile.mkdtemp(prefix="kernel-nursery-")
            os.write(paths_out, folder.encode() + b"\n")
            os.close(paths_out)
            while os.read(watch_in, 512):
                pass
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os._exit(0)
    os.close(paths_out)
    os.close(watch_in)
    answer = b""
    if pid > 0:
        while not answer.endswith(b"\n"):
            chunk = os.read(paths_in, 4096)
            if not chunk:
                break
            answer += chunk
    os.close(paths_in)
    if not answer.endswith(b"\n"):
        os.close(watch_out)
        return tempfile.mkdtemp(prefix="kernel-nursery-")
    # Held until this process ends; the watchdog is not awaited (it is not ours to reap
    # once this script has gone, and ends at once then).
    _WATCHDOG.append(watch_out)
    return answer[:-1].decode()


#: The write end of the watchdog's pipe, held for the life of this script.
_WATCHDOG: list[int] = []


class Lines:
    """JSON lines from a file descriptor, read without blocking on more than is there."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""
        self.eof = False

    def next_line(self) -> str | None:
        while b"\n" not in self.pending:
            if not self.fill():
                return None
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()

    def fill(self) -> bool:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.pending += data
        return True

    def ready_lines(self) -> list[str]:
        *lines, self.pending = self.pending.split(b"\n")
        return [line.decode() for line in lines]


def serve(reader: Lines, kernel: Kernel, grace: float, independent: bool) -> int | None:
    """Follow commands until the kernel exits or the channel closes; return its status.
    An *independent* kernel is left running when the channel closes: ``None``."""
    poller = select.poll()
    poller.register(reader.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(kernel.read_end, select.POLLIN)
    if _TERMINATED >= 0:
        poller.register(_TERMINATED, select.POLLIN)
    # Commands that came with the launch request, in the same read.
    handle(reader.ready_lines(), kernel)
    while True:
        events = dict(poller.poll())
        if kernel.read_end in events:
            break
        gone = _TERMINATED in events and _terminated()  # this script is asked to end
        if gone or reader.fd in events:
            if not gone and reader.fill():
                handle(reader.ready_lines(), kernel)
            elif independent:
                return None  # the channel is gone; the kernel lives on, for whoever takes over
            else:
                # The channel is gone (or this script was told to end, SIGTERM): the kernel
                # must not outlive it.
                poller.unregister(reader.fd)
                kernel.signal_group(signal.SIGTERM)
                if not kernel.wait(grace):
                    kernel.signal_group(signal.SIGKILL)
                    kernel.wait(_KILL_WAIT)
                break
    kernel.wait(_KILL_WAIT)
    # What the kernel left in its group goes with it, as for a local kernel.
    try:
        os.killpg(kernel.pid, signal.SIGKILL)
    except OSError:
        pass
    status = kernel.status if kernel.status is not None else -signal.SIGKILL
    send({"event": "exit", "status": status})
    return status


def handle(lines: list[str], kernel: Kernel) -> None:
    for line in lines:
        try:
            command = json.loads(line)
        except ValueError:
            continue
        if isinstance(command, dict) and command.get("op") == "signal":
            signum = getattr(signal, str(command.get("name")), None)
            if isinstance(signum, signal.Signals) and kernel.status is None:
                kernel.signal_group(signum)


if __name__ == "__main__":
    sys.exit(main())
