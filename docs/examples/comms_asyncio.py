"""The comms example under asyncio."""

from __future__ import annotations

import asyncio

from kernel_nursery import start_kernel

KERNEL_SIDE = """
import comm

def on_open(c, open_msg):
    c.on_msg(lambda msg: c.send({"double": 2 * msg["content"]["data"]["n"]}))

comm.get_comm_manager().register_target("doubler", on_open)
"""

KERNEL_OPENS = """
from comm import create_comm
c = create_comm(target_name="progress", data={"total": 2})
c.send({"done": 1})
c.send({"done": 2})
c.close()
"""


async def main() -> None:
    async with start_kernel("python3") as km, km.client() as kc:
        await kc.execute(KERNEL_SIDE, timeout=30)

        async with kc.open_comm("doubler") as comm:
            for n in (1, 21):
                await comm.send({"n": n})
                reply = await comm.receive()
                print("double of", n, "is", reply.content["data"]["double"])

        with kc.accept_comms("progress") as incoming:
            await kc.execute(KERNEL_OPENS, timeout=30)
            async with await incoming.receive() as progress:
                print("progress opened, total", progress.open_data["total"])
                async for msg in progress:
                    print("done", msg.content["data"]["done"])


asyncio.run(main())
