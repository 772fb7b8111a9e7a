"""Tests for the culling of idle kernels by kernel_nursery.manager._nursery (and of taken
kernels by a pool)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from traitlets import TraitError

from kernel_nursery import KernelDiedError, KernelEvent, KernelNursery, KernelPool, KernelSpec
from kernel_nursery.manager import KernelManager

from ..helpers.kernels import pid_of
from ..helpers.procs import is_running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SpecFactory = Callable[..., KernelSpec]


async def culled(nursery: KernelNursery, km: KernelManager) -> KernelEvent:
    """Wait for the nursery's ``culling`` event of *km*, then for its shutdown."""
    with anyio.fail_after(60):
        async with nursery.events() as events:
            async for event in events:
                if event.kind == "culling" and event.kernel_id == km.kernel_id:
                    break
        while km.has_kernel:
            async with km.events() as kernel_events:
                async for kernel_event in kernel_events:
                    if kernel_event.kind == "shutdown":
                        break
    return event


async def test_an_idle_kernel_is_culled(fake_spec: SpecFactory) -> None:
    """A kernel idle for cull_idle_timeout is shut down, after a culling event."""
    async with KernelNursery(cull_idle_timeout=0.3) as nursery:
        km = await nursery.start_kernel(kernel_spec=fake_spec())
        pid = await pid_of(km)
        async with km.events() as kernel_events:
            event = await culled(nursery, km)
            kinds = [e.kind async for e in kernel_events]
        assert event.idle_time is not None and event.idle_time >= 0.3
        assert kinds[:1] == ["culling"] and "shutdown" in kinds
        assert not is_running(pid)
        assert nursery.list_kernels() == [] and nursery.culled == 1


async def test_a_busy_kernel_is_spared_unless_cull_busy(fake_spec: SpecFactory) -> None:
    """A kernel whose last status is busy outlives an idle one started after it; with
    cull_busy it is culled."""
    async with KernelNursery(cull_idle_timeout=0.3) as nursery:
        busy = await nursery.start_kernel(kernel_spec=fake_spec("--stay-busy"))
        idle = await nursery.start_kernel(kernel_spec=fake_spec())
        assert busy.execution_state == "busy"
        await culled(nursery, idle)
        assert await busy.is_alive() and nursery.list_kernels() == [busy]
        nursery.cull_busy = True
        await culled(nursery, busy)


async def test_a_kernel_with_a_client_is_spared_unless_cull_connected(
    fake_spec: SpecFactory,
) -> None:
    """A kernel with an open client outlives an idle one started after it, and is culled
    once its client closes; with cull_connected it is culled while connected."""
    async with KernelNursery(cull_idle_timeout=0.3) as nursery:
        used = await nursery.start_kernel(kernel_spec=fake_spec())
        async with used.client() as kc:
            assert used.connections == 1
            idle = await nursery.start_kernel(kernel_spec=fake_spec())
            await culled(nursery, idle)
            assert await used.is_alive()
        assert used.connections == 0
        await culled(nursery, used)
    async with KernelNursery(cull_idle_timeout=0.3, cull_connected=True) as nursery:
        km = await nursery.start_kernel(kernel_spec=fake_spec())
        async with km.client() as kc:
            await culled(nursery, km)
            with pytest.raises(KernelDiedError):
                await kc.kernel_info(timeout=10)


async def test_requests_and_replies_are_activity(fake_spec: SpecFactory) -> None:
    """A request from a client of the manager, and the kernel's reply and statuses, move the
    kernel's last activity on."""
    async with KernelNursery() as nursery:
        km = await nursery.start_kernel(kernel_spec=fake_spec())
        async with km.client() as kc:
            before = km.last_activity
            await kc.kernel_info(timeout=10)
            assert km.last_activity > before
            assert km.execution_state == "idle"


async def test_one_timer_and_none_when_off(fake_spec: SpecFactory) -> None:
    """With culling off no culler runs; with it on, idle kernels far from their deadline
    do not wake the culler again and again."""
    async with KernelNursery() as nursery:
        await nursery.start_kernel(kernel_spec=fake_spec())
        assert nursery._cull_wakeups == 0
    async with KernelNursery(cull_idle_timeout=600) as nursery:
        for _ in range(3):
            km = await nursery.start_kernel(kernel_spec=fake_spec())
        async with km.client() as kc:
            for _ in range(5):
                await kc.kernel_info(timeout=10)
        looked = nursery._cull_wakeups
        assert looked <= 3  # its start, the first kernel, and maybe that kernel going idle
        await anyio.sleep(0.5)
        assert nursery._cull_wakeups == looked


async def test_bad_timeout_is_refused() -> None:
    """A negative or NaN cull_idle_timeout is refused when the nursery is made."""
    for value in (-1.0, float("nan")):
        with pytest.raises(TraitError, match="cull_idle_timeout"):
            KernelNursery(cull_idle_timeout=value)


async def test_a_pool_culls_taken_kernels_never_warm_ones(fake_spec: SpecFactory) -> None:
    """With culling on, a pool culls an idle taken kernel and keeps its warm ones."""
    async with KernelPool(kernel_spec=fake_spec(), size=1, cull_idle_timeout=0.3) as pool:
        async with pool.events() as events:
            async with pool.take() as km:
                async for event in events:
                    if event.kind == "culling":
                        assert event.kernel_id == km.kernel_id
                        break
                with anyio.fail_after(30):
                    while km.has_kernel:
                        async with km.events() as kernel_events:
                            async for kernel_event in kernel_events:
                                if kernel_event.kind == "shutdown":
                                    break
            status = pool.status
        assert status.culled == 1
        assert pool.status.discarded == 0
        assert pool._nursery is not None and pool._nursery.culled == 1


async def test_a_busy_ipykernel_is_spared() -> None:
    """A real ipykernel running code longer than the idle timeout is not culled; once idle,
    it is."""
    async with KernelNursery(cull_idle_timeout=0.5) as nursery:
        km = await nursery.start_kernel("python3")
        async with km.client() as kc:
            result = await kc.execute("import time; time.sleep(2)", timeout=60)
            assert result.status == "ok"
        await culled(nursery, km)
