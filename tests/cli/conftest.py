"""What the command-line tests share: running the real command in a subprocess, and kernels."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from ..conftest import FAKE_KERNEL, write_kernel
from ..helpers.terminal import Terminal

BACKENDS = ["asyncio", "trio"]

#: Prefixed to a kernel's command: the kernel's own banner, on its stdout and stderr.
NOISY = 'echo BANNER-OUT; echo BANNER-ERR >&2; exec "$@"'


def cli(
    *args: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kernel_nursery ARGS`` and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "kernel_nursery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def kernels(jupyter_dirs: dict[str, Path]) -> Path:
    """Jupyter's kernels folder of this test (JUPYTER_PATH comes first)."""
    return jupyter_dirs["path"] / "kernels"


@pytest.fixture
def fake(kernels: Path) -> str:
    """A kernel named 'fake' (tests/helpers/fake_kernel.py) that prints a banner on its stdout
    and stderr when it starts."""
    argv = ["sh", "-c", NOISY, "sh", sys.executable, FAKE_KERNEL, "{connection_file}"]
    write_kernel(kernels, "fake", {"argv": argv, "display_name": "Fake Kernel"})
    return "fake"


@pytest.fixture
def noisy_python(kernels: Path) -> str:
    """ipykernel as a kernel named 'noisy', printing a banner on its stdout and stderr."""
    argv = ["sh", "-c", NOISY, "sh", sys.executable, "-m", "ipykernel_launcher"]
    write_kernel(kernels, "noisy", {"argv": [*argv, "-f", "{connection_file}"]})
    return "noisy"


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    """Terminals opened by the test (append them); each is closed after it."""
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


@asynccontextmanager
async def command(*args: str) -> AsyncIterator[tuple[anyio.abc.Process, BufferedByteReceiveStream]]:
    """Run ``python -m kernel_nursery ARGS``; yield it with its standard output. It is killed
    if the test fails before it exits."""
    proc = await anyio.open_process([sys.executable, "-m", "kernel_nursery", *args])
    assert proc.stdout is not None
    try:
        yield proc, BufferedByteReceiveStream(proc.stdout)
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.aclose()


async def first_line(stdout: BufferedByteReceiveStream) -> str:
    """The first line the command prints, once it does."""
    with anyio.fail_after(60):
        return (await stdout.receive_until(b"\n", 10_000)).decode()


async def read_all(stream: anyio.abc.ByteReceiveStream | BufferedByteReceiveStream) -> str:
    """Everything left in *stream*, until it ends."""
    data = b""
    with anyio.fail_after(30):
        try:
            while True:
                data += await stream.receive()
        except anyio.EndOfStream:
            pass
    return data.decode()
