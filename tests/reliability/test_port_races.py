"""Two processes starting kernels at the same moment do not fail on each other's ports.

Ports are drawn at random below the ephemeral range and reserved per process only, so a kernel
of another process can bind one of ours in the moment between our choice and our kernel's
bind. The manager then starts the kernel again on new ports (``port_conflict_retries``). These
tests run two real processes that each start 30 fake kernels at once, and check that every
start succeeds.

Two things make it hold, besides the retry: ``wait_for_ready`` sends ``kernel_info_request``
again when it is not answered (the first one may have reached the other process's kernel, which
held the port for a moment), and port reservations bind with ``SO_REUSEADDR`` (a plain bind
would make the other process's kernel fail to bind the port while we test it).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from ..conftest import FAKE_KERNEL

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

#: Kernels each process starts at once.
KERNELS = 30
#: Ports in the narrowed window both processes draw from: as few as the library allows (with
#: fewer than 1000 below the ephemeral range it lets the OS choose instead).
WINDOW_WIDTH = 1000

CHILD = '''\
"""Start many fake kernels at once in one KernelNursery; print the outcome as JSON."""

import json
import logging
import sys

import anyio

from kernel_nursery import KernelNursery, KernelSpec
from kernel_nursery.connection import _ports

backend, kernel_script = sys.argv[1], sys.argv[2]
kernels, lowest, width = (int(a) for a in sys.argv[3:6])
if width:
    # Every process draws from the same narrow window: collisions become likely.
    _ports._LOWEST_PORT = lowest
    _ports._ephemeral_range = lambda: (lowest + width, 60999)

log = logging.getLogger("port-race")
log.setLevel(logging.WARNING)
log.addHandler(logging.StreamHandler(sys.stderr))
spec = KernelSpec(
    argv=[sys.executable, kernel_script, "{connection_file}"],
    display_name="Fake",
    language="fake",
    name="fake",
)


async def main() -> None:
    successes = 0
    failures = []

    async def start(nursery: KernelNursery) -> None:
        nonlocal successes
        try:
            await nursery.start_kernel(kernel_spec=spec, ready_timeout=30)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        else:
            successes += 1

    async with KernelNursery(log=log) as nursery:
        async with anyio.create_task_group() as tg:
            for _ in range(kernels):
                tg.start_soon(start, nursery)
    print(json.dumps({"successes": successes, "failures": failures}), flush=True)


print("ready", flush=True)  # imported: wait for the go, so both processes start together
sys.stdin.readline()
anyio.run(main, backend=backend)
'''


async def next_line(stream: BufferedByteReceiveStream) -> bytes:
    """The next line a child printed, or ``b""`` when it closed its output first."""
    try:
        return await stream.receive_until(b"\n", 1_000_000)
    except anyio.IncompleteRead:
        return b""


async def race(
    tmp_path: Path, backend: str, *, lowest: int, width: int
) -> tuple[list[dict[str, Any]], int]:
    """Run two child processes that start KERNELS kernels each, released at the same moment,
    drawing ports from [lowest, lowest + width) (width 0: as the library does); return their
    reports and how many retries on new ports their logs show."""
    script = tmp_path / "port_race_child.py"
    script.write_text(CHILD, encoding="utf-8")
    argv = [sys.executable, str(script), backend, FAKE_KERNEL, str(KERNELS)]
    argv += [str(lowest), str(width)]
    logs = [tmp_path / f"child-{i}.log" for i in range(2)]
    reports = []
    async with AsyncExitStack() as stack:
        procs = []
        for log in logs:
            err = stack.enter_context(log.open("wb"))  # a file: a full pipe cannot block it
            proc = await anyio.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
            procs.append(await stack.enter_async_context(proc))
        streams = []
        for proc, log in zip(procs, logs, strict=True):
            assert proc.stdout is not None
            stream = BufferedByteReceiveStream(proc.stdout)
            assert await next_line(stream) == b"ready", log.read_text()
            streams.append(stream)
        for proc in procs:
            assert proc.stdin is not None
            await proc.stdin.send(b"go\n")
        for proc, stream, log in zip(procs, streams, logs, strict=True):
            line = await next_line(stream)
            status = await proc.wait()
            assert status == 0 and line, f"child exited with {status}: {log.read_text()}"
            reports.append(json.loads(line))
    retries = sum(log.read_text().count("trying again on new ports") for log in logs)
    return reports, retries


@pytest.mark.parametrize("width", [0, WINDOW_WIDTH], ids=["ports-below-ephemeral", "narrow-window"])
async def test_two_processes_starting_kernels_at_once_all_succeed(
    tmp_path: Path, anyio_backend: str, width: int
) -> None:
    """Two processes starting 30 kernels each at the same moment start all 60, retrying on new
    ports when the other process's kernel took one first."""
    # Below this machine's ephemeral range (32768 and up), in a window of its own (the other
    # backend's run never shares it): the ports a run used linger in TIME_WAIT for a minute.
    lowest = 10000 + WINDOW_WIDTH * (2 * secrets.randbelow(11) + (anyio_backend == "trio"))
    reports, retries = await race(tmp_path, anyio_backend, lowest=lowest, width=width)
    failures = [message for report in reports for message in report["failures"]]
    window = f"{lowest}-{lowest + width - 1}" if width else "default"
    print(f"port race ({anyio_backend}, ports {window}): {retries} retries, failures {failures}")
    assert failures == []
    assert sum(report["successes"] for report in reports) == 2 * KERNELS
