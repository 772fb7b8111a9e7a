"""Tests for kernel_nursery.connection._keys: CurveZMQ key pairs, and their place in the
connection info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zmq

from kernel_nursery import ConnectionFileError
from kernel_nursery.connection import (
    curve_supported,
    new_curve_keypair,
    read_connection_file,
    validate_connection_info,
    write_connection_file,
)

from .test_info import good


def test_keypair_is_z85_text_that_zmq_accepts() -> None:
    """A new pair is two 40-character strings, the public key derived from the secret one."""
    assert curve_supported()
    public, secret = new_curve_keypair()
    assert len(public) == len(secret) == 40
    assert zmq.curve_public(secret.encode()) == public.encode()
    assert new_curve_keypair() != (public, secret)


def test_keys_survive_validation_and_the_file(tmp_path: Path) -> None:
    """The pair is kept by validation and written and read back as plain strings, as
    jupyter_client writes them."""
    public, secret = new_curve_keypair()
    info = validate_connection_info(good(curve_publickey=public, curve_secretkey=secret))
    path = write_connection_file(info, tmp_path / "k.json")
    on_disk = json.loads(path.read_text())
    assert (on_disk["curve_publickey"], on_disk["curve_secretkey"]) == (public, secret)
    assert read_connection_file(path) == info


def test_bytes_keys_become_text() -> None:
    """Keys given as bytes (jupyter_client's in-memory form) come back as text."""
    public, secret = new_curve_keypair()
    info = validate_connection_info(
        good(curve_publickey=public.encode(), curve_secretkey=secret.encode())
    )
    assert info["curve_publickey"] == public


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"curve_publickey": "P"}, "'curve_secretkey': is missing"),
        ({"curve_secretkey": "S"}, "'curve_publickey': is missing"),
        ({"curve_publickey": 1, "curve_secretkey": 2}, "must be a string"),
        ({"curve_publickey": "short", "curve_secretkey": "short"}, "Z85 text"),
        ({"curve_publickey": "~" * 40, "curve_secretkey": "~" * 40}, "Z85 text"),
        # Z85 digits, but groups worth more than 4 bytes: libzmq would raise an untyped error.
        ({"curve_publickey": "#" * 40, "curve_secretkey": "#" * 40}, "Z85 text"),
        ({"curve_publickey": new_curve_keypair()[0], "curve_secretkey": "#" * 40}, "Z85 text"),
    ],
)
def test_bad_keys_are_refused(changes: dict[str, Any], message: str) -> None:
    """Half a pair, or a key that is not Z85 Curve key text (bad characters, length, or
    digits that decode to more than 32 bytes), is a ConnectionFileError."""
    with pytest.raises(ConnectionFileError, match=message):
        validate_connection_info(good(**changes))


def test_mismatched_pair_is_refused_without_quoting_the_secret() -> None:
    """A public key that is not the secret key's is refused; the message never shows it."""
    public, _ = new_curve_keypair()
    _, secret = new_curve_keypair()
    with pytest.raises(ConnectionFileError, match="not the public key") as caught:
        validate_connection_info(good(curve_publickey=public, curve_secretkey=secret))
    assert secret not in str(caught.value)
