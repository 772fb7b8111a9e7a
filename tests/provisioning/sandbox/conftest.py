"""Fixtures for the sandbox provisioner's tests: bwrap (or the reason it is missing), kernel
specs of a real ipykernel run in the sandbox, and a check that nothing of a sandbox is left."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_nursery import KernelSpec
from kernel_nursery.provisioning.sandbox._cgroup import find_cgroup_place

from ...helpers.engines import engine_required, need_binaries

#: Makes the spec of an ipykernel run by the sandbox provisioner with this config.
SandboxSpec = Callable[..., KernelSpec]


@pytest.fixture
def bwrap() -> str:
    """The bwrap program; the test is skipped (or failed, if KERNEL_NURSERY_REQUIRE names
    sandbox) where it is missing."""
    return need_binaries("sandbox", "bwrap")["bwrap"]


@pytest.fixture
def cgroups(bwrap: str) -> None:
    """Skip (or fail, where the sandbox is required) a test whose limits need cgroups for
    memory, pids and cpus, where this process cannot make them (not root, no delegated
    subtree)."""
    place = find_cgroup_place()
    if place is None or not all(place.enforces(n) for n in ("memory", "pids", "cpus")):
        reason = "sandbox: no writable cgroup with the memory, pids and cpu controllers here"
        if engine_required("sandbox"):
            pytest.fail(f"{reason}, and KERNEL_NURSERY_REQUIRE names 'sandbox'")
        pytest.skip(reason)


@pytest.fixture
def sandbox_spec(bwrap: str) -> SandboxSpec:
    """Make the spec of a real ipykernel in the sandbox, with the given provisioner config."""

    def make(**config: Any) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Sandboxed Python",
            language="python",
            name="sandboxed",
            metadata={"kernel_provisioner": {"provisioner_name": "sandbox", "config": config}},
        )

    return make


def left_of(info: dict[str, Any]) -> list[str]:
    """What of the sandbox that *info* (get_provisioner_info's) describes still exists: its
    folder, its cgroups, its connection file."""
    sandbox = info["sandbox"]
    paths = [sandbox["folder"], *sandbox["cgroups"], info["connection_file"]]
    return [p for p in paths if p and Path(p).exists()]


@pytest.fixture(autouse=True)
def no_sandbox_left(jupyter_dirs: dict[str, Path]) -> Iterator[None]:
    """Fail a test that leaves a sandbox's folder in the runtime directory."""
    yield
    runtime = jupyter_dirs["runtime"]
    left = [str(p) for p in runtime.glob("kn-sandbox-*")] if runtime.exists() else []
    assert not left, f"test left sandbox folders: {left}"
