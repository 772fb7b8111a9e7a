"""The streaming example under asyncio."""

from __future__ import annotations

import asyncio

from kernel_nursery import ExecuteResult, KernelClient, start_kernel
from kernel_nursery.messaging import ErrorOutput, StreamOutput

CODE = """
import time
for step in range(3):
    print(f"step {step}", flush=True)
    time.sleep(0.1)
1 / 0
"""


async def watch(kc: KernelClient, subscribed: asyncio.Event) -> None:
    # Every subscriber gets every message: statuses, outputs, comms, other clients' traffic.
    with kc.subscribe_iopub() as messages:
        subscribed.set()
        async for msg in messages:
            if msg.msg_type == "status":
                state = msg.content["execution_state"]
                print("kernel is", state)
                if state == "idle" and msg.parent_header.get("msg_type") == "execute_request":
                    return  # idle again after our code: the watch is over


async def main() -> None:
    async with start_kernel("python3") as km, km.client() as kc:
        subscribed = asyncio.Event()
        watcher = asyncio.create_task(watch(kc, subscribed))
        await subscribed.wait()
        async with kc.execute_stream(CODE, timeout=30) as outputs:
            async for out in outputs:
                match out:
                    case StreamOutput(text=text):
                        print("printed:", text.strip())
                    case ErrorOutput(ename=ename):
                        print("raised:", ename)
                    case ExecuteResult(status=status):
                        print("finished:", status)
        await watcher


asyncio.run(main())
