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


def test_non_ascii_key_is_accepted() -> None:
    """A key is any text with a UTF-8 encoding (as jupyter_client's), given as text or bytes."""
    key = "clé-ключ-🔑"
    assert validate_connection_info(good(key=key))["key"] == key
    assert validate_connection_info(good(key=key.encode("utf-8")))["key"] == key


@pytest.mark.parametrize("key", [b"secret\xff", "secret\udc80"])
def test_bad_key_is_never_quoted(key: str | bytes) -> None:
    """The key is secret: the error about an unusable key does not show it."""
    with pytest.raises(ConnectionFileError, match="'key'") as info:
        validate_connection_info(good(key=key))
    assert "secret" not in str(info.value)


def test_deeply_nested_value_gives_a_short_error() -> None:
    """A 3,000-level value in memory gives a short ConnectionFileError, not a RecursionError
    while quoting it."""
    deep: list[Any] = []
    for _ in range(3000):
        deep = [deep]
    for field in ("transport", "ip", "hb_port", "signature_scheme", "kernel_name"):
        with pytest.raises(ConnectionFileError) as info:
            validate_connection_info(good(**{field: deep}))
        assert info.value.field == field
        assert len(str(info.value)) < 200


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
        # issue 12: unhashable values, bools and out-of-range ports, keys without UTF-8
        ({"signature_scheme": ["hmac-sha256"]}, "signature_scheme"),
        ({"signature_scheme": {"hmac-sha256": 1}}, "signature_scheme"),
        ({"transport": ["tcp"]}, "transport"),
        ({"ip": ["127.0.0.1"]}, "ip"),
        ({"shell_port": False}, "shell_port"),
        ({"shell_port": -1}, "shell_port"),
        ({"hb_port": 65536}, "hb_port"),
        ({"hb_port": 1005.0}, "hb_port"),
        ({"hb_port": [1005]}, "hb_port"),
        ({"key": ["abc"]}, "key"),
        ({"key": b"\xff\xfe"}, "key"),
        ({"key": "\udc80"}, "key"),
        ({"transport": "ipc", "ip": "/run/k\u0000"}, "ip"),
        ({"transport": "ipc", "ip": "/run/\udc80"}, "ip"),
    ],
)
def test_bad_field_is_named(changes: dict[str, Any], field: str) -> None:
    """Each missing or ill-typed key raises ConnectionFileError naming that key."""
    with pytest.raises(ConnectionFileError) as info:
        validate_connection_info(good(**changes), path="/tmp/c.json")
    assert info.value.field == field
    assert field in str(info.value)
    assert "/tmp/c.json" in str(info.value)
    assert "\n" not in str(info.value)


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
