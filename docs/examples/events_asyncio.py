"""Lifecycle events under asyncio: crash the kernel, see it restarted."""

from __future__ import annotations

import asyncio
import signal

import kernel_nursery


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km:
        async with km.events() as events:
            await km.signal_kernel(signal.SIGKILL)
            async for event in events:
                print(event.kind, event.exit_status)
                if event.kind == "restarted":
                    break
        print("alive again:", await km.is_alive())


asyncio.run(main())
