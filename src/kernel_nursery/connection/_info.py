"""What a kernel needs to know to be reached: the connection info, and its validation."""

from __future__ import annotations

import ipaddress
import os
import reprlib
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast

from .._errors import ConnectionFileError
from ._keys import check_curve_keypair

__all__ = ["PORT_NAMES", "ConnectionInfo", "PortName", "Transport", "validate_connection_info"]

Transport = Literal["tcp", "ipc"]

#: The key of one of a kernel's five ports in its connection info.
PortName = Literal["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
#: The five sockets of a Jupyter kernel, in the order kernel-nursery assigns their ports.
PORT_NAMES: tuple[PortName, ...] = (
    "shell_port",
    "iopub_port",
    "stdin_port",
    "control_port",
    "hb_port",
)

#: Signature schemes a connection file may name (``hmac-`` + a :mod:`hashlib` algorithm that
#: Jupyter kernels implement). kernel-nursery writes ``hmac-sha256``.
_SIGNATURE_SCHEMES = frozenset(
    {"hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5"}
)


class ConnectionInfo(TypedDict):
    """The contents of a Jupyter connection file.

    The same keys, types and meaning as the files ``jupyter_client`` writes, so that kernels and
    tools such as ``jupyter console --existing`` read ours and we read theirs. One difference, on
    purpose: ``key`` is always a ``str`` (the text that is in the file: hex, in the files we
    write), never ``bytes``, so a ``ConnectionInfo`` is plain JSON data everywhere it travels.
    Messages are signed with the key's UTF-8 encoding, as Jupyter does.
    """

    transport: Transport
    #: An IP address for ``tcp``; a path prefix for ``ipc`` (endpoints are ``{ip}-{port}``).
    ip: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    #: The HMAC key that signs every message; empty means unsigned (never written by us).
    key: str
    signature_scheme: str
    kernel_name: NotRequired[str]
    #: The kernel's CurveZMQ key pair (Z85 text), present together or not at all: with them
    #: the kernel binds as a CURVE server and clients connect encrypted (as jupyter_client 8.9+
    #: and ipykernel 7.3+ do). Like ``key``, secret: anyone who reads them can connect.
    curve_publickey: NotRequired[str]
    curve_secretkey: NotRequired[str]


#: Where connection info came from, for error messages: a file, or ``None`` for a mapping.
_Path = str | os.PathLike[str] | None


def _fail(message: str, *, path: _Path, field: str | None = None) -> ConnectionFileError:
    return ConnectionFileError(message, path=path, field=field)


def _is_utf8(text: str) -> bool:
    """Whether *text* has a UTF-8 encoding (it has none if it holds a lone surrogate, as a
    ``"\\udc80"`` escape in JSON gives)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_connection_info(
    data: object, *, path: str | os.PathLike[str] | None = None
) -> ConnectionInfo:
    """Check that *data* is a complete, well-typed connection-info mapping and return a clean copy.

    Keys that Jupyter tools add and kernel-nursery does not use (``jupyter_session``...) are
    dropped from the copy. The input is never modified.

    Args:
        data: A mapping, typically parsed from a connection file.
        path: The file it came from, named in the error message.

    Returns:
        A new :class:`ConnectionInfo`.

    Raises:
        ConnectionFileError: naming the first missing or ill-typed key.
    """
    if not isinstance(data, Mapping):
        raise _fail(f"expected a JSON object, got {type(data).__name__}", path=path)
    # Field by field, in this order: the error names the first wrong one.
    transport = _check_transport(data, path)
    ip = _check_ip(data, transport, path)
    ports = _check_ports(data, transport, path)
    key = _check_key(data, path)
    scheme = _check_signature_scheme(data, path)
    info = {"transport": transport, "ip": ip, **ports, "key": key, "signature_scheme": scheme}
    kernel_name = data.get("kernel_name")
    if kernel_name is not None:
        if not isinstance(kernel_name, str):
            raise _fail(
                f"must be a string, got {reprlib.repr(kernel_name)}", path=path, field="kernel_name"
            )
        info["kernel_name"] = kernel_name
    info.update(_check_curve_keys(data, path))
    return cast(ConnectionInfo, info)


def _check_transport(data: Mapping[str, Any], path: _Path) -> str:
    """``transport``: ``tcp`` (the default) or ``ipc``."""
    transport = data.get("transport", "tcp")
    if not isinstance(transport, str) or transport not in ("tcp", "ipc"):
        raise _fail(
            f"must be 'tcp' or 'ipc', got {reprlib.repr(transport)}", path=path, field="transport"
        )
    return transport


def _check_ip(data: Mapping[str, Any], transport: str, path: _Path) -> str:
    """``ip``: an IP address for tcp, a path prefix for ipc."""
    ip = data.get("ip")
    if not isinstance(ip, str) or not ip:
        raise _fail(f"must be a non-empty string, got {reprlib.repr(ip)}", path=path, field="ip")
    if transport == "tcp":
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise _fail(f"{reprlib.repr(ip)} is not an IP address", path=path, field="ip") from None
    elif "\0" in ip or not _is_utf8(ip):
        # zmq takes the endpoint as UTF-8 text, and no path can hold a NUL.
        raise _fail(f"{reprlib.repr(ip)} is not usable as a path prefix", path=path, field="ip")
    return ip


def _check_ports(data: Mapping[str, Any], transport: str, path: _Path) -> dict[str, int]:
    """The five ports, each present and in 1..65535; over tcp, all different."""
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        if name not in data:
            raise _fail("is missing", path=path, field=name)
        port = data[name]
        # bool is an int subclass; true/false in a connection file is a mistake, not a port.
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise _fail(
                f"must be an integer from 1 to 65535, got {reprlib.repr(port)}",
                path=path,
                field=name,
            )
        ports[name] = port
    if transport == "tcp" and len(set(ports.values())) != len(ports):
        raise _fail(f"two sockets share a port: {ports}", path=path)
    return ports


def _check_key(data: Mapping[str, Any], path: _Path) -> str:
    """``key``: text (bytes holding UTF-8 are decoded). The key is secret: error messages
    never quote it. Like jupyter_client, we sign with its UTF-8 encoding, so any text that has
    one will do."""
    key = data.get("key")
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail("must be UTF-8 text", path=path, field="key") from None
    if not isinstance(key, str):
        raise _fail(f"must be a string, got {type(key).__name__}", path=path, field="key")
    if not _is_utf8(key):
        raise _fail("must be text that UTF-8 can encode", path=path, field="key")
    return key


def _check_signature_scheme(data: Mapping[str, Any], path: _Path) -> str:
    """``signature_scheme``: one this package can sign with (``hmac-sha256`` by default)."""
    scheme = data.get("signature_scheme", "hmac-sha256")
    if not isinstance(scheme, str) or scheme not in _SIGNATURE_SCHEMES:
        raise _fail(
            f"unsupported scheme {reprlib.repr(scheme)}; expected one of "
            f"{', '.join(sorted(_SIGNATURE_SCHEMES))}",
            path=path,
            field="signature_scheme",
        )
    return scheme


def _check_curve_keys(data: Mapping[str, Any], path: _Path) -> dict[str, str]:
    """``curve_publickey`` and ``curve_secretkey``: both or neither, a matching pair."""
    public, secret = data.get("curve_publickey"), data.get("curve_secretkey")
    if public is None and secret is None:
        return {}
    if public is None or secret is None:
        missing = "curve_secretkey" if secret is None else "curve_publickey"
        raise _fail(
            "is missing: the two CurveZMQ keys come together or not at all",
            path=path,
            field=missing,
        )
    # A file written by jupyter_client's older code paths may hold bytes.
    public = public.decode("ascii", "replace") if isinstance(public, bytes) else public
    secret = secret.decode("ascii", "replace") if isinstance(secret, bytes) else secret
    problem = check_curve_keypair(public, secret)
    if problem is not None:
        raise _fail(problem, path=path)
    return {"curve_publickey": public, "curve_secretkey": secret}
