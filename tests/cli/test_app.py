"""Tests for kernel_nursery.cli: the real command, in a subprocess, on both backends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from kernel_nursery import KernelClient

from ..conftest import FAKE_KERNEL, write_kernel
from ..helpers.procs import exit_status, is_running, live_children

BACKENDS = ["asyncio", "trio"]
pytestmark = pytest.mark.timeout(120)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m kernel_nursery ARGS`` and capture what it prints."""
    return subprocess.run(
        [sys.executable, "-m", "kernel_nursery", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def kernels(jupyter_dirs: dict[str, Path]) -> Path:
    """Jupyter's kernels folder of this test (JUPYTER_PATH comes first)."""
    return jupyter_dirs["path"] / "kernels"


def test_specs_table_and_json(kernels: Path) -> None:
    """specs lists each kernel with its provisioner and whether it is available."""
    write_kernel(
        kernels,
        "fake",
        {
            "argv": [sys.executable, FAKE_KERNEL, "{connection_file}"],
            "display_name": "Fake Kernel",
            "language": "fake",
        },
    )
    write_kernel(
        kernels,
        "remote",
        {"argv": ["x"], "metadata": {"kernel_provisioner": {"provisioner_name": "remote-prov"}}},
    )
    table = cli("specs")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "DISPLAY"]
    fake = next(line for line in lines if line.startswith("fake "))
    assert "Fake Kernel" in fake and "local-provisioner" in fake and " yes " in fake
    remote = next(line for line in lines if line.startswith("remote "))
    assert "remote-prov" in remote and " no " in remote
    data = json.loads(cli("specs", "--json").stdout)["kernelspecs"]
    assert data["fake"]["available"] is True
    assert data["remote"]["available"] is False
    assert data["fake"]["spec"]["display_name"] == "Fake Kernel"
    assert "python3" in data


def test_provisioners_marks_the_default() -> None:
    """provisioners lists local-provisioner as the default."""
    out = cli("provisioners")
    assert out.returncode == 0
    row = next(line for line in out.stdout.splitlines() if line.startswith("local-provisioner"))
    assert "kernel_nursery.provisioning:LocalProvisioner" in row and row.endswith("*")


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_streams_output_and_results(backend: str) -> None:
    """run prints what the code prints and the value of its last expression; exit 0."""
    out = cli(
        "run",
        "--backend",
        backend,
        "python3",
        "import sys; print('out'); print('err', file=sys.stderr); 6 * 7",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["out", "42"]
    assert "err" in out.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_error_exits_1_with_traceback(backend: str) -> None:
    """Code that raises: its traceback on stderr (no colour codes when piped), exit 1."""
    out = cli("run", "--backend", backend, "1 / 0")
    assert out.returncode == 1
    assert "ZeroDivisionError" in out.stderr
    assert "\x1b[" not in out.stderr


def test_run_file(tmp_path: Path) -> None:
    """run -f FILE runs the file's code."""
    script = tmp_path / "s.py"
    script.write_text("print('from file')\n")
    out = cli("run", "python3", "-f", str(script))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "from file"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope", "1"], "no kernel named 'nope' (available: "),
        (["run"], "usage: kernel-nursery run"),
        (["run", "-f", "/no/such/file.py"], "cannot read /no/such/file.py"),
        (["start", "a", "b"], "at most one kernel name"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    """Errors a user makes: one line on stderr, no traceback, exit 2."""
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_provisioner_and_dying_kernel(kernels: Path) -> None:
    """A kernel whose provisioner is missing, or that dies while starting: one line, exit 2."""
    write_kernel(
        kernels,
        "remote",
        {"argv": ["x"], "metadata": {"kernel_provisioner": {"provisioner_name": "remote-prov"}}},
    )
    out = cli("run", "remote", "1")
    assert out.returncode == 2 and "'remote-prov' is not installed" in out.stderr
    write_kernel(
        kernels, "dies", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", "--exit", "3"]}
    )
    out = cli("run", "dies", "1")
    assert out.returncode == 2
    assert "exited with status 3 before it was ready" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_flags_reach_the_manager(kernels: Path) -> None:
    """--KernelManager.x=y reaches the manager, as in Jupyter applications."""
    write_kernel(
        kernels, "mute", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", "--mute"]}
    )
    out = cli("run", "mute", "1", "--KernelManager.ready_timeout=0.5")
    assert out.returncode == 2
    assert "did not answer within 0.5 s" in out.stderr


STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


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


@pytest.mark.anyio
@pytest.mark.parametrize("signum", STOP_SIGNALS)
async def test_start_serves_until_stopped(
    anyio_backend: str, kernels: Path, signum: signal.Signals
) -> None:
    """start prints the connection file; a client can use the kernel; Ctrl-C, SIGTERM or
    SIGHUP shuts it down, leaving no process and no connection file, and the command exits
    with 128 + the signal's number (it runs on the test's backend)."""
    write_kernel(kernels, "fake", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]})
    async with command("start", "fake", "--backend", anyio_backend) as (proc, stdout):
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
    assert status == 128 + signum, err
    assert f"Received {signum.name}; shutting the kernel down." in err
    assert not is_running(kernel_pid)
    assert not connection_file.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("signum", STOP_SIGNALS)
async def test_run_stopped_by_a_signal(
    anyio_backend: str, jupyter_dirs: dict[str, Path], signum: signal.Signals
) -> None:
    """run, stopped while the code runs by Ctrl-C, SIGTERM or SIGHUP, shuts the kernel down
    (no process, no connection file) and exits with 128 + the signal's number."""
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    async with command("run", "--backend", anyio_backend, "python3", code) as (proc, stdout):
        kernel_pid = int(await first_line(stdout))
        assert is_running(kernel_pid)
        proc.send_signal(signum)
        status, err = await exit_status(proc)
    assert status == 128 + signum, err
    assert f"Received {signum.name}; shutting the kernel down." in err
    assert not is_running(kernel_pid)
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_beyond_loopback_is_warned_once(kernels: Path, backend: str) -> None:
    """A kernel listening on 0.0.0.0 makes the command print, once on stderr, that its
    messages travel unencrypted; a loopback kernel prints no such warning."""
    write_kernel(kernels, "fake", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]})
    out = cli("run", "--backend", backend, "fake", "1", "--KernelManager.ip=0.0.0.0")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("unencrypted") == 1, out.stderr
    assert "listens on 0.0.0.0, beyond loopback" in out.stderr
    loopback = cli("run", "--backend", backend, "fake", "1")
    assert loopback.returncode == 0, loopback.stderr
    assert "unencrypted" not in loopback.stderr
