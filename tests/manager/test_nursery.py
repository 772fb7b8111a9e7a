"""Tests for kernel_nursery.manager._nursery: many kernels in one scope."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from kernel_nursery import (
    KernelDiedError,
    KernelNursery,
    KernelStateError,
    UnknownKernelIdError,
)

from ..helpers.kernels import SpecFactory, pid_of
from ..helpers.procs import is_running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_many_kernels_start_concurrently_and_all_stop(fake_spec: SpecFactory) -> None:
    """Kernels started from several tasks run together; leaving the block stops them all."""
    async with KernelNursery() as nursery:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(lambda: nursery.start_kernel(kernel_spec=fake_spec()))
        kernels = nursery.list_kernels()
        assert len(kernels) == 5
        assert len({km.kernel_id for km in kernels}) == 5
        pids = [await pid_of(km) for km in kernels]
        assert all(is_running(p) for p in pids)
        assert nursery.get(kernels[0].kernel_id) is kernels[0]
    assert not any(is_running(p) for p in pids)


async def test_shutdown_one_and_all(fake_spec: SpecFactory) -> None:
    """shutdown_kernel removes one kernel; shutdown_all the rest; unknown ids are an error."""
    async with KernelNursery() as nursery:
        a = await nursery.start_kernel(kernel_spec=fake_spec())
        b = await nursery.start_kernel(kernel_spec=fake_spec(), shutdown_wait_time=1)
        assert b.shutdown_wait_time == 1
        pid_a = await pid_of(a)
        await nursery.shutdown_kernel(a.kernel_id)
        assert not is_running(pid_a)
        assert nursery.list_kernels() == [b]
        with pytest.raises(UnknownKernelIdError, match=a.kernel_id):
            nursery.get(a.kernel_id)
        await nursery.shutdown_all(now=True)
        assert nursery.list_kernels() == []


async def test_failed_start_is_the_callers_error(fake_spec: SpecFactory) -> None:
    """A kernel that fails to start raises in the caller and leaves the nursery usable."""
    async with KernelNursery() as nursery:
        with pytest.raises(KernelDiedError):
            await nursery.start_kernel(kernel_spec=fake_spec("--exit", "2"))
        km = await nursery.start_kernel(kernel_spec=fake_spec())
        assert await km.is_alive()


async def test_exception_in_block_stops_everything(fake_spec: SpecFactory) -> None:
    """An exception in the nursery's block propagates as it is, after every kernel stopped."""
    with pytest.raises(RuntimeError, match="boom"):  # noqa: PT012
        async with KernelNursery() as nursery:
            km = await nursery.start_kernel(kernel_spec=fake_spec())
            pid = await pid_of(km)
            raise RuntimeError("boom")
    assert not is_running(pid)


async def test_outside_the_block() -> None:
    """A nursery that is not open refuses to start kernels."""
    with pytest.raises(KernelStateError, match="async with"):
        await KernelNursery().start_kernel()


# ---------------------------------------------------------------- the promise's edges


async def test_deadline_around_the_nursery_ends_it_quietly(fake_spec: SpecFactory) -> None:
    """A nursery cancelled by a deadline ends without an exception (move_on_after) or with
    TimeoutError alone (fail_after), every kernel stopped."""
    with anyio.move_on_after(120) as scope:
        async with KernelNursery() as nursery:
            for _ in range(3):
                await nursery.start_kernel(kernel_spec=fake_spec())
            pids = [await pid_of(km) for km in nursery.list_kernels()]
            scope.deadline = anyio.current_time()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert not any(is_running(p) for p in pids)
    with pytest.raises(TimeoutError) as info:  # noqa: PT012
        with anyio.fail_after(120) as scope:
            async with KernelNursery() as nursery:
                for _ in range(3):
                    await nursery.start_kernel(kernel_spec=fake_spec())
                scope.deadline = anyio.current_time()
                await anyio.sleep_forever()
    assert type(info.value) is TimeoutError


async def test_leaving_the_block_cancels_starts_from_other_tasks(fake_spec: SpecFactory) -> None:
    """A nursery whose block ends while another task's start_kernel waits for its kernel ends
    promptly: that start raises KernelStateError and leaves nothing."""
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            async with KernelNursery() as nursery:
                running = await nursery.start_kernel(kernel_spec=fake_spec())
                pid = await pid_of(running)

                async def start() -> None:
                    try:
                        await nursery.start_kernel(
                            kernel_spec=fake_spec("--mute"), ready_timeout=600
                        )
                    except KernelStateError as exc:
                        errors.append(exc)

                tg.start_soon(start)
                await anyio.wait_all_tasks_blocked()
    assert len(errors) == 1 and "closed while the kernel was starting" in str(errors[0])
    assert not is_running(pid)


async def test_a_closing_nursery_refuses_new_kernels(fake_spec: SpecFactory) -> None:
    """While its block is ending, and after, a nursery refuses new kernels."""
    errors: list[BaseException] = []
    closing = anyio.Event()
    async with anyio.create_task_group() as tg:
        async with KernelNursery() as nursery:
            # A kernel that takes its whole shutdown wait to stop keeps the nursery closing.
            km = await nursery.start_kernel(
                kernel_spec=fake_spec("--ignore-shutdown"), shutdown_wait_time=30
            )
            pid = await pid_of(km)

            async def late_start() -> None:
                await closing.wait()
                await anyio.wait_all_tasks_blocked()
                try:
                    await nursery.start_kernel(kernel_spec=fake_spec())
                except KernelStateError as exc:
                    errors.append(exc)
                os.kill(pid, signal.SIGKILL)  # and let the nursery finish

            tg.start_soon(late_start)
            closing.set()
    assert len(errors) == 1 and "closing" in str(errors[0])
    with pytest.raises(KernelStateError):
        await nursery.start_kernel(kernel_spec=fake_spec())


async def test_two_kernels_with_one_id_are_refused(fake_spec: SpecFactory) -> None:
    """A second kernel with the id of one already in the nursery is refused; the nursery still
    ends promptly with everything stopped."""
    with anyio.fail_after(60):
        async with KernelNursery() as nursery:
            a = await nursery.start_kernel(kernel_spec=fake_spec(), kernel_id="same")
            with pytest.raises(KernelStateError, match="already has a kernel with id 'same'"):
                await nursery.start_kernel(kernel_spec=fake_spec(), kernel_id="same")
            pid = await pid_of(a)
            assert nursery.list_kernels() == [a] and is_running(pid)
    assert not is_running(pid)
