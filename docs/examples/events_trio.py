"""Watch a kernel's lifecycle without polling: crash it, and see it restarted."""

from __future__ import annotations

import signal

import trio

import kernel_nursery


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km:
        async with km.events() as events:  # ends when the manager closes
            await km.signal_kernel(signal.SIGKILL)  # a crash, as far as the manager knows
            async for event in events:
                print(event.kind, event.exit_status)
                if event.kind == "restarted":
                    break
        print("alive again:", await km.is_alive())


trio.run(main)
