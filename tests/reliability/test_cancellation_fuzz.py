"""Cancellation fuzz: any operation, cancelled after any delay, leaves the manager's state in
agreement with the operating system's, and nothing at all once the manager is closed."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_nursery import KernelManager
from kernel_nursery.connection import reserved_ports

from ..helpers.kernels import SpecFactory, pid_of
from ..helpers.procs import is_running, live_children

STRESS = bool(os.environ.get("KERNEL_NURSERY_STRESS"))

OPERATIONS = ["start", "restart", "restart-newports", "shutdown", "shutdown-now", "interrupt"]


@pytest.mark.anyio
@pytest.mark.timeout(600 if STRESS else 180)
@settings(
    max_examples=200 if STRESS else 12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(operation=st.sampled_from(OPERATIONS), delay=st.floats(0, 0.25))
async def test_cancel_any_operation_at_any_time(
    fake_spec: SpecFactory,
    jupyter_dirs: dict[str, Path],
    operation: str,
    delay: float,
) -> None:
    """Cancel an operation after a random delay; check the state, then that nothing remains."""
    async with KernelManager(kernel_spec=fake_spec(), shutdown_wait_time=0.3) as km:
        if operation != "start":
            await km.start_kernel()
        with anyio.move_on_after(delay):
            if operation == "start":
                await km.start_kernel()
            elif operation.startswith("restart"):
                await km.restart_kernel(newports=operation.endswith("newports"))
            elif operation.startswith("shutdown"):
                await km.shutdown_kernel(now=operation.endswith("now"))
            else:
                await km.interrupt_kernel()
        # What the manager believes agrees with the operating system: it never loses track of a
        # running process. (The converse may lag for a moment: asyncio learns of an exit from its
        # child watcher, so a just-exited kernel can still read as alive.)
        if km.has_kernel:
            pid = await pid_of(km)
            assert live_children() <= {pid}
            assert not is_running(pid) or await km.is_alive()
        else:
            assert not live_children()
    assert not live_children()
    assert not reserved_ports()
    runtime = jupyter_dirs["runtime"]
    assert not (runtime.exists() and list(runtime.glob("kernel-*")))
