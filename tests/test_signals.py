"""Tests for kernel_nursery.cancel_on_signals: in this process, and in real programs that are
sent SIGTERM, SIGHUP and SIGINT while a kernel runs."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from kernel_nursery import KernelStateError, SignalCancel, cancel_on_signals

from .conftest import FAKE_KERNEL
from .helpers.procs import exit_status, is_running

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- in this process


@pytest.mark.anyio
async def test_signal_cancels_the_block() -> None:
    """The first signal cancels the block, which ends without an exception; it is recorded."""
    async with cancel_on_signals(signal.SIGUSR1) as caught:
        os.kill(os.getpid(), signal.SIGUSR1)
        await anyio.sleep_forever()
    assert caught.signum == signal.SIGUSR1
    assert caught.exit_status == 128 + signal.SIGUSR1
    assert repr(caught) == "<SignalCancel signum=SIGUSR1>"


@pytest.mark.anyio
async def test_no_signal_leaves_signum_none() -> None:
    """A block that ends by itself records no signal, and its exit status is None."""
    async with cancel_on_signals(signal.SIGUSR1) as caught:
        await anyio.lowlevel.checkpoint()
    assert isinstance(caught, SignalCancel)
    assert caught.signum is None
    assert caught.exit_status is None


@pytest.mark.anyio
async def test_block_exception_propagates_as_itself() -> None:
    """An exception raised in the block propagates as itself, not in an ExceptionGroup."""
    error = ValueError("from the block")
    with pytest.raises(ValueError, match="from the block") as info:
        async with cancel_on_signals(signal.SIGUSR1):
            raise error
    assert info.value is error


@pytest.mark.anyio
async def test_outer_cancellation_passes_through() -> None:
    """A cancellation from an enclosing scope ends the block and is not mistaken for a signal."""
    with anyio.CancelScope() as outer:
        async with cancel_on_signals(signal.SIGUSR1) as caught:
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert caught.signum is None


@pytest.mark.anyio
async def test_previous_handler_is_restored() -> None:
    """After the block, a signal has the handler it had before (asyncio's loop would reset it
    to the default action)."""
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        async with cancel_on_signals(signal.SIGUSR1, signal.SIGUSR2):
            assert signal.getsignal(signal.SIGUSR1) != handler
        assert signal.getsignal(signal.SIGUSR1) == handler
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.anyio
async def test_ignored_signal_stays_ignored() -> None:
    """A signal the process ignores when the block starts (SIGHUP under nohup) stays ignored;
    the others still cancel the block."""
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        async with cancel_on_signals(signal.SIGUSR1, signal.SIGUSR2) as caught:
            assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
            await anyio.sleep_forever()
        assert caught.signum == signal.SIGUSR2
        async with cancel_on_signals(signal.SIGUSR1) as caught:  # nothing to receive at all
            await anyio.lowlevel.checkpoint()
        assert caught.signum is None
    finally:
        signal.signal(signal.SIGUSR1, previous)


@pytest.mark.anyio
async def test_nested_blocks_for_the_same_signal_are_refused() -> None:
    """A second block for a signal an open block already receives is a KernelStateError."""
    async with cancel_on_signals(signal.SIGUSR1, signal.SIGUSR2):
        with pytest.raises(KernelStateError, match="already active for SIGUSR2"):
            async with cancel_on_signals(signal.SIGUSR2):
                pass  # pragma: no cover
    async with cancel_on_signals(signal.SIGUSR2) as caught:  # free again
        pass
    assert caught.signum is None


def test_bad_signals_are_refused_at_once() -> None:
    """A number that is no signal, and SIGKILL, which cannot be caught: ValueError."""
    with pytest.raises(ValueError, match="is not a valid Signals"):
        cancel_on_signals(10_000)
    with pytest.raises(ValueError, match="SIGKILL cannot be caught"):
        cancel_on_signals(signal.SIGTERM, signal.SIGKILL)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_outside_the_main_thread_is_refused(backend: str) -> None:
    """In another thread, where Python cannot install signal handlers: KernelStateError."""
    errors: list[BaseException] = []

    async def use() -> None:
        async with cancel_on_signals():
            pass  # pragma: no cover

    def in_thread() -> None:
        try:
            anyio.run(use, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], KernelStateError)
    assert "only in the main thread" in str(errors[0])


# ---------------------------------------------------------------- real programs

PROGRAM = """
import json
import logging
import sys

import anyio

from kernel_nursery import KernelSpec, cancel_on_signals, start_kernel

backend, kernel, shutdown_wait_time = sys.argv[1], sys.argv[2], float(sys.argv[3])
logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
for noisy in ("asyncio", "traitlets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


async def main() -> int | None:
    if kernel == "python3":
        options = {}
    else:
        options = {"kernel_spec": KernelSpec(**json.loads(kernel))}
    async with cancel_on_signals() as caught:
        async with start_kernel(shutdown_wait_time=shutdown_wait_time, **options) as km:
            try:
                print(km.provisioner.pid, km.provisioner.connection_file, flush=True)
                await anyio.sleep_forever()
            finally:
                print("cleaning up", flush=True)
    return caught.exit_status


sys.exit(anyio.run(main, backend=backend))
"""


def fake_kernel(*args: str) -> str:
    """The JSON of a kernel spec for the fake kernel, as PROGRAM takes it."""
    return json.dumps({"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", *args]})


@asynccontextmanager
async def program(
    tmp_path: Path, backend: str, kernel: str, shutdown_wait_time: float = 5
) -> AsyncIterator[tuple[anyio.abc.Process, BufferedByteReceiveStream]]:
    """Run PROGRAM; yield it with its standard output. It is killed if the test fails early."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    argv = [sys.executable, str(script), backend, kernel, str(shutdown_wait_time)]
    proc = await anyio.open_process(argv)
    assert proc.stdout is not None
    try:
        yield proc, BufferedByteReceiveStream(proc.stdout)
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.aclose()


async def kernel_up(stdout: BufferedByteReceiveStream) -> tuple[int, Path]:
    """The kernel's pid and connection file, once the program prints them."""
    with anyio.fail_after(60):
        line = (await stdout.receive_until(b"\n", 10_000)).decode()
    pid, connection_file = line.split()
    assert is_running(int(pid))
    assert Path(connection_file).exists()
    return int(pid), Path(connection_file)


@pytest.mark.anyio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_program_sent_a_signal_shuts_its_kernel_down(
    anyio_backend: str, tmp_path: Path, signum: signal.Signals
) -> None:
    """A program sent SIGTERM or SIGHUP shuts its kernel down, removes the connection file and
    exits with 128 + the signal's number (the program runs on the test's backend)."""
    async with program(tmp_path, anyio_backend, fake_kernel()) as (proc, stdout):
        pid, connection_file = await kernel_up(stdout)
        proc.send_signal(signum)
        status, err = await exit_status(proc)
    assert status == 128 + signum, err
    assert not is_running(pid)
    assert not connection_file.exists()
    assert f"Received {signum.name}: cancelling the block" in err


@pytest.mark.anyio
async def test_program_interrupted_by_sigint_still_cleans_up(
    anyio_backend: str, tmp_path: Path
) -> None:
    """SIGINT, which cancel_on_signals() leaves alone by default, is KeyboardInterrupt on both
    backends: the kernel is shut down too, and the program ends by SIGINT."""
    async with program(tmp_path, anyio_backend, fake_kernel()) as (proc, stdout):
        pid, connection_file = await kernel_up(stdout)
        proc.send_signal(signal.SIGINT)
        status, err = await exit_status(proc)
    assert status == -signal.SIGINT, err
    assert "KeyboardInterrupt" in err
    assert "cancelling the block" not in err
    assert not is_running(pid)
    assert not connection_file.exists()


@pytest.mark.anyio
async def test_second_signal_during_cleanup_is_ignored(anyio_backend: str, tmp_path: Path) -> None:
    """A signal that comes while the kernel is being shut down does not interrupt the cleanup
    (here the kernel ignores the shutdown request and SIGTERM: the cleanup takes seconds)."""
    kernel = fake_kernel("--ignore-shutdown", "--ignore-term")
    async with program(tmp_path, anyio_backend, kernel, shutdown_wait_time=2) as (proc, stdout):
        pid, connection_file = await kernel_up(stdout)
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            assert await stdout.receive_until(b"\n", 100) == b"cleaning up"
        proc.send_signal(signal.SIGHUP)
        status, err = await exit_status(proc)
    assert status == 128 + signal.SIGTERM, err
    assert "Received SIGHUP while cleaning up after SIGTERM: ignored" in err
    assert not is_running(pid)
    assert not connection_file.exists()


@pytest.mark.anyio
async def test_program_with_ipykernel_shuts_it_down(anyio_backend: str, tmp_path: Path) -> None:
    """The same with the real python3 kernel (ipykernel): SIGTERM, exit 143, nothing left."""
    async with program(tmp_path, anyio_backend, "python3") as (proc, stdout):
        pid, connection_file = await kernel_up(stdout)
        proc.send_signal(signal.SIGTERM)
        status, err = await exit_status(proc)
    assert status == 128 + signal.SIGTERM, err
    assert not is_running(pid)
    assert not connection_file.exists()
