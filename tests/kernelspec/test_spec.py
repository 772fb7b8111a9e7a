"""Tests for kernel_nursery.kernelspec._spec: reading and checking kernel.json."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from kernel_nursery import KernelSpec, KernelSpecError

from ..conftest import write_kernel

FULL: dict[str, Any] = {
    "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
    "display_name": "Python 3",
    "language": "python",
    "interrupt_mode": "message",
    "env": {"A": "1"},
    "metadata": {
        "debugger": True,
        "kernel_provisioner": {"provisioner_name": "p", "config": {"x": 1}},
    },
}


def test_full_spec_round_trips() -> None:
    """Every field is read, and to_dict gives back the same kernel.json content."""
    spec = KernelSpec.from_dict(FULL, name="py")
    assert spec.argv == FULL["argv"]
    assert spec.interrupt_mode == "message"
    assert spec.kernel_provisioner == {"provisioner_name": "p", "config": {"x": 1}}
    assert spec.to_dict() == FULL


def test_input_is_not_shared_or_modified() -> None:
    """The spec holds copies: changing it leaves the caller's dict alone, and vice versa."""
    data = copy.deepcopy(FULL)
    spec = KernelSpec.from_dict(data)
    spec.metadata["kernel_provisioner"]["config"]["x"] = 2
    spec.argv.append("--more")
    assert data == FULL


def test_defaults() -> None:
    """Only argv is required; display_name falls back to the kernel's name."""
    spec = KernelSpec.from_dict({"argv": ["k"]}, name="mine")
    assert (spec.display_name, spec.language, spec.interrupt_mode) == ("mine", "", "signal")
    assert spec.env == {} and spec.metadata == {} and spec.kernel_provisioner is None


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], None),
        ({}, "argv"),
        ({"argv": "python -m k"}, "argv"),
        ({"argv": []}, "argv"),
        ({"argv": ["python", 3]}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"argv": ["k"], "display_name": 1}, "display_name"),
        ({"argv": ["k"], "language": None}, "language"),
        ({"argv": ["k"], "interrupt_mode": "sigint"}, "interrupt_mode"),
        ({"argv": ["k"], "env": ["A=1"]}, "env"),
        ({"argv": ["k"], "env": {"A": 1}}, "env.A"),
        ({"argv": ["k"], "metadata": []}, "metadata"),
        (
            {"argv": ["k"], "metadata": {"kernel_provisioner": "local"}},
            "metadata.kernel_provisioner",
        ),
        (
            {"argv": ["k"], "metadata": {"kernel_provisioner": {"config": {}}}},
            "metadata.kernel_provisioner.provisioner_name",
        ),
        (
            {"argv": ["k"], "metadata": {"kernel_provisioner": {"provisioner_name": 5}}},
            "metadata.kernel_provisioner.provisioner_name",
        ),
        (
            {
                "argv": ["k"],
                "metadata": {"kernel_provisioner": {"provisioner_name": "p", "config": []}},
            },
            "metadata.kernel_provisioner.config",
        ),
    ],
)
def test_bad_field_names_file_and_field(tmp_path: Path, data: object, field: str | None) -> None:
    """Each kind of bad kernel.json raises KernelSpecError naming the file and the field."""
    import json

    folder = write_kernel(tmp_path, "bad", json.dumps(data))
    with pytest.raises(KernelSpecError) as info:
        KernelSpec.from_resource_dir(folder)
    assert info.value.field == field
    assert info.value.path == str(folder / "kernel.json")
    assert str(folder / "kernel.json") in str(info.value)
    if field:
        assert repr(field) in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"), [("{argv", "not valid JSON"), (b"\xff\xfe", "not UTF-8")]
)
def test_unreadable_file(tmp_path: Path, content: str | bytes, message: str) -> None:
    """Text that is not JSON (or not UTF-8) is a KernelSpecError naming the file."""
    folder = tmp_path / "k"
    folder.mkdir()
    path = folder / "kernel.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(KernelSpecError, match=message):
        KernelSpec.from_resource_dir(folder)


def test_missing_file(tmp_path: Path) -> None:
    """A directory without kernel.json is a KernelSpecError, not an OSError escaping."""
    with pytest.raises(KernelSpecError, match="cannot read"):
        KernelSpec.from_resource_dir(tmp_path)


def test_error_is_also_a_value_error() -> None:
    """Callers catching ValueError (as for jupyter_client) still catch it."""
    with pytest.raises(ValueError, match="argv"):
        KernelSpec.from_dict({})
