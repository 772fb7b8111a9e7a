"""Launch the python3 kernel under trio, supervise it, and let the scope clean up."""

from __future__ import annotations

import trio

from kernel_nursery import KernelSpecManager, LocalProvisioner


async def main() -> None:
    spec = KernelSpecManager().get_kernel_spec("python3")
    async with LocalProvisioner(kernel_spec=spec) as kernel:
        launch = await kernel.pre_launch()
        info = await kernel.launch_kernel(launch.pop("cmd"), **launch)
        print(f"kernel pid {kernel.pid}, shell port {info['shell_port']}")
        print(f"connection file {kernel.connection_file}")
        with trio.move_on_after(1):  # a timeout is a scope, not a polling loop
            await kernel.wait()
        print("still running:", await kernel.poll() is None)
    # Leaving the block stopped the kernel and its process group, removed the
    # connection file and released the ports, even on an error or cancellation.
    print("exit status:", await kernel.poll())


trio.run(main)
