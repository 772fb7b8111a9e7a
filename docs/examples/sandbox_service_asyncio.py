"""A small code-execution service: each request runs in a fresh sandboxed kernel taken from a
warm pool, under a deadline, and the kernel is gone when the request is answered."""

from __future__ import annotations

import asyncio
import sys

from kernel_nursery import KernelDiedError, KernelPool, KernelSpec

SANDBOXED_PYTHON = KernelSpec(
    argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    display_name="Python (sandboxed)",
    language="python",
    name="sandboxed-python",
    metadata={
        "kernel_provisioner": {
            "provisioner_name": "sandbox",
            "config": {
                "limits": {"memory": "256m", "pids": 64, "cpu_time": 30, "file_size": "10m"}
            },
        }
    },
)


async def run_request(pool: KernelPool, code: str, *, deadline: float) -> str:
    """Run *code* in a kernel of its own; at most *deadline* seconds."""
    async with pool.take() as km, km.client() as kc:
        try:
            async with asyncio.timeout(deadline):
                result = await kc.execute(code)
        except TimeoutError:
            return f"no answer within {deadline:g} s"
        except KernelDiedError as exc:
            return f"the kernel died: {exc.exit_status}"
        if result.error is not None:
            return f"error: {result.error['ename']}"
        return result.stdout.strip()
    # Leaving the block shut the kernel down: its folder, cgroup and processes are gone.


REQUESTS = [
    "print(sum(range(10)))",
    "import socket; socket.create_connection(('127.0.0.1', 22), timeout=2)",
    "open('/usr/lib/os-release', 'a')",
    "while True: pass",
]


async def main() -> None:
    # Two kernels kept warm; a taken kernel idle for a minute is shut down (culled).
    async with KernelPool(kernel_spec=SANDBOXED_PYTHON, size=2, cull_idle_timeout=60) as pool:
        await pool.wait_warm()
        answers = [""] * len(REQUESTS)

        async def serve(i: int) -> None:
            answers[i] = await run_request(pool, REQUESTS[i], deadline=5)

        async with asyncio.TaskGroup() as tasks:
            for i in range(len(REQUESTS)):
                tasks.create_task(serve(i))
        for code, answer in zip(REQUESTS, answers, strict=True):
            print(f"{code[:40]:42} -> {answer}")


if __name__ == "__main__":
    asyncio.run(main())
