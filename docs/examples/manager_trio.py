"""A kernel managed in a scope, under trio: start, run code, interrupt it, restart, done."""

from __future__ import annotations

import trio

import kernel_nursery
from kernel_nursery import ExecuteResult
from kernel_nursery.messaging import StreamOutput


async def main() -> None:
    async with kernel_nursery.start_kernel("python3") as km:  # started and ready
        async with km.client() as kc:
            result = await kc.execute("import os; print(os.getpid())", timeout=30)
            print("kernel says its pid is", result.stdout.strip())
            # Code that would run for a minute: interrupt it once it has started.
            code = "import time; print('sleeping', flush=True); time.sleep(60)"
            async with kc.execute_stream(code, timeout=30) as outputs:
                async for out in outputs:
                    if isinstance(out, StreamOutput):
                        await km.interrupt_kernel()  # SIGINT, or interrupt_request, per spec
                    elif isinstance(out, ExecuteResult) and out.error:
                        print("interrupted:", out.error.ename)  # KeyboardInterrupt
        await km.restart_kernel()  # same id, ports and key; a new process
        print("restarted, alive:", await km.is_alive())
    # Shut down politely here (then by force after km.shutdown_wait_time), whatever happened.


trio.run(main)
