"""Manager settings and launch keywords side by side, under trio."""

from __future__ import annotations

import tempfile

import trio

import kernel_nursery


async def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        async with kernel_nursery.start_kernel(
            "python3", shutdown_wait_time=2, restart_limit=3, cwd=workdir
        ) as km:
            async with km.client() as kc:
                result = await kc.execute("import os; print(os.getcwd())", timeout=30)
            print("same directory:", result.stdout.strip() == workdir)
            print("shutdown_wait_time:", km.shutdown_wait_time)


trio.run(main)
