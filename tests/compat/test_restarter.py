"""Tests for kernel_nursery.compat._restarter: event-driven restarters for jupyter_client's
IOLoop kernel managers, with kernels run by kernel-nursery-local.

Each test sets ``time_to_dead`` to an hour: jupyter_client's restarters, which poll at that
interval, would notice nothing within the tests' bounds; ours await the exit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from traitlets.config import Config

from ..conftest import FAKE_KERNEL
from ..helpers.procs import is_running

# The fixtures as test_to_jupyter.py has them: asyncio only, a fresh jupyter_client factory.
from .test_to_jupyter import anyio_backend, fresh_jupyter_factory, nursery_kernel  # noqa: F401

pytestmark = pytest.mark.anyio

READY = 60


def config_for(restarter: str, **restarter_config: Any) -> Config:
    """jupyter_client's configuration selecting *restarter*, polling (if it did) hourly."""
    return Config(
        {
            "IOLoopKernelManager": {"restarter_class": f"kernel_nursery.compat.{restarter}"},
            "AsyncIOLoopKernelManager": {"restarter_class": f"kernel_nursery.compat.{restarter}"},
            "KernelRestarter": {"time_to_dead": 3600.0, **restarter_config},
        }
    )


def fake_kernel(jupyter_dirs: dict[str, Path]) -> str:
    return nursery_kernel(
        jupyter_dirs, "fake", [sys.executable, FAKE_KERNEL, "{connection_file}"], language="fake"
    )


async def test_a_killed_kernel_is_restarted_at_its_exit(jupyter_dirs: dict[str, Path]) -> None:
    """AsyncIOLoopKernelManager with AsyncNurseryRestarter: a kernel killed from outside is
    restarted (jupyter_client's restart callback, a new process) without a poll."""
    from jupyter_client.ioloop import AsyncIOLoopKernelManager

    from kernel_nursery.compat import AsyncNurseryRestarter

    km = AsyncIOLoopKernelManager(
        kernel_name=fake_kernel(jupyter_dirs), config=config_for("AsyncNurseryRestarter")
    )
    await km.start_kernel()
    try:
        assert isinstance(km._restarter, AsyncNurseryRestarter)
        restarted = asyncio.Event()
        km.add_restart_callback(restarted.set, "restart")
        pid = km.provisioner.pid
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(READY):
            await restarted.wait()
            while km.provisioner.pid in (None, pid) or not await km.is_alive():  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the restart follows the callback, unannounced
        assert not is_running(pid)
    finally:
        km.stop_restarter()
        await km.shutdown_kernel(now=True)


async def test_a_kernel_that_keeps_dying_is_given_up(jupyter_dirs: dict[str, Path]) -> None:
    """A kernel that exits at once is restarted restart_limit times, then given up with
    jupyter_client's 'dead' callback; nothing is left running."""
    from jupyter_client.ioloop import AsyncIOLoopKernelManager

    name = nursery_kernel(jupyter_dirs, "dies", [sys.executable, "-c", "pass"])
    config = config_for("AsyncNurseryRestarter", restart_limit=2)
    km = AsyncIOLoopKernelManager(kernel_name=name, config=config)
    restarts: list[float] = []
    dead = asyncio.Event()
    await km.start_kernel()
    try:
        km.add_restart_callback(lambda: restarts.append(0.0), "restart")
        km.add_restart_callback(dead.set, "dead")
        with anyio.fail_after(READY):
            await dead.wait()
        assert len(restarts) == 2
    finally:
        km.stop_restarter()
        await km.shutdown_kernel(now=True)


def test_the_blocking_ioloop_manager_restarts_a_killed_kernel(
    jupyter_dirs: dict[str, Path],
) -> None:
    """IOLoopKernelManager (jupyter_server's synchronous kind) with NurseryRestarter, inside a
    running loop as a server runs it: a killed kernel is restarted without a poll."""
    from jupyter_client.ioloop import IOLoopKernelManager

    from kernel_nursery.compat import NurseryRestarter

    name = fake_kernel(jupyter_dirs)

    async def main() -> None:
        km = IOLoopKernelManager(kernel_name=name, config=config_for("NurseryRestarter"))
        km.start_kernel()
        try:
            assert isinstance(km._restarter, NurseryRestarter)
            restarted = asyncio.Event()
            loop = asyncio.get_running_loop()
            # The restarter runs where the manager's loop is: run_sync's runner thread, as
            # jupyter_client's would; its callbacks are called there.
            km.add_restart_callback(lambda: loop.call_soon_threadsafe(restarted.set), "restart")
            pid = km.provisioner.pid
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(READY):
                await restarted.wait()
                while km.provisioner.pid in (None, pid) or not km.is_alive():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert not is_running(pid)
        finally:
            km.stop_restarter()
            km.shutdown_kernel(now=True)

    asyncio.run(main())
