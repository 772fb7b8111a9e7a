"""Kernels that misbehave, and what the manager makes of them: nothing is ever left behind."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import anyio
import pytest

from kernel_nursery import KernelManager, KernelNursery
from kernel_nursery.connection import reserved_ports

from ..helpers.cancel_points import POINT
from ..helpers.kernels import SpecFactory, pid_of
from ..helpers.procs import is_running, live_children, process_group_members

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_deaf_control_channel_is_escalated(fake_spec: SpecFactory) -> None:
    """A kernel alive but deaf on control: the shutdown request times out within the wait
    time, SIGTERM ends it, and nothing remains."""
    async with KernelManager(kernel_spec=fake_spec("--mute-control"), shutdown_wait_time=0.3) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with km.events() as events:
            with anyio.fail_after(5):
                await km.shutdown_kernel()
            assert (await events.receive()).exit_status == -signal.SIGTERM
        assert not is_running(pid)


async def test_connection_file_deleted_under_a_running_kernel(fake_spec: SpecFactory) -> None:
    """Deleting the connection file of a running kernel breaks neither restart nor shutdown."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        assert km.provisioner is not None
        path = Path(km.provisioner.connection_file)  # type: ignore[attr-defined]
        path.unlink()
        await km.restart_kernel()
        assert path.exists()  # written again for the new process
        path.unlink()
        await km.shutdown_kernel()
    assert not path.exists()


async def test_grandchildren_of_a_crashed_kernel_are_gone_after_its_restart(
    fake_spec: SpecFactory,
) -> None:
    """A kernel that forks and dies: its children are killed before it is restarted."""
    async with KernelManager(
        kernel_spec=fake_spec("--grandchild", "--crash-after", "1"), stable_start_time=0
    ) as km:
        async with km.events() as events:
            await km.start_kernel()
            first = await pid_of(km)
            assert len(process_group_members(first)) == 2
            with anyio.fail_after(30):
                kinds = [(await events.receive()).kind for _ in range(4)]
        assert kinds == ["starting", "started", "restarting", "restarted"]
        assert not process_group_members(first)


@pytest.mark.parametrize("at", [1, 20, 45, 70])
async def test_cancelled_while_ten_start_and_ten_stop(counting_spec: SpecFactory, at: int) -> None:
    """The scope around a nursery is cancelled at the *at*-th provisioner hook call made while
    ten kernels start and ten shut down: every process, connection file and port is gone
    afterwards."""
    with anyio.fail_after(60):  # a bound for the test itself
        with anyio.CancelScope() as scope:
            try:
                async with KernelNursery() as nursery:
                    async with anyio.create_task_group() as tg:
                        for _ in range(10):
                            tg.start_soon(lambda: nursery.start_kernel(kernel_spec=counting_spec()))
                    running = nursery.list_kernels()
                    POINT.arm(scope, at)
                    async with anyio.create_task_group() as tg:
                        for _ in range(10):
                            tg.start_soon(lambda: nursery.start_kernel(kernel_spec=counting_spec()))
                        for km in running:
                            tg.start_soon(nursery.shutdown_kernel, km.kernel_id)
            finally:
                calls = POINT.disarm()
    assert scope.cancelled_caught, f"not cancelled: {len(calls)} hook calls were made"
    assert not live_children()
    assert not reserved_ports()


async def test_nothing_secret_in_the_logs(
    fake_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Even at DEBUG, a kernel's life never logs its signing key."""
    with caplog.at_level(logging.DEBUG):
        async with KernelManager(kernel_spec=fake_spec()) as km:
            await km.start_kernel()
            key = km.connection_info["key"]
            await km.restart_kernel()
            await km.interrupt_kernel()
    assert caplog.records  # something was logged
    assert key not in caplog.text


async def test_runtime_directory_is_not_world_writable(
    fake_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """Connection files are 0600 in a 0700 runtime directory, even one created open."""
    jupyter_dirs["runtime"].mkdir(parents=True)
    jupyter_dirs["runtime"].chmod(0o777)
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        path = Path(km.provisioner.connection_file)  # type: ignore[union-attr]
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(path.parent).st_mode & 0o777 == 0o700
