"""Start a kernel, run code in it through a KernelClient, and shut it down politely."""

from __future__ import annotations

import trio

from kernel_nursery import KernelClient, KernelSpecManager, LocalProvisioner
from kernel_nursery.provisioning import shutdown_kernel_process


async def main() -> None:
    spec = KernelSpecManager().get_kernel_spec("python3")
    async with LocalProvisioner(kernel_spec=spec) as kernel:
        launch = await kernel.pre_launch()
        info = await kernel.launch_kernel(launch.pop("cmd"), **launch)
        # wait_for_exit lets requests fail at once if the kernel dies.
        async with KernelClient(info, wait_for_exit=kernel.wait) as client:
            await client.wait_for_ready(timeout=60)
            result = await client.execute("import sys; print(sys.version_info[:2])", timeout=30)
            print("stdout:", result.stdout.strip())
            failed = await client.execute("1 / 0", timeout=30)
            print("error:", failed.error["ename"] if failed.error else None)
            await client.shutdown(timeout=10)
        # It exits by itself; SIGTERM, then SIGKILL, only if it has not within its wait time.
        print("exit status:", await shutdown_kernel_process(kernel, shutdown_requested=True))


trio.run(main)
