"""The fork server under jupyter_client, through the bridge (``kernel-nursery-forkserver``):
what a JupyterLab user gets by naming it in kernel.json."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("jupyter_client")

from jupyter_client import AsyncKernelManager
from jupyter_client.provisioning import KernelProvisionerFactory as JupyterFactory

from kernel_nursery.compat import NurseryForkServerProvisioner
from kernel_nursery.provisioning import ForkServerProvisioner
from kernel_nursery.provisioning.forkserver._template import live_templates

from ...compat.test_to_jupyter import IPYKERNEL, READY, nursery_kernel
from ...helpers.procs import gone, is_running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


@pytest.fixture
def anyio_backend() -> str:
    """jupyter_client runs on asyncio: this test does too."""
    return "asyncio"


@pytest.fixture(autouse=True)
def fresh_jupyter_factory() -> Iterator[None]:
    """jupyter_client's provisioner factory is a singleton; this test gets its own."""
    JupyterFactory.clear_instance()
    yield
    JupyterFactory.clear_instance()


async def test_async_kernel_manager_forks_ipykernel(jupyter_dirs: dict[str, Path]) -> None:
    """AsyncKernelManager with kernel-nursery-forkserver: the kernel is forked, runs code,
    and its shutdown leaves neither kernel nor template."""
    name = nursery_kernel(jupyter_dirs, "fk", IPYKERNEL, provisioner="kernel-nursery-forkserver")
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        provisioner = km.provisioner
        assert isinstance(provisioner, NurseryForkServerProvisioner)
        inner = provisioner.inner
        assert isinstance(inner, ForkServerProvisioner) and inner.forked
        pid, template = inner.pid, inner.template_pid
        assert pid is not None and template is not None
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=READY)
            reply = await kc.execute_interactive("x = 6 * 7", timeout=READY)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
    finally:
        await km.shutdown_kernel()
    assert not is_running(pid)
    await gone(template)
    assert live_templates() == []
