"""Cancellation at every step of a kernel's lifecycle, not after a delay.

A provisioner counts the calls into its hooks (tests/helpers/cancel_points.py). Each test first
runs an operation once to count the calls it makes, then runs it again once per call N,
cancelling the caller's scope at the N-th call (just before the hook runs, or just after it
returns), and checks after each that the manager's state agrees with the operating system's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from kernel_nursery import KernelManager
from kernel_nursery.connection import PORT_NAMES, reserved_ports

from ..helpers.cancel_points import POINT
from ..helpers.kernels import SpecFactory
from ..helpers.procs import is_running, live_children

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(120),
    pytest.mark.parametrize("after", [False, True], ids=["before-hook", "after-hook"]),
]


async def count_calls(operation: Callable[[], Awaitable[None]]) -> list[str]:
    """The hook calls *operation* makes, when nothing cancels it."""
    POINT.arm(None)
    try:
        await operation()
    finally:
        calls = POINT.disarm()
    assert calls
    return calls


async def cancelled_at(n: int, operation: Callable[[], Awaitable[None]], *, after: bool) -> bool:
    """Run *operation* in a scope cancelled at the *n*-th hook call; whether it was cut short
    (False: it had nothing left to wait for, and completed)."""
    with anyio.CancelScope() as scope:
        POINT.arm(scope, n, after=after)
        try:
            await operation()
        finally:
            POINT.disarm()
    return scope.cancelled_caught


async def assert_state_agrees(km: KernelManager, runtime: Path, where: str) -> None:
    """What the manager holds is what exists: its one kernel process (alive) or none, the
    ports and connection file of its provisioner or none."""
    children = live_children()
    if km.has_kernel:
        assert children == {km.pid}, where
        assert await km.is_alive(), where
    else:
        assert not children, where
    info = km.provisioner.connection_info if km.provisioner is not None else {}
    ports = {("tcp", info[name]) for name in PORT_NAMES} if info else set()
    assert reserved_ports() == ports, where
    files = set(runtime.glob("kernel-*")) if runtime.exists() else set()
    assert files == ({Path(km.connection_file)} if km.connection_file else set()), where


async def test_start_cancelled_at_each_step_leaves_nothing(
    counting_spec: SpecFactory, jupyter_dirs: dict[str, Path], after: bool
) -> None:
    """start_kernel cancelled at any hook call leaves no process, port or file, and the
    manager starts a kernel afterwards."""
    runtime = jupyter_dirs["runtime"]
    async with KernelManager(kernel_spec=counting_spec()) as km:
        calls = await count_calls(km.start_kernel)
        await km.shutdown_kernel(now=True)
        cut = []
        for n in range(1, len(calls) + 1):
            where = f"start cancelled at call {n} of {calls}"
            cut.append(await cancelled_at(n, km.start_kernel, after=after))
            if cut[-1]:
                assert not km.has_kernel and km.pid is None, where
                assert not live_children(), where
                assert not reserved_ports(), where
                assert not (runtime.exists() and list(runtime.glob("kernel-*"))), where
            else:  # the call came after the kernel was ready: the start completed
                await assert_state_agrees(km, runtime, where)
                assert km.has_kernel, where
                await km.shutdown_kernel(now=True)
        assert cut[0], "a start cancelled at its first hook call must not complete"
        await km.start_kernel()
        assert await km.is_alive()


async def test_restart_cancelled_at_each_step_leaves_one_kernel_or_none(
    counting_spec: SpecFactory, jupyter_dirs: dict[str, Path], after: bool
) -> None:
    """restart_kernel cancelled at any hook call leaves the old kernel running, or a new one,
    or none, never a stray process; the manager stays usable and its scope leaves nothing."""
    runtime = jupyter_dirs["runtime"]
    async with KernelManager(kernel_spec=counting_spec()) as km:
        await km.start_kernel()
        calls = await count_calls(km.restart_kernel)
        cut = []
        for n in range(1, len(calls) + 1):
            where = f"restart cancelled at call {n} of {calls}"
            old = km.pid
            assert old is not None
            cut.append(await cancelled_at(n, km.restart_kernel, after=after))
            await assert_state_agrees(km, runtime, where)
            assert not is_running(old) or km.pid == old, where
            if not km.has_kernel:
                await km.start_kernel()  # usable: the next round needs a kernel to restart
        assert cut[0], "a restart cancelled at its first hook call must not complete"
        await km.restart_kernel()
        assert await km.is_alive()
    # the autouse fixture checks that processes, ports and files are gone


async def test_shutdown_cancelled_at_each_step_still_completes(
    counting_spec: SpecFactory, jupyter_dirs: dict[str, Path], after: bool
) -> None:
    """shutdown_kernel cancelled at any hook call (polite request ignored, then SIGTERM) still
    stops the kernel completely: no process, port or file remains."""
    runtime = jupyter_dirs["runtime"]
    spec = counting_spec("--ignore-shutdown")
    async with KernelManager(kernel_spec=spec, shutdown_wait_time=0.2) as km:
        await km.start_kernel()
        calls = await count_calls(km.shutdown_kernel)
        for n in range(1, len(calls) + 1):
            where = f"shutdown cancelled at call {n} of {calls}"
            await km.start_kernel()
            pid = km.pid
            assert pid is not None
            await cancelled_at(n, km.shutdown_kernel, after=after)
            assert not is_running(pid), where
            assert not km.has_kernel and km.provisioner is None, where
            await assert_state_agrees(km, runtime, where)
