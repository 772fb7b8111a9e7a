"""The same under asyncio: kernel-nursery is written against anyio."""

from __future__ import annotations

import asyncio

from kernel_nursery import KernelSpecManager, LocalProvisioner


async def main() -> None:
    spec = KernelSpecManager().get_kernel_spec("python3")
    async with LocalProvisioner(kernel_spec=spec) as kernel:
        launch = await kernel.pre_launch()
        info = await kernel.launch_kernel(launch.pop("cmd"), **launch)
        print(f"kernel pid {kernel.pid}, shell port {info['shell_port']}")
        try:
            async with asyncio.timeout(1):  # a timeout is a scope here too
                await kernel.wait()
        except TimeoutError:
            print("still running:", await kernel.poll() is None)
    print("exit status:", await kernel.poll())


asyncio.run(main())
