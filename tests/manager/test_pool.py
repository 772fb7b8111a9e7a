"""Tests for kernel_nursery.manager._pool: warm kernels, each handed to one taker."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from traitlets import TraitError

from kernel_nursery import (
    KernelDiedError,
    KernelManager,
    KernelPool,
    KernelSpec,
    KernelStateError,
    PoolEvent,
    PoolStatus,
)
from kernel_nursery.manager import KernelNursery

from ..helpers.cancel_points import POINT, CountingProvisioner
from ..helpers.kernels import pid_of
from ..helpers.procs import is_running, live_children

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

SpecFactory = Callable[..., KernelSpec]


async def until(pool: KernelPool, ready: Callable[[PoolStatus], bool]) -> list[PoolEvent]:
    """Wait (on the pool's events, no polling) until *ready* holds for its status; the events
    seen meanwhile."""
    seen: list[PoolEvent] = []
    with anyio.fail_after(60):
        async with pool.events() as events:
            if ready(pool.status):
                return seen
            async for event in events:
                seen.append(event)
                if ready(event.status):
                    return seen
    raise AssertionError(f"the pool closed first: {pool.status}")


def warm(n: int) -> Callable[[PoolStatus], bool]:
    return lambda s: s.warm >= n


async def test_take_hands_over_a_warm_kernel_and_refills(fake_spec: SpecFactory) -> None:
    """A take gets a warm kernel at once; it is shut down when the take ends; the pool
    refills; the pool's end leaves nothing."""
    async with KernelPool(kernel_spec=fake_spec(), size=2) as pool:
        await until(pool, warm(2))
        async with pool.events() as events:
            async with pool.take() as km:
                pid = await pid_of(km)
                assert await km.is_alive()
                status = pool.status
                assert (status.taken, status.takes, status.cold_takes) == (1, 1, 0)
                taken = await events.receive()
                while taken.kind != "taken":
                    taken = await events.receive()
                assert taken.kernel_id == km.kernel_id and not taken.cold
                assert taken.take_time is not None and taken.take_time < 5
        assert not is_running(pid)
        await until(pool, lambda s: s.warm == 2 and s.taken == 0)
        pids = {await pid_of(entry.km) for entry in pool._warm}
    assert not any(is_running(p) for p in pids)
    assert pool.status.warm == 0


async def test_two_takers_at_once_get_two_kernels(fake_spec: SpecFactory) -> None:
    """Takes from two tasks at once, from a pool of one, get different kernels: one warm,
    and one the other take waited for."""
    got: list[KernelManager] = []
    both = anyio.Event()

    async def taker(pool: KernelPool) -> None:
        async with pool.take() as km:
            got.append(km)
            if len(got) == 2:
                both.set()
            await both.wait()

    async with KernelPool(kernel_spec=fake_spec(), size=1, refill_concurrency=1) as pool:
        await until(pool, warm(1))
        async with anyio.create_task_group() as tg:
            tg.start_soon(taker, pool)
            tg.start_soon(taker, pool)
        assert len({km.kernel_id for km in got}) == 2
        assert pool.status.takes == 2 and pool.status.cold_takes == 1
        assert pool.status.taken == 0


async def test_a_take_from_an_empty_pool_starts_its_own(fake_spec: SpecFactory) -> None:
    """With no warm kernel (size 0), a take starts one and waits until it is ready."""
    async with KernelPool(kernel_spec=fake_spec(), size=0) as pool:
        async with pool.take() as km:
            assert await km.is_alive()
        assert pool.status.cold_takes == 1
        assert pool.status.warm == 0 and pool.status.starting == 0


async def test_a_warm_kernel_that_dies_is_replaced_not_handed_out(
    fake_spec: SpecFactory,
) -> None:
    """A warm kernel killed is discarded and replaced; the take gets the new one."""
    async with KernelPool(kernel_spec=fake_spec(), size=1) as pool:
        await until(pool, warm(1))
        victim = pool._warm[0].km
        pid = await pid_of(victim)
        os.kill(pid, signal.SIGKILL)
        seen = await until(pool, lambda s: s.discarded == 1 and s.warm == 1)
        assert any(e.kind == "discarded" and e.kernel_id == victim.kernel_id for e in seen)
        async with pool.take() as km:
            assert km is not victim
            assert await pid_of(km) != pid
            assert await km.is_alive()


async def test_a_kernel_killed_just_before_the_take_is_skipped(fake_spec: SpecFactory) -> None:
    """A warm kernel whose exit has been seen an instant before a take (its manager and the
    pool's watcher may not have acted yet) is not handed out: the take starts its own."""
    async with KernelPool(kernel_spec=fake_spec(), size=1, replace_dead=False) as pool:
        await until(pool, warm(1))
        victim = pool._warm[0].km
        pid = await pid_of(victim)
        os.kill(pid, signal.SIGKILL)
        assert victim.provisioner is not None
        await victim.provisioner.wait()
        async with pool.take() as km:
            assert km is not victim
            assert await km.is_alive()


async def test_a_failed_refill_pauses_and_the_take_sees_the_error(
    fake_spec: SpecFactory,
) -> None:
    """A kernel that cannot start: refills fail once and stop; a take raises the start's
    error itself; nothing is left."""
    async with KernelPool(kernel_spec=fake_spec("--exit", "3"), size=2) as pool:
        seen = await until(pool, lambda s: s.failed_starts >= 1 and s.starting == 0)
        assert any(e.kind == "start_failed" and "KernelDiedError" in (e.error or "") for e in seen)
        with pytest.raises(KernelDiedError) as info:
            async with pool.take():
                pass
        assert info.value.exit_status == 3
        assert pool.status.failed_starts <= 2  # not started again and again


async def test_cancelling_a_take_at_each_step_takes_nothing(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """A take cancelled at each call into the provisioner of the start it made hands nothing
    over; that start goes on and its kernel is warm; nothing else is left running."""
    source = f"from {CountingProvisioner.__module__} import CountingProvisioner as Provisioner\n"
    install_provisioner("counting", "Provisioner", source)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "counting"}})
    async with KernelPool(kernel_spec=spec, size=0) as pool:
        POINT.arm(None)
        try:
            async with pool.take():
                pass
        finally:
            calls = POINT.disarm()
        starting = calls.index("post_launch") + 2  # the start's hooks, and a little more
        for n in range(1, starting + 1):
            with anyio.CancelScope() as scope:
                POINT.arm(scope, n)
                try:
                    async with pool.take():
                        pass
                finally:
                    POINT.disarm()
            where = f"cancelled at call {n} ({calls[n - 1]})"
            await until(pool, lambda s: s.starting == 0)
            status = pool.status
            assert status.taken == 0, where
            assert len(live_children()) == status.warm, where
        async with pool.take() as km:
            assert await km.is_alive()


async def test_a_cancelled_warm_take_leaves_the_kernel_warm(fake_spec: SpecFactory) -> None:
    """A take in a cancelled scope hands nothing over and leaves the warm kernel warm."""
    async with KernelPool(kernel_spec=fake_spec(), size=1) as pool:
        await until(pool, warm(1))
        kernel_id = pool._warm[0].km.kernel_id
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with pool.take():
                pytest.fail("the take was cancelled")
        assert pool.status.warm == 1 and pool._warm[0].km.kernel_id == kernel_id
        async with pool.take() as km:
            assert km.kernel_id == kernel_id


async def test_the_pool_ending_while_a_take_waits(fake_spec: SpecFactory) -> None:
    """A take waiting for its own start when the pool's block ends raises KernelStateError,
    promptly, and leaves nothing."""
    errors: list[BaseException] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            async with KernelPool(
                kernel_spec=fake_spec("--mute"), size=0, ready_timeout=600
            ) as pool:

                async def take() -> None:
                    try:
                        async with pool.take():
                            pytest.fail("a mute kernel is never ready")
                    except KernelStateError as exc:
                        errors.append(exc)

                tg.start_soon(take)
                await until(pool, lambda s: s.starting == 1)
    assert len(errors) == 1 and "pool closed" in str(errors[0])
    with pytest.raises(KernelStateError, match="closed"):
        async with pool.take():
            pass


async def test_cancelling_the_pool_while_it_refills(fake_spec: SpecFactory) -> None:
    """A pool cancelled with starts in flight ends promptly, without an error, and leaves
    nothing."""
    with anyio.fail_after(30), anyio.CancelScope() as scope:
        async with KernelPool(kernel_spec=fake_spec("--mute"), size=3, ready_timeout=600) as pool:
            await until(pool, lambda s: s.starting == 2)  # bounded by refill_concurrency
            assert pool.status.starting == 2
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not live_children()


async def test_the_pool_end_shuts_taken_kernels_down(fake_spec: SpecFactory) -> None:
    """Leaving the pool's block shuts down warm and taken kernels alike."""
    async with KernelPool(kernel_spec=fake_spec(), size=1) as pool:
        async with pool.take() as km:
            pid = await pid_of(km)
            await until(pool, warm(1))
            with pytest.raises(RuntimeError, match="boom"):
                async with pool.take():
                    raise RuntimeError("boom")
    assert not is_running(pid)


async def test_bad_settings_and_use_outside_the_block(
    fake_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """Bad settings are refused when the pool is made; a pool not open refuses takes."""
    with pytest.raises(TraitError, match="size"):
        KernelPool(size=-1)
    with pytest.raises(TraitError, match="refill_concurrency"):
        KernelPool(refill_concurrency=0)
    with pytest.raises(TypeError, match="kernel_id"):
        KernelPool(kernel_id="k")
    pool = KernelPool(kernel_spec=fake_spec(), size=0, cwd=str(jupyter_dirs["data"]))
    with pytest.raises(KernelStateError, match="async with"):
        async with pool.take():
            pass
    async with pool:
        with pytest.raises(KernelStateError, match="already open"):
            async with pool:
                pass
    with pytest.raises(KernelStateError, match="closed"):
        async with pool:
            pass


async def test_settings_reach_the_kernels(fake_spec: SpecFactory) -> None:
    """Manager settings and launch keywords given to the pool reach its kernels; culling
    settings reach its nursery."""
    async with KernelPool(
        kernel_spec=fake_spec(), size=1, shutdown_wait_time=1.5, cull_idle_timeout=600
    ) as pool:
        assert isinstance(pool._nursery, KernelNursery)
        assert pool._nursery.cull_idle_timeout == 600
        async with pool.take() as km:
            assert km.shutdown_wait_time == 1.5


async def test_a_pool_of_ipykernels() -> None:
    """A real ipykernel from a warm pool runs code at once."""
    async with KernelPool("python3", size=1) as pool:
        await until(pool, warm(1))
        async with pool.take() as km, km.client() as kc:
            result = await kc.execute("6 * 7", timeout=30)
            assert result.results == [{"text/plain": "42"}]


async def test_wait_warm(fake_spec: SpecFactory) -> None:
    """wait_warm returns once the pool is full, refuses a count it can never reach, and
    raises when refilling has stopped after a failure."""
    async with KernelPool(kernel_spec=fake_spec(), size=2) as pool:
        with anyio.fail_after(60):
            await pool.wait_warm()
        assert pool.status.warm == 2
        await pool.wait_warm(1)
        with pytest.raises(ValueError, match="never has 3"):
            await pool.wait_warm(3)
    with pytest.raises(KernelStateError, match="closed"):
        await pool.wait_warm()
    async with KernelPool(kernel_spec=fake_spec("--exit", "1"), size=1) as pool:
        with anyio.fail_after(60), pytest.raises(KernelStateError, match="failed start"):
            await pool.wait_warm()


async def test_cancelling_the_pool_at_each_step_of_its_refills_leaves_nothing(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """A pool cancelled at each call into its kernels' provisioners while it fills (two
    starts at once) ends without an error and leaves no process."""
    source = f"from {CountingProvisioner.__module__} import CountingProvisioner as Provisioner\n"
    install_provisioner("counting", "Provisioner", source)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "counting"}})
    POINT.arm(None)
    try:
        async with KernelPool(kernel_spec=spec, size=2) as pool:
            await pool.wait_warm()
            filling = len(POINT.calls)
    finally:
        POINT.disarm()
    for n in range(1, filling + 1):
        with anyio.fail_after(60), anyio.CancelScope() as scope:
            POINT.arm(scope, n)
            try:
                async with KernelPool(kernel_spec=spec, size=2):
                    await anyio.sleep_forever()
            finally:
                POINT.disarm()
        assert scope.cancelled_caught
        assert not live_children(), f"cancelled at call {n}"


async def test_many_takers_at_once_each_get_their_own(fake_spec: SpecFactory) -> None:
    """Eight takers at once from a pool of two each get a kernel of their own that answers;
    every one is shut down when its taker is done, and the pool's end leaves nothing."""
    kernels: list[KernelManager] = []

    async def taker(pool: KernelPool) -> None:
        async with pool.take() as km, km.client() as kc:
            kernels.append(km)
            await kc.kernel_info(timeout=30)

    async with KernelPool(kernel_spec=fake_spec(), size=2) as pool:
        await pool.wait_warm()
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(taker, pool)
        assert len({km.kernel_id for km in kernels}) == 8
        assert not any(km.has_kernel for km in kernels)
        status = pool.status
        assert (status.takes, status.taken) == (8, 0)
        assert status.cold_takes >= 6


async def test_a_larger_size_refills_at_once(fake_spec: SpecFactory) -> None:
    """Setting a larger size on an open pool starts the refills it needs."""
    async with KernelPool(kernel_spec=fake_spec(), size=0) as pool:
        pool.size = 2
        with anyio.fail_after(60):
            await pool.wait_warm()
        assert pool.status.warm == 2


async def test_a_take_with_none_warm_takes_the_first_ready(fake_spec: SpecFactory) -> None:
    """A take that finds no warm kernel while a refill is starting starts one too, takes the
    first ready, and the other becomes warm."""
    async with KernelPool(kernel_spec=fake_spec(), size=1) as pool:
        await until(pool, lambda s: s.starting == 1)
        async with pool.take() as km:
            assert await km.is_alive()
            await until(pool, lambda s: s.starting == 0)
            assert pool.status.warm == 1
        status = pool.status
        assert (status.takes, status.cold_takes) == (1, 1)


async def test_a_take_whose_start_fails_raises_its_error(
    fake_spec: SpecFactory,
) -> None:
    """A take whose start fails while it waits raises why."""
    async with KernelPool(kernel_spec=fake_spec("--exit", "4"), size=1) as pool:
        await until(pool, lambda s: s.starting == 1)
        with pytest.raises(KernelDiedError) as info:
            async with pool.take():
                pass
        assert info.value.exit_status == 4


async def test_cancelling_or_closing_while_a_take_waits(
    fake_spec: SpecFactory,
) -> None:
    """A waiting take can be cancelled (the start it made goes on), and raises
    KernelStateError when the pool closes."""
    errors: list[BaseException] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            async with KernelPool(
                kernel_spec=fake_spec("--mute"), size=1, ready_timeout=600
            ) as pool:
                await until(pool, lambda s: s.starting == 1)
                with anyio.CancelScope() as scope:

                    async def cancel_once_it_waits() -> None:
                        await anyio.wait_all_tasks_blocked()
                        assert pool._waiting == 1
                        scope.cancel()

                    tg.start_soon(cancel_once_it_waits)
                    async with pool.take():
                        pytest.fail("a mute kernel is never ready")
                assert scope.cancelled_caught
                assert (pool._waiting, pool.status.starting) == (0, 2)

                async def take() -> None:
                    try:
                        async with pool.take():
                            pytest.fail("a mute kernel is never ready")
                    except KernelStateError as exc:
                        errors.append(exc)

                tg.start_soon(take)
                await anyio.wait_all_tasks_blocked()
                assert pool._waiting == 1
    assert len(errors) == 1 and "pool closed" in str(errors[0])


async def test_takers_of_an_empty_pool_all_get_one(fake_spec: SpecFactory) -> None:
    """Six takers at once from a pool of size 0 each start a kernel and each get one, even
    when another take got the kernel a take started (it then starts another)."""
    kernels: list[KernelManager] = []
    done = anyio.Event()

    async def taker(pool: KernelPool) -> None:
        async with pool.take() as km:
            kernels.append(km)
            if len(kernels) == 6:
                done.set()
            await done.wait()

    async with KernelPool(kernel_spec=fake_spec(), size=0) as pool:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(taker, pool)
        assert len({km.kernel_id for km in kernels}) == 6
        assert pool.status.cold_takes == 6
