"""Checks of take-over info (what ``load_provisioner_info`` gets), shared by the provisioners.

The info may come from another process, a file, anyone: each field that names a process or a
file is checked before anything is signalled, started or removed, and a bad one is refused with
a one-line :class:`~kernel_nursery.ProvisionerInfoError` naming it, whichever provisioner reads
it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .._errors import ProvisionerInfoError

__all__ = ["info_path", "info_pid", "info_start_time", "is_path"]


def info_pid(
    info: Mapping[str, Any], name: str, *, subject: str = "a kernel", local: bool = True
) -> int | None:
    """``info[name]``, a process or group id, checked: ``None``, or an integer above 1.

    With *local* (the id is on this machine) it must also be neither this process's id, nor its
    parent's, nor (for a ``pgid``) its group's: signalling those would hit this process.
    *subject* says what is taken over, in the message (``"a kernel on HOST"``).

    Raises:
        ProvisionerInfoError: it is none of these.
    """
    value = info.get(name)
    if value is None:
        return None
    if type(value) is not int or not 1 < value < 2**31:
        raise ProvisionerInfoError(
            f"cannot take over {subject}: {name} {value!r:.40} is not a process id above 1"
        )
    if local and (
        value in (os.getpid(), os.getppid()) or (name == "pgid" and value == os.getpgrp())
    ):
        raise ProvisionerInfoError(
            f"cannot take over {subject}: {name} {value} names this process, its parent or "
            "its process group"
        )
    return value


def info_start_time(
    info: Mapping[str, Any], name: str, *, subject: str = "a kernel", required: bool = False
) -> int | None:
    """``info[name]``, a process's start time (clock ticks after boot, as ``/proc`` says),
    checked: a non-negative integer, or ``None`` unless *required*.

    Raises:
        ProvisionerInfoError: it is not.
    """
    value = info.get(name)
    if value is None and not required:
        return None
    if type(value) is not int or value < 0:
        why = " (it tells the kernel from another process that got its pid)" if required else ""
        raise ProvisionerInfoError(
            f"cannot take over {subject}: {name} {value!r:.40} is not a non-negative integer{why}"
        )
    return value


def info_path(info: Mapping[str, Any], name: str, *, subject: str = "a kernel") -> str | None:
    """``info[name]``, a file's path, checked: ``None`` or a path (see :func:`is_path`).

    Raises:
        ProvisionerInfoError: it is not.
    """
    value = info.get(name)
    if value is not None and not is_path(value):
        raise ProvisionerInfoError(
            f"cannot take over {subject}: {name} {value!r:.40} is not a path"
        )
    return value


def is_path(value: object) -> bool:
    """Whether *value* can name a file: a string without NUL bytes that the file system
    encoding can encode (no lone surrogate)."""
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True
