"""Tests for ``kernel-nursery run`` (kernel_nursery.cli._run and ._ctrl_c): the real command,
in a subprocess or on a pseudo-terminal, on both backends."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from kernel_nursery import start_kernel

from ..conftest import FAKE_KERNEL, write_kernel
from ..helpers.procs import exit_status, is_running
from ..helpers.terminal import Terminal
from .conftest import BACKENDS, cli, command, first_line

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stdout_carries_only_the_codes_output(backend: str, noisy_python: str) -> None:
    """run prints the code's output and the value of its last expression on stdout, nothing
    else; the kernel's own stdout and stderr (its banner) go to stderr; no progress line
    when stderr is piped; exit 0."""
    code = "import sys; print('out'); print('err', file=sys.stderr); 6 * 7"
    out = cli("run", "--backend", backend, noisy_python, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "out\n42\n"
    assert "BANNER-OUT" in out.stderr and "BANNER-ERR" in out.stderr and "err" in out.stderr
    assert "Starting kernel" not in out.stderr


@pytest.mark.parametrize("destination", ["file", "null"])
def test_kernel_output_to_a_file_or_nowhere(
    tmp_path: Path, noisy_python: str, destination: str
) -> None:
    """--kernel-output FILE appends the kernel's own output to FILE; null discards it."""
    log = tmp_path / "kernel.log"
    target = str(log) if destination == "file" else "null"
    out = cli("run", noisy_python, "print('only this')", "--kernel-output", target)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "only this\n"
    assert "BANNER" not in out.stderr
    if destination == "file":
        assert "BANNER-OUT" in log.read_text() and "BANNER-ERR" in log.read_text()
        assert log.stat().st_mode & 0o777 == 0o600
    else:
        assert not log.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_error_exits_1_with_traceback(backend: str) -> None:
    """Code that raises: its traceback on stderr (no colour codes when piped), exit 1."""
    out = cli("run", "--backend", backend, "1 / 0")
    assert out.returncode == 1
    assert "ZeroDivisionError" in out.stderr
    assert "\x1b[" not in out.stderr


def test_run_files_in_one_kernel(tmp_path: Path) -> None:
    """run -f A -f B runs the files in turn in the same kernel ('-' is stdin) and stops at the
    first that raises, with exit 1."""
    (tmp_path / "b.py").write_text("print(x + 1)\n")
    (tmp_path / "bad.py").write_text("raise ValueError('bad file')\n")
    (tmp_path / "never.py").write_text("print('never')\n")
    args = ["-f", "-", "-f", str(tmp_path / "b.py")]
    out = cli(
        "run",
        *args,
        "-f",
        str(tmp_path / "bad.py"),
        "-f",
        str(tmp_path / "never.py"),
        stdin="x = 41\nprint(x)\n",
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout == "41\n42\n"
    assert "ValueError: bad file" in out.stderr
    assert f"stopped after {tmp_path / 'bad.py'}; not run: {tmp_path / 'never.py'}" in out.stderr


@pytest.mark.anyio
async def test_run_existing_kernel(anyio_backend: str, tmp_path: Path) -> None:
    """run --existing FILE runs the code in a running kernel and leaves it running (a closed
    pipe interrupts the code there); a file whose kernel is gone, or no file, is a one-line
    error."""
    async with start_kernel("python3") as km:
        assert km.connection_file is not None
        for code, printed in [("x = 6", ""), ("print(x * 7)", "42\n")]:
            out = await anyio.to_thread.run_sync(
                lambda code=code: cli(
                    "run", "--backend", anyio_backend, "--existing", str(km.connection_file), code
                )
            )
            assert out.returncode == 0, out.stderr
            assert out.stdout == printed
        # A closed pipe interrupts our code there (the kernel is free for the next request)
        # and leaves the kernel running.
        endless = "import itertools\nfor i in itertools.count(): print(i)"
        head = await anyio.to_thread.run_sync(
            lambda: first_line_then_close(
                "run", "--backend", anyio_backend, "--existing", str(km.connection_file), endless
            )
        )
        assert head == 141
        out = await anyio.to_thread.run_sync(
            lambda: cli("run", "--existing", str(km.connection_file), "print('free')")
        )
        assert out.stdout == "free\n", out.stderr
        assert await km.is_alive()
        dead = tmp_path / "dead.json"
        dead.write_text(Path(km.connection_file).read_text())
    missing = cli("run", "--existing", "/no/such/kernel.json", "1")
    assert missing.returncode == 2 and len(missing.stderr.splitlines()) == 1, missing.stderr
    gone = cli("run", "--existing", str(dead), "1", "--RunApp.existing_timeout=0.5")
    assert gone.returncode == 2, gone.stderr
    assert "did not answer readiness within 0.5 s" in gone.stderr


def first_line_then_close(*args: str) -> int:
    """Run the command, read one line of its stdout, close it (as ``| head -1``); its exit
    status, once it has written nothing to stderr but the kernel's own banner."""
    with subprocess.Popen(
        [sys.executable, "-m", "kernel_nursery", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    assert "Traceback" not in err and "Broken" not in err, err
    return status


@pytest.mark.parametrize("backend", BACKENDS)
def test_closed_pipe_ends_quietly(backend: str, jupyter_dirs: dict[str, Path]) -> None:
    """run ... | head -1: when stdout's reader goes, the command shuts the kernel down and
    exits 141 (as for SIGPIPE) without a word on stderr."""
    code = "import os; print(os.getpid(), flush=True)\nfor i in range(10**7): print(i)"
    with subprocess.Popen(
        [sys.executable, "-m", "kernel_nursery", "run", "--backend", backend, code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        kernel_pid = int(proc.stdout.readline())
        proc.stdout.close()
        err = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    assert status == 141, err
    assert "Traceback" not in err and "Broken" not in err, err
    assert not is_running(kernel_pid)
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


STOP_SIGNALS = [signal.SIGTERM, signal.SIGHUP]


@pytest.mark.anyio
@pytest.mark.parametrize("signum", STOP_SIGNALS)
async def test_run_stopped_by_a_signal(
    anyio_backend: str, jupyter_dirs: dict[str, Path], signum: signal.Signals
) -> None:
    """run, stopped while the code runs by SIGTERM or SIGHUP, shuts the kernel down (no
    process, no connection file) and exits with 128 + the signal's number."""
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    args = ["--backend", anyio_backend, "--KernelManager.shutdown_wait_time=1"]
    async with command("run", *args, "python3", code) as (proc, stdout):
        kernel_pid = int(await first_line(stdout))
        assert is_running(kernel_pid)
        proc.send_signal(signum)
        status, err = await exit_status(proc)
    assert status == 128 + signum, err
    assert f"Received {signum.name}; shutting the kernel down." in err
    assert not is_running(kernel_pid)
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_interrupts_the_code(
    backend: str, jupyter_dirs: dict[str, Path], terminal: list[Terminal]
) -> None:
    """On a terminal, the first Ctrl-C interrupts the running code: the kernel's
    KeyboardInterrupt is shown, the kernel is shut down, and run exits 130. The progress
    line shown while the kernel started never shares a line with other text."""
    code = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    term = Terminal("run", "--backend", backend, "python3", code)
    terminal.append(term)
    term.expect("pid ")
    term.expect("\n")
    kernel_pid = int(term.output.split("pid ", 1)[1].split()[0])
    term.type(b"\x03")
    assert term.wait() == 130, term.output
    assert "Interrupting the code" in term.output
    assert "KeyboardInterrupt" in term.output
    assert "Received SIGINT" not in term.output
    assert not is_running(kernel_pid)
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))
    assert "Starting kernel python3" in term.output  # the progress line, on a terminal
    for piece in term.output.split("\r\x1b[2K"):
        if "Starting kernel" in piece:
            assert re.fullmatch(". Starting kernel python3…", piece), piece


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_ctrl_c_stops_the_kernel(
    backend: str, jupyter_dirs: dict[str, Path], terminal: list[Terminal]
) -> None:
    """Code that survives the interrupt: a second Ctrl-C stops the kernel; exit 130."""
    code = (
        "import time\n"
        "while True:\n"
        "    try:\n"
        "        print('waiting', flush=True); time.sleep(60)\n"
        "    except KeyboardInterrupt:\n"
        "        print('survived', flush=True)\n"
    )
    term = Terminal("run", "--backend", backend, "--KernelManager.shutdown_wait_time=1", code)
    terminal.append(term)
    term.expect("waiting")
    term.type(b"\x03")
    term.expect("survived")
    term.type(b"\x03")
    assert term.wait() == 130, term.output
    assert "Received SIGINT; shutting the kernel down." in term.output
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_reads_the_terminal(
    backend: str, jupyter_dirs: dict[str, Path], terminal: list[Terminal]
) -> None:
    """On a terminal, input() in the code shows its prompt and reads a line typed there, and
    getpass() reads one without echoing it; Ctrl-C while the code waits for a password
    interrupts it (exit 130) and puts the terminal's echo back."""
    code = (
        "import getpass\n"
        "name = input('name? ')\n"
        "pw = getpass.getpass('pw? ')\n"
        "print('hello', name, pw[::-1])\n"
        "getpass.getpass('again? ')\n"
    )
    term = Terminal("run", "--backend", backend, code)
    terminal.append(term)
    term.expect("name? ")
    term.type(b"Ada\n")
    term.expect("pw? ")
    term.type(b"secret\n")
    term.expect("hello Ada terces")
    term.expect("again? ")
    assert not term.echoes()
    term.type(b"\x03")
    assert term.wait() == 130, term.output
    assert term.echoes()
    assert "Ada" in term.output and "secret" not in term.output  # the password was not echoed
    assert "KeyboardInterrupt" in term.output
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


def test_input_without_a_terminal_is_refused() -> None:
    """Without a terminal on standard input, the kernel is told stdin is not allowed: input()
    raises there at once (exit 1), nothing waits."""
    done = cli("run", "input('name? ')", timeout=90)
    assert done.returncode == 1, done.stderr
    assert "StdinNotImplementedError" in done.stderr


def test_code_from_a_closed_stdin_is_a_usage_error() -> None:
    """run -f - with standard input closed (0<&-) says so in one line, exit 2."""
    closed_stdin = ["sh", "-c", 'exec "$@" 0<&-', "sh"]
    done = subprocess.run(
        [*closed_stdin, sys.executable, "-m", "kernel_nursery", "run", "-f", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "kernel-nursery: cannot read -: standard input is closed"
    ], done.stderr


def test_closed_stdout_drops_the_output() -> None:
    """run with standard output closed (>&-) runs the code and drops its output, as Python's
    print() does then: exit 0, no traceback."""
    closed_stdout = ["sh", "-c", 'exec "$@" >&-', "sh"]
    done = subprocess.run(
        [*closed_stdout, sys.executable, "-m", "kernel_nursery", "run", "print(1)"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_while_the_kernel_starts(
    kernels: Path, jupyter_dirs: dict[str, Path], terminal: list[Terminal]
) -> None:
    """Ctrl-C while the kernel is still starting stops it at once: exit 130, nothing left."""
    argv = [sys.executable, FAKE_KERNEL, "{connection_file}", "--slow-start", "60"]
    write_kernel(kernels, "slow", {"argv": argv})
    term = Terminal("run", "slow", "1")
    terminal.append(term)
    term.expect("Starting kernel slow")
    term.type(b"\x03")
    assert term.wait() == 130, term.output
    assert "Received SIGINT; shutting the kernel down." in term.output
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


def test_unknown_provisioner_and_dying_kernel(kernels: Path) -> None:
    """A kernel whose provisioner is missing, or that dies while starting: one line, exit 2."""
    remote = {"argv": ["x"], "metadata": {"kernel_provisioner": {"provisioner_name": "remote"}}}
    write_kernel(kernels, "remote", remote)
    out = cli("run", "remote", "1")
    assert out.returncode == 2 and "'remote' is not installed" in out.stderr
    write_kernel(
        kernels, "dies", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", "--exit", "3"]}
    )
    out = cli("run", "dies", "1")
    assert out.returncode == 2
    assert "exited with status 3 before it was ready" in out.stderr
    assert "Traceback" not in out.stderr


def test_code_that_kills_its_kernel(jupyter_dirs: dict[str, Path]) -> None:
    """Code that takes its kernel down: one line saying so, exit 1, nothing left behind."""
    out = cli("run", "import os; os._exit(3)")
    assert out.returncode == 1, out.stderr
    assert "kernel-nursery: the kernel died while running the code (exit status 3)" in out.stderr
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


def test_config_flags_reach_the_manager(kernels: Path) -> None:
    """--KernelManager.x=y reaches the manager, as in Jupyter applications."""
    write_kernel(
        kernels, "mute", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", "--mute"]}
    )
    out = cli("run", "mute", "1", "--KernelManager.ready_timeout=0.5")
    assert out.returncode == 2
    assert "did not answer within 0.5 s" in out.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_beyond_loopback_is_warned_once(kernels: Path, backend: str) -> None:
    """A kernel listening on 0.0.0.0 in clear (its spec says it cannot encrypt) makes the
    command print, once on stderr, that its messages travel unencrypted; a loopback kernel
    prints no such warning."""
    argv = [sys.executable, FAKE_KERNEL, "{connection_file}"]
    write_kernel(kernels, "clear", {"argv": argv, "metadata": {"supported_encryption": []}})
    out = cli("run", "--backend", backend, "clear", "1", "--KernelManager.ip=0.0.0.0")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("unencrypted") == 1, out.stderr
    assert "listens on 0.0.0.0, beyond loopback" in out.stderr
    loopback = cli("run", "--backend", backend, "clear", "1")
    assert loopback.returncode == 0, loopback.stderr
    assert "unencrypted" not in loopback.stderr
