"""Tests for ``kernel-nursery start`` (kernel_nursery.cli._start): the real command, in a
subprocess or on a pseudo-terminal, on both backends."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

from kernel_nursery import KernelClient

from ..conftest import FAKE_KERNEL, write_kernel
from ..helpers.procs import exit_status, is_running, live_children
from ..helpers.terminal import Terminal
from .conftest import NOISY, command, first_line, read_all

pytestmark = pytest.mark.timeout(120)

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.anyio
@pytest.mark.parametrize("signum", STOP_SIGNALS)
async def test_start_serves_until_stopped(
    anyio_backend: str, fake: str, signum: signal.Signals
) -> None:
    """start prints the connection file on stdout, alone (the kernel's banner goes to
    stderr); a client can use the kernel; Ctrl-C, SIGTERM or SIGHUP shuts it down, leaving no
    process and no connection file, and the command exits with 128 + the signal's number."""
    async with command("start", fake, "--backend", anyio_backend) as (proc, stdout):
        connection_file = Path((await first_line(stdout)).strip())
        assert connection_file.exists()
        (kernel_pid,) = (
            pid
            for pid in live_children(proc.pid)
            if str(connection_file) in Path(f"/proc/{pid}/cmdline").read_text()
        )
        async with KernelClient.from_connection_file(connection_file) as kc:
            reply = await kc.kernel_info(timeout=30)
            assert reply.content["implementation"] == "fake"
        proc.send_signal(signum)
        status, err = await exit_status(proc)
        assert await read_all(stdout) == ""
    assert status == 128 + signum, err
    assert "BANNER-OUT" in err and "BANNER-ERR" in err
    assert f"Received {signum.name}; shutting the kernel down." in err
    # The next step, with what the set-up installs (jupyter console may not be there).
    assert f"kernel-nursery run --existing {connection_file} CODE" in err
    assert not is_running(kernel_pid)
    assert not connection_file.exists()


def test_progress_line_on_a_terminal(fake: str, terminal: list[Terminal]) -> None:
    """On a terminal, a progress line turns while the kernel starts; the kernel's output
    written meanwhile wipes it first and never shares its line; Ctrl-C stops start (130)."""
    term = Terminal("start", fake)
    terminal.append(term)
    term.expect("Connect with: jupyter console --existing")
    term.type(b"\x03")
    assert term.wait() == 130, term.output
    assert "BANNER-OUT" in term.output
    assert "Starting kernel fake" in term.output
    for piece in term.output.split("\r\x1b[2K"):
        if "Starting kernel" in piece:
            assert re.fullmatch(". Starting kernel fake…", piece), piece


@pytest.mark.anyio
async def test_kernel_that_keeps_dying_is_given_up(anyio_backend: str, kernels: Path) -> None:
    """A kernel that keeps dying is restarted (its output, each time, still on stderr: the
    relay outlives restarts) and then given up: exit 1, stdout still the path alone."""
    argv = ["sh", "-c", NOISY, "sh", sys.executable, FAKE_KERNEL, "{connection_file}"]
    write_kernel(kernels, "crashy", {"argv": [*argv, "--crash-after", "0.5"]})
    args = ["--backend", anyio_backend, "--KernelManager.restart_limit=1"]
    async with command("start", "crashy", *args) as (proc, stdout):
        status, err = await exit_status(proc)
        out = await read_all(stdout)
    assert status == 1, err
    assert len(out.splitlines()) == 1 and out.strip().endswith(".json")
    assert err.count("BANNER-OUT") == 2, err
    assert "Kernel restarted" in err and "Kernel dead (exit status 1)" in err


@pytest.mark.parametrize(
    ("argv", "policy"),
    [
        ([], "disabled"),
        (["--encrypt"], "auto"),
        (["--KernelManager.transport_encryption=required"], "required"),
    ],
)
def test_start_keeps_kernels_in_clear_unless_asked(argv: list[str], policy: str) -> None:
    """start hands its connection file to other tools, which may predate CurveZMQ: its kernels
    run in clear by default; --encrypt asks for 'auto', and the manager's setting wins."""
    from kernel_nursery.cli._start import StartApp

    app = StartApp()
    app.initialize(["python3", *argv])
    assert app.kernel_manager("python3").transport_encryption == policy
