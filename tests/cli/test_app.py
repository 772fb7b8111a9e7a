"""Tests for kernel_nursery.cli: the real command, in a subprocess, on both backends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from kernel_nursery import KernelClient

from ..conftest import FAKE_KERNEL, write_kernel

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


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_start_serves_until_interrupted(backend: str, kernels: Path) -> None:
    """start prints the connection file; a client can use the kernel; Ctrl-C shuts it down
    politely and the command exits 0, leaving no connection file."""
    write_kernel(kernels, "fake", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]})
    async with await anyio.open_process(
        [sys.executable, "-m", "kernel_nursery", "start", "fake", "--backend", backend],
    ) as proc:
        assert proc.stdout is not None
        with anyio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive(1)
        connection_file = Path(line.decode().strip())
        assert connection_file.exists()
        async with KernelClient.from_connection_file(connection_file) as kc:
            reply = await kc.kernel_info(timeout=30)
            assert reply.content["implementation"] == "fake"
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(30):
            assert await proc.wait() == 0
            assert proc.stderr is not None
            err = b""
            try:
                while True:
                    err += await proc.stderr.receive()
            except anyio.EndOfStream:
                pass
    assert not connection_file.exists()
    assert b"Received SIGINT; shutting the kernel down." in err
