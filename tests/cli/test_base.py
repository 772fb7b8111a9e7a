"""Tests for what every subcommand shares (kernel_nursery.cli._base, ._app): user errors as one
line and exit 2, the version, help that leads with usage, the one configuration file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernel_nursery import __version__

from ..conftest import FAKE_KERNEL, write_kernel
from .conftest import cli

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--KernelManager.shutdown_wait_time=abc", "run", "1"], "options go after the subcommand"),
        (
            ["run", "--KernelManager.shutdown_wait_time=abc", "1"],
            "KernelManager.shutdown_wait_time must be a float (got 'abc')",
        ),
        (
            ["run", "--backend", "curio", "1"],
            "--backend must be one of asyncio, trio (got 'curio')",
        ),
        (["start", "--backend=curio"], "--backend must be one of asyncio, trio (got 'curio')"),
        (
            ["run", "--KernelManager.transport=udp", "1"],
            "--KernelManager.transport must be one of tcp, ipc (got 'udp')",
        ),
        (
            ["run", "--LocalProvisioner.transport_encryption", "maybe", "1"],
            "--LocalProvisioner.transport_encryption must be one of ",
        ),
        (["bogus"], "unknown subcommand 'bogus'; the subcommands are run, start, specs"),
        (["--backend", "trio", "run", "1"], "options go after the subcommand: kernel-nursery run"),
        ([], "which subcommand? run, start"),
        (["run", "--bogus", "1"], "unknown option --bogus (see kernel-nursery run --help)"),
        (["run", "--Bogus.x=1", "1"], "no class 'Bogus' to configure"),
        (["run", "1", "-f"], "option -f needs a value"),
        (["run"], "no code to run; usage: kernel-nursery run [KERNEL] CODE   or   "),
        (
            ["run", "python3"],
            "no code to run in kernel 'python3'; usage: kernel-nursery run [KERNEL] CODE   or   "
            "kernel-nursery run [KERNEL] -f FILE",
        ),
        (["run", "pyton3", "1"], "no kernel named 'pyton3' (available: "),
        (["run", "pyton3", "1"], "; did you mean 'python3'?"),
        (["specs", "show", "Pyton3"], "; did you mean 'python3'?"),
        (["specs", "remove", "pyton3"], "; did you mean 'python3'?"),
        (["run", "nope", "1"], "no kernel named 'nope' (available: "),
        (["run", "-f", "/no/such/file.py"], "cannot read /no/such/file.py"),
        (["run", "python3", "1", "-f", "x.py"], "with -f FILE, give at most a kernel name"),
        (["start", "a", "b"], "start takes at most one kernel name"),
        (["specs", "show", "nope"], "no kernel named 'nope'"),
        (["specs", "bogus"], "unknown specs subcommand 'bogus'"),
        (["provisioners", "x"], "provisioners takes no arguments"),
        (["kernels", "--timeout=0"], "--timeout must be positive"),
        (["specs", "--config", "/no/such.py"], "no config file /no/such.py"),
        (["run", "1", "--kernel-output", "/no/dir/k.log"], "cannot write --kernel-output"),
        (["run", "1", "--generate-config"], "--generate-config takes no subcommand"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    """Errors a user makes: one line on stderr saying what is wrong, no traceback, exit 2."""
    out = cli(*args)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("kernel-nursery: ")
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stdout == ""


def _without_ipykernel(*args: str) -> subprocess.CompletedProcess[str]:
    """The command, in a Python where ``import ipykernel`` fails (as where it is not
    installed: ``None`` in ``sys.modules`` is what importlib reports as absent)."""
    code = (
        "import sys; sys.modules['ipykernel'] = None; from kernel_nursery.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_no_python3_without_ipykernel_says_what_provides_it(kernels: Path) -> None:
    """With no python3 kernel in the kernel-spec path and no ipykernel, asking for python3
    names the package that provides it, on one line."""
    write_kernel(kernels, "fake", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]})
    out = _without_ipykernel("run", f"--KernelSpecManager.kernel_dirs={kernels}", "python3", "1")
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        "kernel-nursery: no kernel named 'python3' (available: fake); "
        "ipykernel provides it: pip install ipykernel\n"
    )
    assert out.stdout == ""


def test_no_python3_with_ipykernel_not_offered_says_how_to_register_it(kernels: Path) -> None:
    """With ipykernel installed but its own spec not offered (ensure_native_kernel off) and
    no python3 kernel.json, the error gives the command that registers it."""
    write_kernel(kernels, "fake", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]})
    only = f"--KernelSpecManager.kernel_dirs={kernels}"  # not the environment's python3
    out = cli("run", only, "--KernelSpecManager.ensure_native_kernel=False", "python3", "1")
    assert out.returncode == 2, out.stderr
    assert out.stderr == (
        "kernel-nursery: no kernel named 'python3' (available: fake); "
        f"ipykernel provides it: {sys.executable} -m ipykernel install --user\n"
    )


def test_version() -> None:
    """--version prints the package's version."""
    out = cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == __version__ != "0.0"


@pytest.mark.parametrize(
    ("subcommand", "usage"),
    [
        ("run", "Usage: kernel-nursery run [KERNEL] CODE [OPTIONS]"),
        ("start", "Usage: kernel-nursery start [KERNEL] [OPTIONS]"),
        ("specs", "Usage: kernel-nursery specs [list] [--json]"),
        ("kernels", "Usage: kernel-nursery kernels [--json]"),
    ],
)
def test_help_leads_with_usage_and_examples(subcommand: str, usage: str) -> None:
    """SUBCOMMAND --help starts with the usage, and shows examples before the options."""
    out = cli(subcommand, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(usage)
    assert out.stdout.index("Examples") < out.stdout.index("Options")
    assert f"kernel-nursery {subcommand}" in out.stdout.split("Examples", 1)[1]


def test_one_config_file_for_every_subcommand(jupyter_dirs: dict[str, Path], kernels: Path) -> None:
    """kernel_nursery_config.py in Jupyter's config directory is read by run and by specs; a
    broken one is a one-line error."""
    write_kernel(
        kernels, "mute", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}", "--mute"]}
    )
    config = jupyter_dirs["config"]
    config.mkdir(parents=True)
    (config / "kernel_nursery_config.py").write_text(
        "c.KernelManager.ready_timeout = 0.5\nc.KernelSpecManager.allowed_kernelspecs = {'mute'}\n"
    )
    run = cli("run", "mute", "1")
    assert run.returncode == 2
    assert "did not answer within 0.5 s" in run.stderr
    specs = cli("specs")
    assert [line.split()[0] for line in specs.stdout.splitlines()] == ["NAME", "mute"]
    (config / "kernel_nursery_config.py").write_text("c.KernelManager.ready_timeout = \n")
    broken = cli("specs")
    assert broken.returncode == 2
    assert len(broken.stderr.strip().splitlines()) == 1, broken.stderr
    assert "kernel_nursery_config.py" in broken.stderr


def test_generate_config_writes_the_one_file(jupyter_dirs: dict[str, Path]) -> None:
    """--generate-config writes kernel_nursery_config.py, with every subcommand's settings."""
    out = cli("--generate-config", "-y")
    assert out.returncode == 0, out.stderr
    text = (jupyter_dirs["config"] / "kernel_nursery_config.py").read_text()
    assert "c.RunApp.files" in text and "c.KernelManager.shutdown_wait_time" in text
