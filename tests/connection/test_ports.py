"""Tests for kernel_nursery.connection._ports: port reservations."""

from __future__ import annotations

import threading

import pytest

from kernel_nursery import PortAllocationError
from kernel_nursery.connection import reserved_ports
from kernel_nursery.connection._ports import release_ports, reserve_ports


def test_reserved_ports_are_not_handed_out_again() -> None:
    """While reserved, a port is never returned by another reservation."""
    batches = [reserve_ports(transport="tcp", ip="127.0.0.1") for _ in range(20)]
    try:
        flat = [p for batch in batches for p in batch]
        assert len(flat) == len(set(flat)) == 100
    finally:
        for batch in batches:
            release_ports(transport="tcp", ip="127.0.0.1", ports=batch)
    assert not reserved_ports()


def test_concurrent_reservations_from_threads_do_not_collide() -> None:
    """Reservations from several threads (several event loops) stay distinct."""
    results: list[list[int]] = []

    def work() -> None:
        results.append(reserve_ports(transport="tcp", ip="127.0.0.1"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [p for batch in results for p in batch]
    release_ports(transport="tcp", ip="127.0.0.1", ports=flat)
    assert len(flat) == len(set(flat)) == 40


@pytest.mark.parametrize("ip", ["192.0.2.1", "not-an-address"])
def test_unbindable_ip_is_a_clear_error(ip: str) -> None:
    """An address that is not this machine's gives PortAllocationError and reserves nothing."""
    with pytest.raises(PortAllocationError, match=ip):
        reserve_ports(transport="tcp", ip=ip)
    assert not reserved_ports()


def test_ipv6_loopback() -> None:
    """tcp ports can be reserved on ::1."""
    ports = reserve_ports(transport="tcp", ip="::1")
    release_ports(transport="tcp", ip="::1", ports=ports)
    assert len(set(ports)) == 5


def test_ipc_prefix_too_long_for_a_socket_path() -> None:
    """An ipc prefix that would overflow a Unix socket path is refused before any launch."""
    with pytest.raises(PortAllocationError, match="Unix socket path"):
        reserve_ports(transport="ipc", ip="/tmp/" + "x" * 120)
    assert not reserved_ports()


def test_released_tcp_ports_rest_before_reuse() -> None:
    """A released tcp port is not handed out again while it rests (a dead kernel's connections
    on it may linger), though it no longer counts as reserved."""
    first = reserve_ports(transport="tcp", ip="127.0.0.1")
    release_ports(transport="tcp", ip="127.0.0.1", ports=first)
    assert not reserved_ports()
    later = [reserve_ports(transport="tcp", ip="127.0.0.1") for _ in range(200)]
    try:
        assert not set(first) & {p for batch in later for p in batch}
    finally:
        for batch in later:
            release_ports(transport="tcp", ip="127.0.0.1", ports=batch)


def test_holding_again_skips_a_port_another_program_listens_on() -> None:
    """hold_ports holds the reserved ports nothing listens on, skips one another program
    listens on (and ports not reserved, and ipc), and releasing them leaves nothing held."""
    import socket

    from kernel_nursery.connection import _ports

    ports = reserve_ports(transport="tcp", ip="127.0.0.1")
    try:
        _ports.unhold_ports(transport="tcp", ip="127.0.0.1", ports=ports)
        assert not set(ports) & set(_ports._held)
        with socket.socket() as thief:
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            thief.bind(("127.0.0.1", ports[0]))
            thief.listen()
            _ports.hold_ports(transport="tcp", ip="127.0.0.1", ports=[*ports, 1])
            _ports.hold_ports(transport="ipc", ip="/tmp/kn-x", ports=ports)
            _ports.hold_ports(transport="tcp", ip="not an ip", ports=ports)
        assert set(ports) & set(_ports._held) == set(ports[1:])
    finally:
        release_ports(transport="tcp", ip="127.0.0.1", ports=ports)
    assert not set(ports) & set(_ports._held) and not reserved_ports()
