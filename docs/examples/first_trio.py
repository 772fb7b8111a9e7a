"""The first minute, under trio: a kernel, one line of code in it, gone at the end."""

from __future__ import annotations

import trio

import kernel_nursery


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km, km.client() as kc:
        result = await kc.execute("print(6 * 7)", timeout=30)
        print(result.stdout, end="")  # 42
    # The kernel is shut down here, however the block ended: no process, file or port left.


trio.run(main)
