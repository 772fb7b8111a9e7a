"""Show outputs as they arrive, and watch everything the kernel publishes on iopub."""

from __future__ import annotations

import trio

from kernel_nursery import ExecuteResult, KernelClient, start_kernel
from kernel_nursery.messaging import ErrorOutput, StreamOutput

CODE = """
import time
for step in range(3):
    print(f"step {step}", flush=True)
    time.sleep(0.1)
1 / 0
"""


async def watch(kc: KernelClient, task_status: trio.TaskStatus[None]) -> None:
    # Every subscriber gets every message: statuses, outputs, comms, other clients' traffic.
    with kc.subscribe_iopub() as messages:
        task_status.started()
        async for msg in messages:
            if msg.msg_type == "status":
                state = msg.content["execution_state"]
                print("kernel is", state)
                if state == "idle" and msg.parent_header.get("msg_type") == "execute_request":
                    return  # idle again after our code: the watch is over


async def main() -> None:
    async with start_kernel("python3") as km, km.client() as kc:
        async with trio.open_nursery() as nursery:
            await nursery.start(watch, kc)
            async with kc.execute_stream(CODE, timeout=30) as outputs:
                async for out in outputs:
                    match out:
                        case StreamOutput(text=text):
                            print("printed:", text.strip())
                        case ErrorOutput(ename=ename):
                            print("raised:", ename)
                        case ExecuteResult(status=status):
                            print("finished:", status)


trio.run(main)
