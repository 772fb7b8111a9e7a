"""Tests for kernel_nursery.connection._info: validating connection info."""

from __future__ import annotations

from typing import Any

import pytest

from kernel_nursery import ConnectionFileError
from kernel_nursery.connection import validate_connection_info


def good(**changes: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "shell_port": 1001,
        "iopub_port": 1002,
        "stdin_port": 1003,
        "control_port": 1004,
        "hb_port": 1005,
        "key": "abc",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "python3",
    }
    info.update(changes)
    return {k: v for k, v in info.items() if v is not ...}


def test_valid_info_is_copied_and_extra_keys_dropped() -> None:
    """A complete mapping validates into a new dict without the keys we do not use."""
    data = good(jupyter_session="/x.ipynb")
    info = validate_connection_info(data)
    assert info == {k: v for k, v in data.items() if k != "jupyter_session"}
    assert "jupyter_session" in data  # the input is untouched


def test_bytes_key_becomes_text() -> None:
    """jupyter_client keeps the key as bytes; we accept it and hand back text."""
    assert validate_connection_info(good(key=b"secret"))["key"] == "secret"


def test_defaults_for_optional_keys() -> None:
    """transport and signature_scheme default as Jupyter's; kernel_name may be absent."""
    info = validate_connection_info(good(transport=..., signature_scheme=..., kernel_name=...))
    assert info["transport"] == "tcp"
    assert info["signature_scheme"] == "hmac-sha256"
    assert "kernel_name" not in info


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"transport": "udp"}, "transport"),
        ({"ip": ""}, "ip"),
        ({"ip": 127}, "ip"),
        ({"ip": "not-an-ip"}, "ip"),
        ({"shell_port": ...}, "shell_port"),
        ({"hb_port": "5"}, "hb_port"),
        ({"iopub_port": True}, "iopub_port"),
        ({"stdin_port": 0}, "stdin_port"),
        ({"control_port": 70000}, "control_port"),
        ({"key": None}, "key"),
        ({"signature_scheme": "rot13"}, "signature_scheme"),
        ({"kernel_name": 3}, "kernel_name"),
    ],
)
def test_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    """Each missing or ill-typed key raises ConnectionFileError naming that key."""
    with pytest.raises(ConnectionFileError) as info:
        validate_connection_info(good(**changes), path="/tmp/c.json")
    assert info.value.field == field
    assert field in str(info.value)
    assert "/tmp/c.json" in str(info.value)


def test_shared_ports_are_rejected() -> None:
    """Two sockets on one tcp port cannot both bind."""
    with pytest.raises(ConnectionFileError, match="share a port"):
        validate_connection_info(good(hb_port=1001))


def test_ipc_ip_is_a_path_prefix() -> None:
    """For ipc the ip is a path prefix, not an address."""
    info = validate_connection_info(good(transport="ipc", ip="/run/k-ipc"))
    assert info["ip"] == "/run/k-ipc"


def test_not_a_mapping() -> None:
    """A JSON list is not connection info."""
    with pytest.raises(ConnectionFileError, match="JSON object"):
        validate_connection_info([1, 2])
