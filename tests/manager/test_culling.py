"""Tests for the culling of idle kernels by kernel_nursery.manager._nursery (and of taken
kernels by a pool)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from traitlets import TraitError

from kernel_nursery import KernelDiedError, KernelEvent, KernelNursery, KernelPool, KernelSpec
from kernel_nursery.manager import KernelManager

from ..helpers.kernels import pid_of
from ..helpers.procs import is_running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SpecFactory = Callable[..., KernelSpec]


async def culled(events: MemoryObjectReceiveStream[KernelEvent]) -> KernelEvent:
    """Read a kernel's events until it is culled and then shut down; return the culling event.

    The stream must be subscribed as the kernel's start returns, with no await in between: the
    cull may come at any moment after that on a slow machine, and a subscription made later
    would miss it.
    """
    culling = None
    with anyio.fail_after(60):
        async for event in events:
            if event.kind == "culling":
                culling = event
            elif event.kind == "shutdown" and culling is not None:
                return culling
    raise AssertionError(f"the kernel's events ended before it was culled (culling: {culling})")


async def start(
    nursery: KernelNursery, stack: AsyncExitStack, spec: KernelSpec
) -> tuple[KernelManager, MemoryObjectReceiveStream[KernelEvent]]:
    """Start a kernel in *nursery* and subscribe to its events before anything else runs."""
    km = await nursery.start_kernel(kernel_spec=spec)
    return km, await stack.enter_async_context(km.events())  # no checkpoint before it


async def test_an_idle_kernel_is_culled(fake_spec: SpecFactory) -> None:
    """A kernel idle for cull_idle_timeout is shut down, after a culling event on its own
    events and on the nursery's."""
    async with AsyncExitStack() as stack, KernelNursery(cull_idle_timeout=0.3) as nursery:
        nursery_events = await stack.enter_async_context(nursery.events())
        km, events = await start(nursery, stack, fake_spec())
        pid = await pid_of(km)
        event = await culled(events)
        assert event.idle_time is not None and event.idle_time >= 0.3
        assert nursery_events.receive_nowait() == event
        assert not is_running(pid)
        assert nursery.list_kernels() == [] and nursery.culled == 1


async def test_a_busy_kernel_is_spared_unless_cull_busy(fake_spec: SpecFactory) -> None:
    """A kernel whose last status is busy outlives an idle one started after it; with
    cull_busy it is culled. (Ready, a kernel counts as idle; its statuses are then seen
    through the manager's clients: this one stays busy after a request.)"""
    async with AsyncExitStack() as stack, KernelNursery(cull_idle_timeout=0.3) as nursery:
        busy, busy_events = await start(nursery, stack, fake_spec("--stay-busy"))
        assert busy.execution_state == "idle"
        async with busy.client() as kc:
            await kc.wait_for_ready(timeout=30)  # until iopub shows the request's "busy"
        _idle, idle_events = await start(nursery, stack, fake_spec())
        assert busy.execution_state == "busy"
        await culled(idle_events)
        assert await busy.is_alive() and nursery.list_kernels() == [busy]
        nursery.cull_busy = True
        await culled(busy_events)


async def test_a_kernel_with_a_client_is_spared_unless_cull_connected(
    fake_spec: SpecFactory,
) -> None:
    """A kernel with an open client outlives an idle one started after it, and is culled
    once its client closes; with cull_connected it is culled while connected."""
    async with AsyncExitStack() as stack, KernelNursery(cull_idle_timeout=0.3) as nursery:
        used, used_events = await start(nursery, stack, fake_spec())
        async with used.client() as kc:
            assert used.connections == 1
            _idle, idle_events = await start(nursery, stack, fake_spec())
            await culled(idle_events)
            assert await used.is_alive()
        assert used.connections == 0
        await culled(used_events)
    async with (
        AsyncExitStack() as stack,
        KernelNursery(cull_idle_timeout=0.3, cull_connected=True) as nursery,
    ):
        km, events = await start(nursery, stack, fake_spec())
        async with km.client() as kc:
            await culled(events)
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
        async with km.events() as events:  # no checkpoint since the start returned
            async with km.client() as kc:
                result = await kc.execute("import time; time.sleep(2)", timeout=60)
                assert result.status == "ok"
                kinds = []
                while True:  # nothing but activity happened while it ran
                    try:
                        kinds.append(events.receive_nowait().kind)
                    except anyio.WouldBlock:
                        break
                assert "culling" not in kinds
            await culled(events)
