"""The examples in docs/examples and the README run as written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_nursery import KernelSpec

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def test_client_example() -> None:
    """The messaging example runs code, sees its error and shuts the kernel down politely."""
    out = run_python((EXAMPLES / "client_trio.py").read_text())
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
    assert run_python(readme_blocks()[index]).endswith("42\n")


@pytest.mark.parametrize("name", ["manager_trio.py", "manager_asyncio.py"])
def test_manager_examples(name: str) -> None:
    """The manager examples run code in a kernel and restart it."""
    out = run_python((EXAMPLES / name).read_text())
    assert re.search(r"kernel says its pid is \d+", out)
    assert "restarted, alive: True" in out


def test_nursery_example() -> None:
    """The nursery example runs three kernels and sees one shut down."""
    out = run_python((EXAMPLES / "nursery_trio.py").read_text())
    assert "3 kernels running" in out
    assert "first kernel: shutdown with status 0" in out


def test_readme_has_both_backends() -> None:
    """The README shows trio and asyncio."""
    blocks = readme_blocks()
    assert any("trio.run" in b for b in blocks)
    assert any("asyncio.run" in b for b in blocks)


@pytest.mark.anyio
async def test_greeting_provisioner_example(tmp_path: Path) -> None:
    """The provisioner example of the docs runs a kernel with its configured greeting."""
    spec_ = importlib.util.spec_from_file_location(
        "greeting_provisioner", EXAMPLES / "greeting_provisioner.py"
    )
    assert spec_ and spec_.loader
    module = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(module)
    out = tmp_path / "greeting"
    kernel_spec = KernelSpec(
        argv=[
            "python",
            "-c",
            "import os, sys; open(sys.argv[1], 'w').write(os.environ['GREETING'])",
            str(out),
        ]
    )
    async with module.GreetingProvisioner(kernel_spec=kernel_spec, greeting="bonjour") as p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        assert await p.wait() == 0
    assert out.read_text() == "bonjour"
