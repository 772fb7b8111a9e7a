"""The examples in docs/examples and the README run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel_nursery import KernelSpec
from kernel_nursery.provisioning import KernelProvisionerFactory

from .helpers.engines import need_binaries

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples"


@pytest.mark.parametrize("name", ["client_trio.py", "client_asyncio.py"])
def test_client_example(name: str) -> None:
    """The messaging example runs code, sees its error and shuts the kernel down politely."""
    out = run_python((EXAMPLES / name).read_text())
    assert "stdout: (3, " in out
    assert "error: ZeroDivisionError" in out
    assert "exit status: 0" in out


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def run_python(code: str) -> str:
    """Run *code* in a new interpreter (each example chooses its own backend)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", ["first_trio.py", "first_asyncio.py"])
def test_first_examples(name: str) -> None:
    """The index page's first examples print what the kernel printed."""
    assert "42" in run_python((EXAMPLES / name).read_text()).splitlines()


@pytest.mark.parametrize("name", ["launch_trio.py", "launch_asyncio.py"])
def test_launch_examples(name: str) -> None:
    """Each launch example starts a kernel, sees it running and stops it."""
    out = run_python((EXAMPLES / name).read_text())
    assert re.search(r"kernel pid \d+, shell port \d+", out)
    assert "still running: True" in out
    assert re.search(r"exit status: -?\d+", out)


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_examples(index: int) -> None:
    """Each python block of the README runs its kernel and prints what the code printed."""
    # A line of its own: the kernel's banner shares the stdout, and may be flushed after it.
    assert "42" in run_python(readme_blocks()[index]).splitlines()


@pytest.mark.parametrize("name", ["manager_trio.py", "manager_asyncio.py"])
def test_manager_examples(name: str) -> None:
    """The manager examples run code in a kernel, interrupt it, and restart it."""
    out = run_python((EXAMPLES / name).read_text())
    assert re.search(r"kernel says its pid is \d+", out)
    assert "interrupted: KeyboardInterrupt" in out
    assert "restarted, alive: True" in out


@pytest.mark.parametrize("name", ["nursery_trio.py", "nursery_asyncio.py"])
def test_nursery_example(name: str) -> None:
    """The nursery example runs three kernels and sees one shut down."""
    out = run_python((EXAMPLES / name).read_text())
    assert "3 kernels running" in out
    assert "first kernel: shutdown with status 0" in out


def test_readme_has_both_backends() -> None:
    """The README shows trio and asyncio."""
    blocks = readme_blocks()
    assert any("trio.run" in b for b in blocks)
    assert any("asyncio.run" in b for b in blocks)


@pytest.mark.anyio
async def test_greeting_provisioner_example(
    tmp_path: Path, install_provisioner: Callable[..., None]
) -> None:
    """The docs' provisioner, registered through an entry point as the docs say, runs a kernel
    with the greeting its kernel.json stanza configures."""
    source = (EXAMPLES / "greeting_provisioner.py").read_text()
    install_provisioner("greeting-provisioner", "GreetingProvisioner", source)
    out = tmp_path / "greeting"
    code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['GREETING'])"
    stanza = {"provisioner_name": "greeting-provisioner", "config": {"greeting": "bonjour"}}
    spec = KernelSpec(
        argv=["python", "-c", code, str(out)], metadata={"kernel_provisioner": stanza}
    )
    factory = KernelProvisionerFactory.instance()
    assert factory.is_provisioner_available(spec)
    async with factory.create_provisioner_instance("k", spec, None) as p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        assert await p.wait() == 0
    assert out.read_text() == "bonjour"


def test_find_kernels_example() -> None:
    """The kernel-finding example lists python3 and explains an unknown name."""
    out = run_python((EXAMPLES / "find_kernels.py").read_text())
    assert "python3 runs: ['-m', 'ipykernel_launcher'" in out
    assert "error: no kernel named 'no-such-kernel'" in out


@pytest.mark.parametrize("name", ["events_trio.py", "events_asyncio.py"])
def test_events_example(name: str) -> None:
    """The events example sees the crash and the restart."""
    out = run_python((EXAMPLES / name).read_text())
    assert "restarting -9" in out and "restarted None" in out
    assert "alive again: True" in out


@pytest.mark.parametrize("name", ["settings_trio.py", "settings_asyncio.py"])
def test_settings_example(name: str) -> None:
    """The settings example's kernel runs in the directory asked for."""
    out = run_python((EXAMPLES / name).read_text())
    assert "same directory: True" in out and "shutdown_wait_time: 2.0" in out


def test_docs_pages_have_no_untested_code() -> None:
    """Python code in the docs comes from docs/examples (run above), never inline, unless the
    block says on its first line why it is not run here (a configuration file, a fragment, code
    that needs an engine the examples do not start) and which tests cover what it shows."""
    for page in (ROOT / "docs").glob("*.md"):
        for block in page.read_text().split("```python\n")[1:]:
            first = block.splitlines()[0] if block else ""
            assert first.startswith("# not run here: "), (
                f"{page.name}: move the code to examples/, or say why it is not run: {first!r}"
            )


def test_every_example_is_tested() -> None:
    """Each file in docs/examples is run by a test in this module, and each async example
    exists for both backends (the provisioner example is not a program)."""
    source = Path(__file__).read_text()
    names = {example.name for example in EXAMPLES.glob("*.py")}
    for name in names:
        assert name in source, f"{name} is not run by any test"
        for mine, other in (("_trio.py", "_asyncio.py"), ("_asyncio.py", "_trio.py")):
            if name.endswith(mine):
                assert name.replace(mine, other) in names, f"{name} has no twin for {other}"


@pytest.mark.parametrize("name", ["console_trio.py", "console_asyncio.py"])
def test_console_example(name: str) -> None:
    """The console example gets typed answers and feeds input() and getpass()."""
    out = run_python((EXAMPLES / name).read_text())
    assert "is_complete: incomplete '    '" in out
    assert "completes to os: True" in out and "len documented: True" in out
    assert "output: Ada 7" in out and "last input: import getpass" in out


@pytest.mark.parametrize("name", ["streaming_trio.py", "streaming_asyncio.py"])
def test_streaming_example(name: str) -> None:
    """The streaming example shows each output as it comes, then the end; the iopub watcher
    sees the kernel busy and idle."""
    out = run_python((EXAMPLES / name).read_text())
    lines = [line for line in out.splitlines() if not line.startswith("kernel is")]
    assert lines == [
        "printed: step 0",
        "printed: step 1",
        "printed: step 2",
        "raised: ZeroDivisionError",
        "finished: error",
    ]
    assert "kernel is busy" in out and "kernel is idle" in out


@pytest.mark.parametrize("name", ["comms_trio.py", "comms_asyncio.py"])
def test_comms_example(name: str) -> None:
    """The comms example talks to a kernel target and follows a comm the kernel opens."""
    out = run_python((EXAMPLES / name).read_text())
    assert "double of 1 is 2\ndouble of 21 is 42\n" in out
    assert "progress opened, total 2\ndone 1\ndone 2\n" in out


def test_blocking_example() -> None:
    """The blocking example runs code with input, interrupts it, and works inside a loop."""
    out = run_python((EXAMPLES / "blocking.py").read_text())
    assert "printed: Ada" in out and "interrupted: KeyboardInterrupt" in out
    assert "inside a running loop: 42" in out


@pytest.mark.parametrize("name", ["pool_trio.py", "pool_asyncio.py"])
def test_pool_example(name: str) -> None:
    """The pool example serves three requests, each on a kernel of its own, and sees an idle
    kernel culled."""
    out = run_python((EXAMPLES / name).read_text())
    assert "'print(6 * 7)' -> 42" in out and "\"print('hi')\" -> hi" in out
    assert "takes: 3, found none warm: 1" in out
    assert "culling after 0.5 s idle\nshutdown\nkernels left: 0" in out


@pytest.mark.parametrize("name", ["sandbox_service_trio.py", "sandbox_service_asyncio.py"])
def test_sandbox_service_example(name: str) -> None:
    """The sandboxed code-execution service answers each request as docs/sandbox.md shows:
    a result, no network, a read-only system, a deadline."""
    need_binaries("sandbox", "bwrap")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answers = [line.split(" -> ")[1] for line in result.stdout.splitlines() if " -> " in line]
    assert answers == [
        "45",
        "error: ConnectionRefusedError",
        "error: OSError",
        "no answer within 5 s",
    ]
