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

Across processes: from its choice until its kernel is ready (:func:`unhold_ports`), a
reserved tcp port is *held* by a socket of ours, bound with ``SO_REUSEADDR`` and never
listening. Another kernel-nursery process tests its candidates with a plain bind, which that
socket refuses, so it chooses other ports; the kernel itself binds with ``SO_REUSEADDR``, as
libzmq (and the listeners of Java, Go, Rust and Node) do on Unix, which the hold allows. A
kernel that binds without ``SO_REUSEADDR`` would be refused its own port while it is held.
While a kernel is down between two incarnations that reuse its ports (a restart), they are held
again (:func:`hold_ports`). Other programs can still take a port between our choice and the
kernel's bind (the race is inherent to Jupyter's design, in which the kernel binds its own
ports): the kernel manager then starts the kernel again on new ports.
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
from .._platform import LINUX
from ._info import Transport

__all__ = [
    "hold_ports",
    "ports_in_use",
    "release_ports",
    "reserve_ports",
    "reserved_ports",
    "unhold_ports",
]

# tcp ports are keyed by number alone: a port taken on 127.0.0.1 is also unusable on 0.0.0.0.
# ipc endpoints are keyed by their path prefix and number.
_Key = tuple[str, int]

_lock = threading.Lock()  # a sync lock: reservations may come from several event loops' threads
_reserved: set[_Key] = set()
# tcp ports released recently, with when: a dead kernel's connections on its ports linger
# (FIN_WAIT_2, TIME_WAIT) for up to a minute, refusing a bind without SO_REUSEADDR meanwhile.
_released: dict[int, float] = {}
# tcp ports reserved and held by a socket of ours until their kernel has bound them (_hold).
_held: dict[int, socket.socket] = {}
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

    For ``tcp`` the ports are chosen at random below the ephemeral range (or by the operating
    system, a bind to port 0, where there is no room below it), skipped when this process already
    reserved them or any socket holds them, and then *held* by a socket of ours bound with
    ``SO_REUSEADDR`` (see :func:`unhold_ports`), so that another kernel-nursery process does
    not choose them too while their kernel starts.
    For ``ipc`` the numbers are the lowest ones whose ``{ip}-{n}`` file does not exist.

    Raises:
        PortAllocationError: *ip* cannot be bound here, or no free ports were found.
    """
    with _lock:
        if transport == "ipc":
            ports = _free_ipc_numbers(ip, count)
        else:
            holders = _free_tcp_ports(ip, count)
            _held.update(holders)
            ports = list(holders)
        _reserved.update(_key(transport, ip, p) for p in ports)
        return ports


def unhold_ports(*, transport: Transport, ip: str, ports: Iterable[int]) -> None:
    """Stop holding reserved tcp ports at the OS level, once their kernel has bound them (they
    stay reserved in this process). Does nothing for ports not held, and for ipc."""
    with _lock:
        for port in ports:
            holder = _held.pop(port, None) if transport == "tcp" else None
            if holder is not None:
                holder.close()


def hold_ports(*, transport: Transport, ip: str, ports: Iterable[int]) -> None:
    """Hold reserved tcp ports at the OS level again, as :func:`reserve_ports` did, while
    their kernel is down and a restart will reuse them: once the kernel has died, nothing
    listens on them, and without a hold another kernel-nursery process could choose one (its
    probing bind alone, for a moment, is enough to make the restarting kernel's bind fail).

    Ports not reserved here, or held already, are skipped, as is ipc; a port that another
    program took in the meantime cannot be held and is skipped too (the restart then meets
    the conflict and the kernel manager starts the kernel on new ports).
    """
    if transport != "tcp":
        return
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        return
    with _lock:
        for port in ports:
            if ("tcp", port) in _reserved and port not in _held:
                holder = _hold(family, ip, port)
                if holder is not None:
                    _held[port] = holder


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
                    holder = _held.pop(port, None)
                    if holder is not None:
                        holder.close()


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
    if not LINUX:
        return None
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        return None
    return low, high


#: The lowest port handed to a kernel: below are the well-known and commonly used low ports.
_LOWEST_PORT = 10000


def _free_tcp_ports(ip: str, count: int) -> dict[int, socket.socket]:
    """*count* free ports on *ip*, each with the socket that now holds it (see :func:`_hold`)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    except ValueError:
        raise PortAllocationError(
            f"cannot reserve tcp ports: {ip!r} is not an IP address"
        ) from None
    ephemeral = _ephemeral_range()
    # Below the ephemeral range when there is room for it; else let the OS choose (port 0).
    below = ephemeral is not None and ephemeral[0] - _LOWEST_PORT >= 1000
    ports: dict[int, socket.socket] = {}
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
            # A plain bind, closed at once: refused for a port that any socket holds (a
            # listening kernel, another manager's hold, a connection in TIME_WAIT).
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((ip, candidate))
                except OSError as exc:
                    if candidate and exc.errno in _IN_USE:
                        continue  # taken: try another
                    raise PortAllocationError(
                        f"cannot reserve tcp ports on {ip}: {exc.strerror or exc}; "
                        "is it an address of this machine?"
                    ) from exc
                port = probe.getsockname()[1]
            if port in ports or ("tcp", port) in _reserved or _resting(port):
                continue
            holder = _hold(family, ip, port)
            if holder is not None:
                ports[port] = holder
    except BaseException:
        for holder in ports.values():
            holder.close()
        raise
    return ports


def _hold(family: socket.AddressFamily, ip: str, port: int) -> socket.socket | None:
    """A socket bound to *port* with ``SO_REUSEADDR``, never listening: until it is closed,
    other programs' plain binds of the port fail (kernel-nursery's choice of ports in another
    process among them), while the kernel, which binds with ``SO_REUSEADDR`` as libzmq does, can
    bind and listen on it. ``None`` if the port was taken in the meantime."""
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind((ip, port))
    except OSError:
        holder.close()
        return None
    return holder


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
