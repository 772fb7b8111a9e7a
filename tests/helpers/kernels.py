"""Kernels for tests: specs for the toy and fake kernels, and running real ones (ipykernel,
xeus-python)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kernel_nursery import KernelManager, KernelSpec, KernelSpecManager, LocalProvisioner
from kernel_nursery.connection import ConnectionInfo

#: A process that stands in for a kernel without speaking Jupyter's protocol (toy_kernel.py).
TOY_KERNEL = str(Path(__file__).parent / "toy_kernel.py")
#: A minimal Jupyter kernel that misbehaves on demand (fake_kernel.py).
FAKE_KERNEL = str(Path(__file__).parent / "fake_kernel.py")

#: Makes a kernel spec from the kernel's extra arguments and KernelSpec fields.
SpecFactory = Callable[..., KernelSpec]


def spec_maker(program: str, name: str) -> SpecFactory:
    """A :data:`SpecFactory` for the kernel script *program*, named *name*."""

    def make(*args: str, **fields: Any) -> KernelSpec:
        argv = [sys.executable, program, "{connection_file}", *args]
        return KernelSpec(argv=argv, display_name=name.title(), language=name, name=name, **fields)

    return make


@asynccontextmanager
async def running_kernel(
    name: str = "python3",
) -> AsyncIterator[tuple[LocalProvisioner, ConnectionInfo]]:
    """Launch kernel *name* (from the installed specs); stop it and clean up on exit."""
    spec = KernelSpecManager().get_kernel_spec(name)
    async with LocalProvisioner(kernel_spec=spec) as provisioner:
        kw = await provisioner.pre_launch()
        info = await provisioner.launch_kernel(kw.pop("cmd"), **kw)
        yield provisioner, info


async def start_and_stop(spec: KernelSpec, **settings: Any) -> None:
    """Start a kernel of *spec* under a :class:`KernelManager` (given *settings*), wait until
    it is ready, and shut it down."""
    async with KernelManager(kernel_spec=spec, **settings) as km:
        await km.start_kernel()


async def pid_of(km: KernelManager) -> int:
    """The pid of the kernel process *km* runs now."""
    pid = getattr(km.provisioner, "pid", None)
    assert isinstance(pid, int)
    return pid
