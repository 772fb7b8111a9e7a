"""What the fork server's tests share: a python3 spec that names the fork server."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from kernel_nursery import KernelSpec, KernelSpecManager

ForkSpec = Callable[..., KernelSpec]

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "pidfd_open") and sys.platform.startswith("linux")),
    reason="the fork server needs Linux pidfds",
)


@pytest.fixture
def python3_spec() -> KernelSpec:
    """The python3 (ipykernel) spec of this interpreter, spawned by the local provisioner."""
    return KernelSpecManager().get_kernel_spec("python3")


@pytest.fixture
def fork_spec(python3_spec: KernelSpec) -> ForkSpec:
    """Make the python3 spec with the fork server as its provisioner, with *config*."""

    def make(**config: Any) -> KernelSpec:
        stanza = {"provisioner_name": "forkserver", "config": config}
        metadata = {**python3_spec.metadata, "kernel_provisioner": stanza}
        return KernelSpec(**{**python3_spec.__dict__, "metadata": metadata})

    return make
