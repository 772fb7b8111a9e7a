"""Connection files on disk: where they live, how they are written and read, and their keys."""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from .._errors import ConnectionFileError
from ._info import PORT_NAMES, ConnectionInfo, Transport, validate_connection_info
from ._ports import release_ports, reserve_ports

__all__ = [
    "connection_file_path",
    "new_connection_info",
    "new_key",
    "read_connection_file",
    "release_connection_info",
    "remove_connection_file",
    "runtime_dir",
    "write_connection_file",
]


def new_key() -> str:
    """A fresh message-signing key: 256 random bits from :mod:`secrets`, as 64 hex characters."""
    return secrets.token_hex(32)


def runtime_dir() -> Path:
    """Jupyter's runtime directory (``jupyter --runtime-dir``), created with mode 0700 if needed.

    Connection files hold the key that lets anyone run code in the kernel, so the directory must
    not be readable by other users. An existing directory of ours with looser permissions is
    tightened to 0700; one that belongs to another user is refused.

    Raises:
        ConnectionFileError: the directory belongs to another user.
    """
    path = Path(jupyter_runtime_dir())
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise ConnectionFileError(
            "the runtime directory belongs to another user; set JUPYTER_RUNTIME_DIR to a "
            "directory of your own",
            path=path,
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        path.chmod(0o700)
    return path


def connection_file_path(kernel_id: str) -> Path:
    """Where the connection file of kernel *kernel_id* goes by default:
    ``<runtime dir>/kernel-<kernel_id>.json``, the name Jupyter tools look for."""
    return runtime_dir() / f"kernel-{kernel_id}.json"


def new_connection_info(
    *,
    transport: Transport = "tcp",
    ip: str = "127.0.0.1",
    key: str | None = None,
    kernel_name: str = "",
) -> ConnectionInfo:
    """Reserve five ports (or ipc endpoints) and return complete connection info for a kernel.

    The ports stay reserved in this process until :func:`release_connection_info` is called.

    Args:
        transport: ``"tcp"`` or ``"ipc"``.
        ip: An address of this machine for ``tcp``; the endpoint path prefix for ``ipc``.
        key: The signing key; a new 256-bit key by default.
        kernel_name: Recorded in the file, as Jupyter does.

    Raises:
        PortAllocationError: no ports could be reserved on *ip*.
    """
    ports = reserve_ports(transport=transport, ip=ip, count=len(PORT_NAMES))
    info: dict[str, object] = {
        "transport": transport,
        "ip": ip,
        **dict(zip(PORT_NAMES, ports, strict=True)),
        "key": new_key() if key is None else key,
        "signature_scheme": "hmac-sha256",
        "kernel_name": kernel_name,
    }
    return validate_connection_info(info)


def release_connection_info(info: ConnectionInfo) -> None:
    """Return the ports of *info* to the pool and, for ``ipc``, remove its endpoint files.

    Safe to call more than once, and for info whose ports this process never reserved.
    """
    ports = [info[name] for name in PORT_NAMES]
    release_ports(transport=info["transport"], ip=info["ip"], ports=ports)
    if info["transport"] == "ipc":
        for port in ports:
            Path(f"{info['ip']}-{port}").unlink(missing_ok=True)


def write_connection_file(info: ConnectionInfo, path: str | os.PathLike[str]) -> Path:
    """Write *info* to *path* as Jupyter does, readable by the owner only (mode 0600).

    The file is written to a fresh temporary file in the same directory and renamed over *path*,
    so a reader never sees half a file and a link planted at *path* is replaced, not followed.

    Returns:
        *path*, as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(info), f, indent=2)
            f.write("\n")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read and validate a connection file written by kernel-nursery, Jupyter or a kernel.

    Raises:
        ConnectionFileError: the file cannot be read, is not JSON, or lacks a required key.
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ConnectionFileError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConnectionFileError(f"not valid JSON: {exc}", path=path) from exc
    except RecursionError:
        # The decoder recurses once per level; the traceback would be all noise.
        raise ConnectionFileError(
            "JSON nested too deeply (deeper than Python's recursion limit)", path=path
        ) from None
    return validate_connection_info(data, path=path)


def remove_connection_file(path: str | os.PathLike[str]) -> None:
    """Remove a connection file; a file that is already gone is not an error."""
    Path(path).unlink(missing_ok=True)
