"""Fixtures of the container provisioner's tests: a private dockerd for the session, with the
test image built once, and a check that no test leaves a container behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ...helpers.dockerd import DockerDaemon, build_test_image, start_dockerd, stop_dockerd
from ...helpers.engines import need_binaries


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A dockerd of the session's own (temporary directories, its own socket), with the test
    image; skipped where Docker is not installed, unless KERNEL_NURSERY_REQUIRE names docker."""
    binaries = need_binaries("docker", "dockerd", "docker", "runc", "containerd")
    daemon = start_dockerd(binaries)
    try:
        build_test_image(daemon)
        yield daemon
    finally:
        stop_dockerd(daemon)


@pytest.fixture(scope="session")
def dockerd_bridge() -> Iterator[DockerDaemon]:
    """A second private dockerd, with a bridge of its own (for published ports), and the
    test image; skipped or failed as :func:`dockerd`."""
    binaries = need_binaries("docker", "dockerd", "docker", "runc", "containerd", "ip")
    daemon = start_dockerd(binaries, bridge=True)
    try:
        build_test_image(daemon)
        yield daemon
    finally:
        stop_dockerd(daemon)


@pytest.fixture
def docker_clean(dockerd: DockerDaemon) -> Iterator[DockerDaemon]:
    """The daemon, checked after the test: no container of kernel-nursery may be left on it
    (``ps -a --filter label=kernel-nursery.kernel-id`` is empty)."""
    before = set(dockerd.containers())
    yield dockerd
    left = set(dockerd.containers()) - before
    if left:
        dockerd.run("rm", "-f", *left, check=False)
    assert not left, f"test left containers: {sorted(left)}"
