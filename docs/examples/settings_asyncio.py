"""Manager settings and launch keywords side by side, under asyncio."""

from __future__ import annotations

import asyncio
import tempfile

import kernel_nursery


async def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        async with kernel_nursery.start_kernel(
            "python3",
            shutdown_wait_time=2,  # a KernelManager setting
            restart_limit=3,  # another one
            cwd=workdir,  # a launch keyword: the kernel's working directory
        ) as km:
            async with km.client() as kc:
                result = await kc.execute("import os; print(os.getcwd())", timeout=30)
            print("same directory:", result.stdout.strip() == workdir)
            print("shutdown_wait_time:", km.shutdown_wait_time)


asyncio.run(main())
