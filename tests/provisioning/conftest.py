"""Fixtures of the provisioning tests: a throwaway sshd for the SSH provisioner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..helpers.engines import need_binaries
from ..helpers.sshd import SSHServer, start_sshd, stop_sshd, wait_gone


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """An sshd on loopback, with its own keys and client config, for the whole session."""
    binaries = need_binaries("ssh", "ssh", "sshd", "ssh-keygen")
    server = start_sshd(tmp_path_factory.mktemp("sshd"), binaries)
    try:
        yield server
    finally:
        stop_sshd(server)


@pytest.fixture
def remote_clean(sshd: SSHServer) -> Iterator[SSHServer]:
    """The sshd, checked after the test: nothing may be left running on the "remote side"
    (session processes and what they ran end within seconds of their connection's end)."""
    yield sshd
    left = wait_gone(sshd.descendants(), timeout=15)
    assert not left, f"test left processes on the remote side: {sorted(left)}"
