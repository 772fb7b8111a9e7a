"""Tests for KernelSpec (kernel_nursery._kernelspec): reading and checking kernel.json."""

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


# ---------------------------------------------------------------- issue 12: what a launch needs

# Deeper than the JSON decoder of every supported Python goes: 3.11 stops at its recursion
# limit (1,000), 3.12 and 3.13 at their C recursion limits (3.13: about 10,000).
DEEP = "[" * 100_000 + "]" * 100_000


def deep_list(levels: int = 100_000) -> list[Any]:
    """A list nested *levels* deep, built without recursion."""
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


LAUNCH_BREAKERS = [
    ({"argv": ["k", "a\u0000b"]}, "argv[1]", "NUL"),
    ({"argv": ["k\u0000"]}, "argv[0]", "NUL"),
    ({"argv": ["k"], "env": {"A": "1\u00002"}}, "env.A", "NUL"),
    ({"argv": ["k"], "env": {"A\u0000B": "1"}}, "env.A\u0000B", "not a valid environment"),
    ({"argv": ["k"], "env": {"A=B": "1"}}, "env.A=B", "not a valid environment"),
    ({"argv": ["k"], "env": {"": "1"}}, "env.", "not a valid environment"),
]


@pytest.mark.parametrize(("data", "field", "message"), LAUNCH_BREAKERS)
def test_nul_and_bad_env_names_in_a_file(
    tmp_path: Path, data: dict[str, Any], field: str, message: str
) -> None:
    """A NUL in argv or env, or an env name that is empty or holds '=', is a KernelSpecError
    naming the file and the field, not a builtin ValueError at launch."""
    import json

    folder = write_kernel(tmp_path, "bad", json.dumps(data))
    with pytest.raises(KernelSpecError, match=message) as info:
        KernelSpec.from_resource_dir(folder)
    assert (info.value.field, info.value.path) == (field, str(folder / "kernel.json"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("data", "field", "message"), LAUNCH_BREAKERS)
def test_nul_and_bad_env_names_in_code(data: dict[str, Any], field: str, message: str) -> None:
    """The same checks apply to a KernelSpec built in code."""
    with pytest.raises(KernelSpecError, match=message) as info:
        KernelSpec(**data)
    assert info.value.field == field


def test_deeply_nested_kernel_json(tmp_path: Path) -> None:
    """A kernel.json nested 3,000 levels deep is a KernelSpecError, not a RecursionError."""
    folder = write_kernel(tmp_path, "deep", '{"argv": ["k"], "display_name": ' + DEEP + "}")
    with pytest.raises(KernelSpecError, match="nested too deeply") as info:
        KernelSpec.from_resource_dir(folder)
    assert info.value.path == str(folder / "kernel.json")


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"argv": ["k"], "metadata": {"x": deep_list()}}, "metadata", "nested too deeply"),
        ({"argv": ["k"], "metadata": {"x": {1, 2}}}, "metadata", "plain JSON data"),
        ({"argv": deep_list()}, "argv", r"non-empty list of strings, got \[\[\["),
        ({"argv": ["k"], "language": deep_list()}, "language", r"got \[\[\["),
    ],
)
def test_in_memory_data_that_is_not_json(data: dict[str, Any], field: str, message: str) -> None:
    """from_dict turns deeply nested or non-JSON values into a short KernelSpecError naming the
    field (never a RecursionError or TypeError, nor a message quoting 3,000 levels)."""
    with pytest.raises(KernelSpecError, match=message) as info:
        KernelSpec.from_dict(data)
    assert info.value.field == field
    assert len(str(info.value)) < 200


def test_protocol_version_and_encryption_are_read_and_kept() -> None:
    """kernel_protocol_version and metadata.supported_encryption (as ipykernel writes them)
    are read, exposed and written back."""
    data = {**FULL, "kernel_protocol_version": "5.5"}
    data["metadata"] = {**FULL["metadata"], "supported_encryption": ["Curve"]}
    spec = KernelSpec.from_dict(data)
    assert spec.kernel_protocol_version == "5.5"
    assert spec.protocol_version_info == (5, 5)
    assert spec.supports_handshake
    assert spec.supported_encryption == frozenset({"curve"})
    assert KernelSpec.from_dict(spec.to_dict()) == spec


def test_fields_unset_mean_unknown() -> None:
    """A spec that says nothing declares no handshake and no encryption either way."""
    spec = KernelSpec.from_dict(FULL)
    assert spec.kernel_protocol_version == ""
    assert spec.protocol_version_info is None
    assert not spec.supports_handshake
    assert spec.supported_encryption is None
    assert "kernel_protocol_version" not in spec.to_dict()


@pytest.mark.parametrize(("version", "handshake"), [("5.4", False), ("5.5.1", True), ("6.0", True)])
def test_handshake_follows_the_protocol_version(version: str, handshake: bool) -> None:
    """The start handshake (JEP 66) is declared from protocol version 5.5 on."""
    assert KernelSpec.from_dict(
        {**FULL, "kernel_protocol_version": version}
    ).supports_handshake is (handshake)


def test_a_single_scheme_name_and_an_empty_list() -> None:
    """supported_encryption may be one name (as jupyter_client accepts); [] supports none."""
    one = KernelSpec.from_dict({**FULL, "metadata": {"supported_encryption": "curve"}})
    assert one.supported_encryption == frozenset({"curve"})
    none = KernelSpec.from_dict({**FULL, "metadata": {"supported_encryption": []}})
    assert none.supported_encryption == frozenset()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"kernel_protocol_version": 5.5}, "kernel_protocol_version"),
        ({"kernel_protocol_version": "five"}, "kernel_protocol_version"),
        ({"kernel_protocol_version": "5"}, "kernel_protocol_version"),
        ({"metadata": {"supported_encryption": {"curve": True}}}, "metadata.supported_encryption"),
        ({"metadata": {"supported_encryption": ["curve", 1]}}, "metadata.supported_encryption"),
    ],
)
def test_bad_new_fields_are_named(changes: dict[str, Any], field: str) -> None:
    """A malformed protocol version or encryption list is a KernelSpecError naming the field."""
    with pytest.raises(KernelSpecError) as caught:
        KernelSpec.from_dict({**FULL, **changes})
    assert caught.value.field == field


def test_bad_protocol_version_in_code_is_refused() -> None:
    """A spec built in code checks its protocol version too."""
    with pytest.raises(KernelSpecError, match="kernel_protocol_version"):
        KernelSpec(argv=["k"], kernel_protocol_version="x")
