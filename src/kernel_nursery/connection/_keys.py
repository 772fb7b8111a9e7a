"""CurveZMQ key pairs for a kernel's transport encryption: made, checked, and their support.

A kernel that is to be reached encrypted gets one key pair, made by its launcher and written
in its connection file (``curve_publickey``, ``curve_secretkey``: Z85 text, 40 characters
each). The kernel binds its sockets as a CURVE server with the pair; clients connect as CURVE
clients that know the kernel's public key, so they talk to that kernel only, and every byte
between them is encrypted with keys that change with each connection.
"""

from __future__ import annotations

import zmq

from .._errors import TransportEncryptionError

__all__ = ["check_curve_keypair", "curve_supported", "new_curve_keypair"]

#: The 85 characters of Z85 (ZeroMQ RFC 32), the text form of a Curve key, in digit order.
_Z85_DIGITS = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85 = frozenset(_Z85_DIGITS)
#: A 32-byte key in Z85: 5 characters per 4 bytes.
_KEY_LENGTH = 40


def curve_supported() -> bool:
    """Whether this process's libzmq can encrypt with CurveZMQ (it was built with libsodium or
    its own Curve code, as pyzmq's wheels are)."""
    return bool(zmq.has("curve"))


def new_curve_keypair() -> tuple[str, str]:
    """A fresh CurveZMQ key pair ``(public, secret)``, as the Z85 text a connection file holds.

    Raises:
        TransportEncryptionError: this libzmq has no CurveZMQ.
    """
    if not curve_supported():
        raise TransportEncryptionError(
            "this libzmq was built without CurveZMQ: install pyzmq's wheels (or a libzmq "
            "with libsodium), or set transport_encryption='disabled'"
        )
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def check_curve_keypair(public: object, secret: object) -> str | None:
    """What is wrong with a connection file's ``curve_publickey``/``curve_secretkey`` pair, or
    ``None`` when both are well-formed Z85 keys and (where this libzmq can tell) the public key
    is the secret key's. The message never quotes the secret key."""
    for name, key in (("curve_publickey", public), ("curve_secretkey", secret)):
        if not isinstance(key, str):
            return f"{name} must be a string, got {type(key).__name__}"
        if len(key) != _KEY_LENGTH or not set(key) <= _Z85 or not _z85_decodes(key):
            return f"{name} must be a Curve key in Z85 text ({_KEY_LENGTH} characters)"
    assert isinstance(public, str)
    assert isinstance(secret, str)
    if curve_supported() and zmq.curve_public(secret.encode("ascii")) != public.encode("ascii"):
        return "curve_publickey is not the public key of curve_secretkey"
    return None


def _z85_decodes(text: str) -> bool:
    """Whether each 5-character group of *text* (Z85 digits) stands for a number that fits
    in 4 bytes; libzmq refuses the others ("#####" is 85**5 - 1), with an untyped error."""
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            value = value * 85 + _Z85_DIGITS.index(char)
        if value > 0xFFFFFFFF:
            return False
    return True
