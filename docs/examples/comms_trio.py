"""Talk to objects in the kernel over comms, both ways (ipykernel's comm API on its side)."""

from __future__ import annotations

import trio

from kernel_nursery import start_kernel

KERNEL_SIDE = """
import comm

def on_open(c, open_msg):
    # A comm to "doubler" answers each number it is sent with its double.
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

        # A comm we open, to a target the kernel registered.
        async with kc.open_comm("doubler") as comm:
            for n in (1, 21):
                await comm.send({"n": n})
                reply = await comm.receive()
                print("double of", n, "is", reply.content["data"]["double"])

        # A comm the kernel opens, to a target we accept.
        with kc.accept_comms("progress") as incoming:
            await kc.execute(KERNEL_OPENS, timeout=30)
            async with await incoming.receive() as progress:
                print("progress opened, total", progress.open_data["total"])
                async for msg in progress:  # ends when the kernel closes the comm
                    print("done", msg.content["data"]["done"])


trio.run(main)
