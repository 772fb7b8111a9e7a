"""Tests for kernel_nursery.compat._loop_thread: the private event loop a bridge's provisioner
owns, reached from any caller's loop."""

from __future__ import annotations

import asyncio
import os

import anyio
import pytest

from kernel_nursery import ProvisionerError
from kernel_nursery.compat._loop_thread import LoopThread

pytestmark = pytest.mark.anyio


async def test_the_private_loop_closes_once_twice_at_once_or_cancelled(anyio_backend: str) -> None:
    """The bridge's private loop, closed twice, by two tasks at once or from a cancelled scope,
    stops once: its thread ends and no file descriptor is closed twice (one reused meanwhile
    stays open)."""
    loop_thread = LoopThread(what="a test")
    assert await loop_thread.run(asyncio.sleep(0, "x")) == "x"
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop_thread.aclose)
        tg.start_soon(loop_thread.aclose)
    assert not loop_thread._thread.is_alive()
    reused = os.pipe()  # takes the numbers the closed loop's descriptors had
    try:
        await loop_thread.aclose()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await loop_thread.aclose()
        for fd in reused:
            os.fstat(fd)  # still open
        with pytest.raises(ProvisionerError, match="too late"):
            await loop_thread.run(asyncio.sleep(0))
    finally:
        for fd in reused:
            os.close(fd)

    cancelled = LoopThread(what="a test")
    assert await cancelled.run(asyncio.sleep(0, "y")) == "y"
    with anyio.CancelScope() as scope:
        scope.cancel()
        await cancelled.aclose()
    assert not cancelled._thread.is_alive()
