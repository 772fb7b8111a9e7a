"""Port reservations: no port (or ipc endpoint) is handed to two live kernels of this process.

A kernel binds its ports itself, after it starts; between our choice and its bind nothing stops
another program from taking a port (that race is inherent to Jupyter's design, see the security
page of the docs). What this module guarantees is narrower and checkable: while a port is
reserved here, kernel-nursery does not hand it out again, so two kernels launched concurrently
from one process never collide with each other.

Where the operating system says which ports it uses for outgoing connections (Linux:
``ip_local_port_range``), tcp ports are chosen *below* that range. A client connects to a
starting kernel before the kernel has bound its ports, retrying until it has; each attempt
takes an ephemeral local port, which could be one of the very ports reserved for the kernel
(the kernel's bind then fails with "address already in use", or the client connects to
itself). Ports outside the ephemeral range are never taken that way. And a port one of our
kernels used rests for :data:`PORT_REST` seconds before it is handed out again: the dead
kernel's connections on it linger (FIN_WAIT_2, TIME_WAIT) for up to a minute, and a kernel
that binds without SO_REUSEADDR would be refused the port meanwhile (libzmq sets it; this is
for kernels that do not).

Across processes nothing is shared: two programs may still choose the same free port in the
moment before either kernel binds it. That race is inherent to Jupyter's design, in which the
kernel, not its manager, binds the ports.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable

from .._errors import PortAllocationError
from ._info import Transport

__all__ = ["ports_in_use", "release_ports", "reserve_ports", "reserved_ports"]

# tcp ports are keyed by number alone: a port taken on 127.0.0.1 is also unusable on 0.0.0.0.
# ipc endpoints are keyed by their path prefix and number.
_Key = tuple[str, int]

_lock = threading.Lock()  # a sync lock: reservations may come from several event loops' threads
_reserved: set[_Key] = set()
# tcp ports released recently, with when: a dead kernel's connections on its ports linger
# (FIN_WAIT_2, TIME_WAIT) for up to a minute, refusing a bind without SO_REUSEADDR meanwhile.
_released: dict[int, float] = {}
#: Seconds a released tcp port rests before it is handed out again (TCP's TIME_WAIT length).
PORT_REST = 60.0

_MAX_ATTEMPTS = 200
_IN_USE = {errno.EADDRINUSE, errno.EACCES}
# A Unix socket's path fits in sockaddr_un.sun_path: 108 bytes on Linux, 104 on BSDs and macOS,
# including the final NUL.
_MAX_IPC_PATH = 107 if sys.platform.startswith("linux") else 103


def _key(transport: Transport, ip: str, port: int) -> _Key:
    return ("tcp", port) if transport == "tcp" else (ip, port)


def reserve_ports(*, transport: Transport, ip: str, count: int = 5) -> list[int]:
    """Reserve *count* distinct ports (``tcp``) or endpoint numbers (``ipc``) for one kernel.

    For ``tcp`` the ports are chosen by the operating system (a bind to port 0 on *ip*), held
    open together so that they differ, and skipped when this process already reserved them.
    For ``ipc`` the numbers are the lowest ones whose ``{ip}-{n}`` file does not exist.

    Raises:
        PortAllocationError: *ip* cannot be bound here, or no free ports were found.
    """
    with _lock:
        if transport == "ipc":
            ports = _free_ipc_numbers(ip, count)
        else:
            ports = _free_tcp_ports(ip, count)
        _reserved.update(_key(transport, ip, p) for p in ports)
        return ports


def release_ports(*, transport: Transport, ip: str, ports: Iterable[int]) -> None:
    """Return ports to the pool (tcp ports after :data:`PORT_REST` seconds). Releasing a port
    that is not reserved does nothing."""
    now = time.monotonic()
    with _lock:
        for port in ports:
            key = _key(transport, ip, port)
            if key in _reserved:
                _reserved.discard(key)
                if transport == "tcp":
                    _released[port] = now


def reserved_ports() -> frozenset[tuple[str, int]]:
    """The reservations held now, as ``("tcp", port)`` or ``(ipc_prefix, n)`` pairs.

    Meant for diagnostics and tests: after every kernel of this process has been cleaned up,
    it is empty.
    """
    with _lock:
        return frozenset(_reserved)


def ports_in_use(*, transport: Transport, ip: str, ports: Iterable[int]) -> list[int]:
    """Which of *ports* some socket on this machine holds now (tcp only; ``[]`` for ipc).

    Used after a kernel died before it was ready, to tell whether another program took one
    of its ports in the moment between our choice and the kernel's bind. The probe binds with
    ``SO_REUSEADDR``, as libzmq does, so what the dead kernel left in ``TIME_WAIT`` does not
    count: only a socket that listens on the port (or holds it without ``SO_REUSEADDR``) does.
    An address that is not this machine's gives ``[]``.
    """
    if transport != "tcp":
        return []
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        return []
    taken = []
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((ip, port))
            except OSError as exc:
                if exc.errno in _IN_USE:
                    taken.append(port)
                elif exc.errno == errno.EADDRNOTAVAIL:
                    return []
    return taken


def _ephemeral_range() -> tuple[int, int] | None:
    """The ports the OS assigns to outgoing connections, where it says (Linux)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None
    return low, high


#: The lowest port handed to a kernel: below are the well-known and commonly used low ports.
_LOWEST_PORT = 10000


def _free_tcp_ports(ip: str, count: int) -> list[int]:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        raise PortAllocationError(
            f"cannot reserve tcp ports: {ip!r} is not an IP address"
        ) from None
    ephemeral = _ephemeral_range()
    # Below the ephemeral range when there is room for it; else let the OS choose (port 0).
    below = ephemeral is not None and ephemeral[0] - _LOWEST_PORT >= 1000
    held: list[socket.socket] = []
    ports: list[int] = []
    attempts = 0
    try:
        while len(ports) < count:
            attempts += 1
            if attempts > _MAX_ATTEMPTS:
                raise PortAllocationError(f"no {count} free tcp ports found on {ip}")
            candidate = 0  # let the OS choose
            if below and ephemeral is not None:
                candidate = _LOWEST_PORT + secrets.randbelow(ephemeral[0] - _LOWEST_PORT)
            if candidate in ports or ("tcp", candidate) in _reserved or _resting(candidate):
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            held.append(sock)  # kept open until we are done, so the ports differ
            try:
                sock.bind((ip, candidate))
            except OSError as exc:
                if candidate and exc.errno in _IN_USE:
                    continue  # taken: try another
                raise PortAllocationError(
                    f"cannot reserve tcp ports on {ip}: {exc.strerror or exc}; "
                    "is it an address of this machine?"
                ) from exc
            port = sock.getsockname()[1]
            if ("tcp", port) not in _reserved and not _resting(port):
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _resting(port: int) -> bool:
    """Whether *port* was released less than PORT_REST seconds ago (forgets older ones)."""
    released = _released.get(port)
    if released is None:
        return False
    if time.monotonic() - released < PORT_REST:
        return True
    del _released[port]
    return False


def _free_ipc_numbers(prefix: str, count: int) -> list[int]:
    longest = len(os.fsencode(f"{prefix}-65535"))
    if longest > _MAX_IPC_PATH:
        raise PortAllocationError(
            f"ipc endpoint paths {prefix}-N would be up to {longest} bytes, more than the "
            f"{_MAX_IPC_PATH} a Unix socket path may have; use a shorter ip prefix (or a "
            "shorter JUPYTER_RUNTIME_DIR)"
        )
    numbers: list[int] = []
    n = 0
    while len(numbers) < count:
        n += 1
        if n > 65535:
            raise PortAllocationError(f"no {count} free ipc endpoints for prefix {prefix!r}")
        if (prefix, n) not in _reserved and not os.path.exists(f"{prefix}-{n}"):
            numbers.append(n)
    return numbers
