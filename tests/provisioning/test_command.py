"""Tests for kernel_nursery.provisioning._command: building the kernel's command."""

from __future__ import annotations

import sys

import pytest

from kernel_nursery.provisioning import format_kernel_cmd


@pytest.mark.parametrize(
    "program", ["python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"]
)
def test_python_means_this_interpreter(program: str) -> None:
    """python, python3 and python3.X as argv[0] become sys.executable."""
    assert format_kernel_cmd([program, "-m", "k"], substitutions={})[0] == sys.executable


def test_other_programs_are_kept() -> None:
    """Only argv[0] is rewritten, and only for the python names."""
    assert format_kernel_cmd(["python2", "python"], substitutions={}) == ["python2", "python"]


def test_substitutions_and_unknown_fields() -> None:
    """Known {names} are replaced anywhere in an argument; unknown ones stay as written."""
    argv = ["k", "-f", "{connection_file}", "--res={resource_dir}/x", "{unknown}", "{not valid}"]
    cmd = format_kernel_cmd(
        argv, substitutions={"connection_file": "/c.json", "resource_dir": "/r"}
    )
    assert cmd == ["k", "-f", "/c.json", "--res=/r/x", "{unknown}", "{not valid}"]


def test_extra_arguments_are_appended_verbatim() -> None:
    """Extra arguments come last and are not substituted; the input list is not modified."""
    argv = ["k", "{connection_file}"]
    cmd = format_kernel_cmd(
        argv, substitutions={"connection_file": "c"}, extra_arguments=["{connection_file}"]
    )
    assert cmd == ["k", "c", "{connection_file}"]
    assert argv == ["k", "{connection_file}"]
