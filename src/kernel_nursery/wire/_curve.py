"""CurveZMQ on a client's socket: the options that make it a CURVE client of a kernel.

A connection file with ``curve_publickey``/``curve_secretkey`` describes a kernel whose sockets
are CURVE servers. As jupyter_client does, a client reuses the connection file's pair as its own
and names the same public key as the server's, so it reaches that kernel and no impostor on its
port, and every byte is encrypted.
"""

from __future__ import annotations

import zmq

from .._errors import TransportEncryptionError
from ..connection import ConnectionInfo, curve_supported

__all__ = ["is_encrypted", "set_curve_client_options"]


def is_encrypted(info: ConnectionInfo) -> bool:
    """Whether *info* describes a kernel reached with CurveZMQ."""
    return "curve_publickey" in info and "curve_secretkey" in info


def set_curve_client_options(sock: zmq.Socket[bytes], info: ConnectionInfo) -> None:
    """Make *sock* a CURVE client of the kernel of *info*, if *info* has Curve keys.

    Must be called before the socket connects; a no-op for a kernel reached in clear.

    Raises:
        TransportEncryptionError: this libzmq has no CurveZMQ.
    """
    if not is_encrypted(info):
        return
    if not curve_supported():
        raise TransportEncryptionError(
            "the kernel's connection info has CurveZMQ keys, but this libzmq was built "
            "without CurveZMQ: install pyzmq's wheels (or a libzmq with libsodium)"
        )
    public = info["curve_publickey"].encode("ascii")
    sock.curve_secretkey = info["curve_secretkey"].encode("ascii")
    sock.curve_publickey = public
    sock.curve_serverkey = public  # the kernel's: authenticates the server we reach
