"""Tests for kernel_nursery.blocking: a kernel for synchronous code, also from inside a running
event loop, leaving nothing behind however its block ends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kernel_nursery import (
    KernelReplyError,
    KernelStateError,
    KernelTimeoutError,
    NoSuchKernelSpecError,
)
from kernel_nursery.blocking import start_kernel

from ..helpers.kernels import SpecFactory

pytestmark = pytest.mark.timeout(120)

BACKENDS = ["asyncio", "trio"]


def pid_gone(pid: int) -> bool:
    """Whether no process *pid* exists (zombies of our own children count as gone once
    reaped by their parent, which is not us here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_execute_interrupt_and_shutdown_from_plain_code(backend: str) -> None:
    """In a with block: code runs, input is answered by a plain function, running code is
    interrupted from another thread; the block's end leaves no kernel."""
    with start_kernel("python3", backend=backend) as kernel:
        assert kernel.is_alive()
        result = kernel.execute("print(input('who? '))", timeout=30, stdin_handler=lambda p, _: p)
        assert result.stdout == "who? \n"
        assert kernel.is_complete("for i in x:").status == "incomplete"

        timer = threading.Timer(1.0, kernel.interrupt)
        timer.start()
        interrupted = kernel.execute("import time; time.sleep(60)", timeout=30)
        timer.join()
        assert interrupted.error is not None and interrupted.error["ename"] == "KeyboardInterrupt"
        pid = kernel.manager.pid
        assert pid is not None
    assert pid_gone(pid)


def test_works_where_an_asyncio_loop_is_already_running() -> None:
    """Called from a coroutine (its thread runs an asyncio loop), the blocking face works,
    where a second loop in that thread would fail with 'already running'."""

    async def notebook_cell() -> str:
        with start_kernel("python3") as kernel:
            return kernel.execute("print(6 * 7)", timeout=30).stdout

    assert asyncio.run(notebook_cell()) == "42\n"


def test_an_error_in_the_block_shuts_the_kernel_down() -> None:
    """An exception raised in the block propagates as it is, after the kernel is gone; a
    timed-out execute raises KernelTimeoutError; a bad kernel name fails cleanly; a kernel
    used after its block raises KernelStateError."""
    pids: list[int | None] = []

    def fail_inside() -> None:
        with start_kernel("python3") as kernel:
            pids.append(kernel.manager.pid)
            with pytest.raises(KernelTimeoutError):
                kernel.execute("import time; time.sleep(5)", timeout=0.2)
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        fail_inside()
    [pid] = pids
    with start_kernel("python3") as kernel:
        pass
    with pytest.raises(KernelStateError, match="inside its 'with' block"):
        kernel.execute("1")
    assert pid is not None and pid_gone(pid)
    with pytest.raises(NoSuchKernelSpecError), start_kernel("no-such-kernel"):
        pass


@pytest.mark.parametrize("backend", BACKENDS)
def test_ready_timeout_bounds_the_start(backend: str, fake_spec: SpecFactory) -> None:
    """ready_timeout is the start's: a kernel slower to answer fails the start with
    KernelTimeoutError (it was ignored, and the block began once the kernel answered)."""
    began = time.monotonic()
    with (
        pytest.raises(KernelTimeoutError, match="1 s"),
        start_kernel(
            kernel_spec=fake_spec("--slow-start", "60"), backend=backend, ready_timeout=1.0
        ),
    ):
        pytest.fail("the block began")
    # Generous: the bound is the timeout plus a start and a stop on a loaded machine.
    assert time.monotonic() - began < 30


# Leaves a file behind when the kernel exits normally, which a SIGTERM does not let it do.
ATEXIT_CODE = "import atexit, pathlib; atexit.register(pathlib.Path({!r}).touch)"


@pytest.mark.parametrize("now", [False, True])
def test_an_error_in_the_block_shuts_down_politely_unless_told(now: bool, tmp_path: Path) -> None:
    """After an exception in the block the kernel is asked to shut down (it exits normally,
    as from the async face), or with shutdown_now_on_error stopped by signal at once."""
    marker = tmp_path / "exited-normally"
    with pytest.raises(KeyError, match="mine"):  # noqa: PT012 (the block is the subject)
        with start_kernel("python3", shutdown_now_on_error=now) as kernel:
            kernel.execute(ATEXIT_CODE.format(str(marker)), timeout=30)
            pid = kernel.manager.pid
            raise KeyError("mine")
    assert pid is not None and pid_gone(pid)
    assert marker.exists() is not now


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_replies_are_returned_or_raised_on_request(
    backend: str, fake_spec: SpecFactory
) -> None:
    """Requests return an error reply as it is, and raise KernelReplyError with
    raise_on_error, as the async client's do."""
    with start_kernel(kernel_spec=fake_spec("--error-replies"), backend=backend) as kernel:
        assert kernel.complete("x", timeout=30).status == "error"
        assert kernel.kernel_info(timeout=30, raise_on_error=True).status == "ok"
        with pytest.raises(KernelReplyError, match=r"complete_reply .*ValueError: asked"):
            kernel.complete("x", timeout=30, raise_on_error=True)
        with pytest.raises(KernelReplyError, match="inspect_reply"):
            kernel.inspect("x", timeout=30, raise_on_error=True)
        with pytest.raises(KernelReplyError, match="is_complete_reply"):
            kernel.is_complete("x", timeout=30, raise_on_error=True)


INTERRUPTED_SCRIPT = """
import sys, time
from kernel_nursery.blocking import start_kernel
try:
    with start_kernel("python3", backend=sys.argv[1]) as kernel:
        print(kernel.manager.pid, flush=True)
        kernel.execute("import time; time.sleep(60)")
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyboard_interrupt_during_an_execute_leaves_nothing(backend: str) -> None:
    """Ctrl-C (SIGINT to the script) while it waits for an execute ends the block by
    KeyboardInterrupt, with the (busy) kernel gone."""
    proc = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_SCRIPT, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        # Give the execute time to start waiting; the test holds however early the signal
        # lands in the block, only what it exercises changes.
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert "interrupted" in out, err
    assert proc.returncode == 0
    assert pid_gone(pid)


BLOCKED_INPUT_SCRIPT = """
import sys
from kernel_nursery.blocking import start_kernel
try:
    with start_kernel("python3", backend=sys.argv[1]) as kernel:
        kernel.execute("print('asking', flush=True); input('x? ')",
                       stdin_handler=lambda prompt, _: print(prompt, flush=True) or input())
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyboard_interrupt_while_the_stdin_handler_blocks(backend: str) -> None:
    """Ctrl-C while the stdin handler blocks in input() (its standard input never answers)
    ends the block at once with the kernel gone; the handler's thread does not hold up the
    block's end nor the interpreter's exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_INPUT_SCRIPT, backend],
        stdin=subprocess.PIPE,  # never written to, never closed until the end: input() blocks
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "x? \n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read()
    finally:
        proc.kill()
        proc.communicate()
    assert "interrupted" in out


EARLY_INTERRUPT_SCRIPT = """
import os, signal, sys, threading
from kernel_nursery.blocking import start_kernel
try:
    threading.Timer(float(sys.argv[2]), os.kill, (os.getpid(), signal.SIGINT)).start()
    with start_kernel("python3", backend=sys.argv[1]) as kernel:
        print(kernel.manager.pid, flush=True)
        threading.Event().wait(60)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_keyboard_interrupt_while_the_event_loop_starts(backend: str) -> None:
    """Ctrl-C however early in the block's start (while its event loop thread starts, while
    the kernel starts) ends it with KeyboardInterrupt, at once and leaving no kernel; it
    hung forever when it came before the loop ran."""
    for delay in ("0.005", "0.02", "0.05", "0.1"):
        done = subprocess.run(
            [sys.executable, "-c", EARLY_INTERRUPT_SCRIPT, backend, delay],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.split()
        assert lines[-1] == "interrupted", done.stderr
        if len(lines) == 2:
            assert pid_gone(int(lines[0]))
