"""A small service that hands out kernels: each request gets a warm kernel of its own, runs
its code there, and the kernel is gone when the request is done. Then idle kernels culled."""

from __future__ import annotations

import asyncio

from kernel_nursery import KernelNursery, KernelPool


async def handle(pool: KernelPool, code: str) -> None:
    """One request: a kernel of its own for as long as it runs, never shared."""
    async with pool.take() as km, km.client() as kc:
        result = await kc.execute(code, timeout=30)
        print(f"{code!r} -> {result.stdout.strip()}")
    # this request's kernel has been shut down here


async def main() -> None:
    requests = ["print(6 * 7)", "import sys; print(sys.version_info[0])", "print('hi')"]
    async with KernelPool("python3", size=2) as pool:
        await pool.wait_warm()  # the service is ready: two kernels wait to be taken
        async with asyncio.TaskGroup() as tasks:
            for code in requests:
                tasks.create_task(handle(pool, code))
        status = pool.status
        print(f"takes: {status.takes}, found none warm: {status.cold_takes}")
    # the warm kernels (and any start in flight) are gone here

    # A nursery that shuts down kernels idle for half a second.
    async with KernelNursery(cull_idle_timeout=0.5) as nursery:
        km = await nursery.start_kernel("python3")
        async with km.events() as events:
            async for event in events:
                idle = "" if event.idle_time is None else f" after {event.idle_time:.1f} s idle"
                print(f"{event.kind}{idle}")
                if event.kind == "shutdown":
                    break
        print("kernels left:", len(nursery.list_kernels()))


asyncio.run(main())
