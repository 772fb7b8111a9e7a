"""The same under asyncio."""

from __future__ import annotations

import asyncio

import kernel_nursery


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km:
        async with km.client() as kc:
            result = await kc.execute("import os; print(os.getpid())", timeout=30)
            print("kernel says its pid is", result.stdout.strip())
        await km.restart_kernel()
        print("restarted, alive:", await km.is_alive())


asyncio.run(main())
