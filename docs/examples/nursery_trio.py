"""Many kernels in one scope, started concurrently, with their lifecycle events."""

from __future__ import annotations

import trio

from kernel_nursery import KernelNursery


async def main() -> None:
    async with KernelNursery() as nursery:
        async with trio.open_nursery() as tasks:
            for _ in range(3):
                tasks.start_soon(nursery.start_kernel, "python3")
        kernels = nursery.list_kernels()
        print(len(kernels), "kernels running")
        first = kernels[0]
        async with first.events() as events:
            await nursery.shutdown_kernel(first.kernel_id)
            event = await events.receive()
            print("first kernel:", event.kind, "with status", event.exit_status)
    # the other two are shut down here, concurrently


trio.run(main)
