"""A kernel from synchronous code: a plain script, and code already running inside an event
loop (as in a notebook cell)."""

from __future__ import annotations

import asyncio
import threading

from kernel_nursery.blocking import start_kernel

with start_kernel("python3") as kernel:
    result = kernel.execute("print(input('your name: '))", stdin_handler=lambda p, pw: "Ada")
    print("printed:", result.stdout.strip())

    # Interrupt long-running code from another thread.
    threading.Timer(0.5, kernel.interrupt).start()
    stopped = kernel.execute("import time; time.sleep(60)")
    print("interrupted:", stopped.error["ename"] if stopped.error else None)
# The kernel is shut down here, however the block ends.


async def notebook_cell() -> str:
    # This thread runs an asyncio loop already; the blocking face runs its own elsewhere.
    with start_kernel("python3") as kernel:
        return kernel.execute("6 * 7").results[0]["text/plain"]


print("inside a running loop:", asyncio.run(notebook_cell()))
