"""Code run inside a kernel by the parity tests: what the kernel sees, as one JSON line."""

from __future__ import annotations

import json
import os
import resource
import signal
import sys


def _disposition(signum):
    handler = signal.getsignal(signum)
    if handler == signal.SIG_DFL:
        return "default"
    if handler == signal.SIG_IGN:
        return "ignore"
    if handler is None:
        return "foreign"
    return getattr(handler, "__qualname__", type(handler).__name__)


def _socket_kinds():
    """Socket inode -> its kind: tcp listening or connected, unix."""
    kinds = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/self/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            state = "listen" if fields[3] == "0A" else "connected"
            kinds[fields[9]] = f"tcp {state}"
    try:
        lines = open("/proc/self/net/unix").read().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        kinds[fields[6]] = "unix"
    return kinds


def _descriptors():
    sockets = _socket_kinds()
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else target
        if kind == "anon_inode":
            kind = target  # anon_inode:[eventfd], [eventpoll], [pidfd]...
        if kind == "socket":
            kind = "socket " + sockets.get(target[8:-1], "other")
        found[name] = kind
    return found


def _limits():
    return {
        name: list(resource.getrlimit(getattr(resource, name)))
        for name in dir(resource)
        if name.startswith("RLIMIT_")
    }


SEEN = {
    "environ": dict(os.environ),
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "orig_argv": sys.orig_argv,
    "path": sys.path,
    "executable": sys.executable,
    "flags": list(sys.flags),
    "signals": {int(s): _disposition(s) for s in signal.valid_signals()},
    "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
    "descriptors": _descriptors(),
    "standard": {str(fd): os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)},
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "pgid": os.getpgrp(),
    "sid": os.getsid(0),
    "limits": _limits(),
    "umask": os.umask(os.umask(0)),
    "main": sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__")),
}
print(json.dumps(SEEN))
