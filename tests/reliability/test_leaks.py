"""Many kernels at once leave nothing behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

from kernel_nursery import KernelNursery
from kernel_nursery.connection import reserved_ports

from ..helpers.kernels import SpecFactory
from ..helpers.procs import live_children

STRESS = bool(os.environ.get("KERNEL_NURSERY_STRESS"))
KERNELS = 300 if STRESS else 100

#: fds zmq may still be closing in its I/O thread when they are counted.
FD_NOISE = 12


def _pooled(thread: threading.Thread) -> bool:
    """A worker thread of trio's or anyio's bounded pool (idle ones retire after 10 s)."""
    return thread.name.startswith(("Trio thread", "AnyIO worker thread"))


@pytest.mark.anyio
@pytest.mark.timeout(600)
async def test_hundred_concurrent_kernels_leave_nothing(
    fake_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """100 kernels started and shut down concurrently: fds, threads, children, ports and runtime
    files return to where they were."""
    spec = fake_spec()
    async with KernelNursery() as warm:  # zmq's context and I/O thread exist once per process
        await warm.start_kernel(kernel_spec=spec)
    fds = len(os.listdir("/proc/self/fd"))
    threads = len([t for t in threading.enumerate() if not _pooled(t)])
    async with KernelNursery() as nursery:
        async with anyio.create_task_group() as tg:
            for _ in range(KERNELS):
                tg.start_soon(lambda: nursery.start_kernel(kernel_spec=spec, ready_timeout=120))
        assert len(nursery.list_kernels()) == KERNELS
        assert len(live_children()) == KERNELS
    # zmq's reaper thread closes each socket's fds a moment after close(), and has no event to
    # await: give it a bounded while to catch up with 500 sockets, watching the count.
    with anyio.fail_after(10):
        while len(os.listdir("/proc/self/fd")) >= fds + FD_NOISE:  # noqa: ASYNC110
            await anyio.sleep(0.05)
    # trio and anyio keep idle worker threads (trio spawns processes from them; we write
    # connection files in them) for 10 s: their own bounded caches, not ours to leak.
    ours = [t for t in threading.enumerate() if not _pooled(t)]
    assert len(ours) <= threads + 1  # asyncio (3.11) may still be retiring a child watcher
    assert not live_children()
    assert not reserved_ports()
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))
