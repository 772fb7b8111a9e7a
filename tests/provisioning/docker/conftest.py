"""Fixtures of the container provisioner's tests: a private dockerd for the session (and one
with a bridge of its own, for published ports), Podman on private storage, each with the test
image built once, and a check that no test leaves a container behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ...helpers.dockerd import (
    DockerDaemon,
    Engine,
    PodmanEngine,
    build_test_image,
    start_dockerd,
    start_podman,
    stop_dockerd,
    stop_podman,
)
from ...helpers.engines import need_binaries


def _daemon(*, bridge: bool) -> Iterator[DockerDaemon]:
    binaries = need_binaries("docker", "dockerd", "docker", "runc", "containerd")
    if bridge:
        binaries.update(need_binaries("docker", "ip"))
    daemon = start_dockerd(binaries, bridge=bridge)
    try:
        build_test_image(daemon)
        yield daemon
    finally:
        stop_dockerd(daemon)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A dockerd of the session's own (temporary directories, its own socket), with the test
    image; skipped where Docker is not installed, unless KERNEL_NURSERY_REQUIRE names docker."""
    yield from _daemon(bridge=False)


@pytest.fixture(scope="session")
def dockerd_bridge() -> Iterator[DockerDaemon]:
    """A second private dockerd, with a bridge of its own (for published ports), and the
    test image; skipped or failed as :func:`dockerd`."""
    yield from _daemon(bridge=True)


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanEngine]:
    """Podman on storage of the session's own, with the test image; skipped where Podman is
    not installed, unless KERNEL_NURSERY_REQUIRE names podman."""
    binaries = need_binaries("podman", "podman", "runc")
    engine = start_podman(binaries)
    try:
        yield engine
    finally:
        stop_podman(engine)


@pytest.fixture(scope="session", autouse=True)
def _daemon_first(request: pytest.FixtureRequest) -> None:
    """Start the session's dockerd before any test's own fixtures, even for tests that ask for
    it by name (:func:`engine_clean`): the daemon is a child of this process, and the check
    that a test leaves no child behind looks before the test's function-scoped fixtures.
    Where Docker is missing its skip is remembered for the tests that need it."""
    try:
        request.getfixturevalue("dockerd")
    except pytest.skip.Exception:
        pass


def _clean(engine: Engine) -> Iterator[Engine]:
    before = set(engine.containers())
    yield engine
    left = set(engine.containers()) - before
    if left:
        engine.run("rm", "-f", *left, check=False)
    assert not left, f"test left containers: {sorted(left)}"


@pytest.fixture
def docker_clean(dockerd: DockerDaemon) -> Iterator[Engine]:
    """The daemon, checked after the test: no container of kernel-nursery may be left on it
    (``ps -a --filter label=kernel-nursery.kernel-id`` is empty)."""
    yield from _clean(dockerd)


@pytest.fixture(params=["docker", "podman"])
def engine_clean(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each engine in turn (Docker's private daemon, then Podman), checked after the test as
    :func:`docker_clean`."""
    engine: Engine = request.getfixturevalue("dockerd" if request.param == "docker" else "podman")
    yield from _clean(engine)
