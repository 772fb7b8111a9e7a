"""Start more fake kernels than fit under a lowered open-file limit, in one nursery, and report.

Usage: many_kernels.py BACKEND SOFT_LIMIT COUNT READY_TIMEOUT

Lowers this process's soft RLIMIT_NOFILE to SOFT_LIMIT, starts COUNT fake kernels at once in one
:class:`~kernel_nursery.KernelNursery`, asks five kernels that started for their kernel_info
(through their managers), and prints one JSON object: the kernels' pids, each failed start's error
type, message and duration, whether the running kernels answered, the connection files present
while they ran, and the descriptors open before the nursery and after it closed. Run in a
process of its own so that the lowered limit touches nothing else.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import anyio
import zmq

sys.path.insert(0, str(Path(__file__).parents[2]))

from kernel_nursery import KernelNursery
from tests.helpers.kernels import FAKE_KERNEL, spec_maker


def open_fds() -> int:
    """Descriptors open in this process (less the one listdir opens)."""
    return len(os.listdir("/proc/self/fd")) - 1


async def main(count: int, ready_timeout: float) -> dict[str, object]:
    """Start *count* kernels at once; the report."""
    fake = spec_maker(FAKE_KERNEL, "fake")
    failures: list[dict[str, object]] = []
    report: dict[str, object] = {"failures": failures, "fds_before": open_fds()}
    async with KernelNursery() as nursery:

        async def start_one() -> None:
            began = time.monotonic()
            try:
                await nursery.start_kernel(kernel_spec=fake(), ready_timeout=ready_timeout)
            except Exception as exc:
                failures.append(
                    {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "seconds": time.monotonic() - began,
                    }
                )

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(start_one)
        kernels = nursery.list_kernels()
        report["pids"] = [km.pid for km in kernels]
        report["fds_running"] = open_fds()
        runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
        report["connection_files"] = len(list(runtime.glob("kernel-*.json")))
        answered = 0
        for km in kernels[:5]:
            # The manager's own client asks (kernel_info on shell, opened for it): a socket
            # for every kernel would need descriptors this process, at its limit, lacks.
            await km.wait_for_ready(timeout=30)
            answered += 1
        report["answered"] = answered
    # zmq closes a socket's descriptors in its reaper thread, after close() has returned (on a
    # loaded machine, late enough to be counted here): ending the context waits for that. A
    # socket left open would hold it forever, which the bound turns into a failure.
    with anyio.fail_after(30):
        await anyio.to_thread.run_sync(zmq.Context.instance().term, abandon_on_cancel=True)
    report["fds_after"] = open_fds()
    return report


if __name__ == "__main__":
    backend, limit, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    print(json.dumps(anyio.run(main, count, float(timeout), backend=backend)))
