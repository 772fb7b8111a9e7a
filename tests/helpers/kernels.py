"""Running real kernels (ipykernel, xeus-python) for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kernel_nursery import KernelManager, KernelSpecManager, LocalProvisioner
from kernel_nursery.connection import ConnectionInfo


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


async def pid_of(km: KernelManager) -> int:
    """The pid of the kernel process *km* runs now."""
    pid = getattr(km.provisioner, "pid", None)
    assert isinstance(pid, int)
    return pid
