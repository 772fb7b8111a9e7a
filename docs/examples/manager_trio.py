"""A kernel managed in a scope, under trio: start, run code, restart, interrupt, done."""

from __future__ import annotations

import trio

import kernel_nursery


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km:  # started and ready
        async with km.client() as kc:
            result = await kc.execute("import os; print(os.getpid())", timeout=30)
            print("kernel says its pid is", result.stdout.strip())
        await km.restart_kernel()  # same id, ports and key; a new process
        print("restarted, alive:", await km.is_alive())
    # Shut down politely here (then by force after km.shutdown_wait_time), whatever happened.


trio.run(main)
