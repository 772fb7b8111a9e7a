"""Many kernels in one scope, under asyncio."""

from __future__ import annotations

import asyncio

from kernel_nursery import KernelNursery


async def main() -> None:
    async with KernelNursery() as nursery:
        await asyncio.gather(*(nursery.start_kernel("python3") for _ in range(3)))
        kernels = nursery.list_kernels()
        print(len(kernels), "kernels running")
        first = kernels[0]
        async with first.events() as events:
            await nursery.shutdown_kernel(first.kernel_id)
            event = await events.receive()
            print("first kernel:", event.kind, "with status", event.exit_status)


asyncio.run(main())
