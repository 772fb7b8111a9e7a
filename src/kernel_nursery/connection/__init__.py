"""Connection info, ports and connection files, compatible with Jupyter's.

A kernel is reached through five sockets whose addresses, with the message-signing key, are
written to a *connection file* that the kernel reads at start-up. This subpackage makes that
information (:func:`new_connection_info`), keeps this process from handing one port to two
kernels (:func:`reserved_ports`), and writes and reads the files with the permissions they need
(:func:`write_connection_file`, :func:`read_connection_file`).
"""

from __future__ import annotations

from ._files import (
    connection_file_path,
    new_connection_info,
    new_key,
    read_connection_file,
    release_connection_info,
    remove_connection_file,
    runtime_dir,
    write_connection_file,
)
from ._info import PORT_NAMES, ConnectionInfo, PortName, Transport, validate_connection_info
from ._keys import curve_supported, new_curve_keypair
from ._ports import reserved_ports

__all__ = [
    "PORT_NAMES",
    "ConnectionInfo",
    "PortName",
    "Transport",
    "connection_file_path",
    "curve_supported",
    "new_connection_info",
    "new_curve_keypair",
    "new_key",
    "read_connection_file",
    "release_connection_info",
    "remove_connection_file",
    "reserved_ports",
    "runtime_dir",
    "validate_connection_info",
    "write_connection_file",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
