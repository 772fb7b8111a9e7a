"""The exception hierarchy: every error kernel-nursery raises on purpose derives from
:class:`KernelNurseryError`.

Where it helps callers, a class also derives from the built-in exception that describes the
same kind of failure (a bad kernel.json is a :class:`ValueError`, an unknown kernel name a
:class:`LookupError`), so code written against ``jupyter_client``'s broad ``except`` clauses
keeps working. Where the reference API names a built-in error (``ModuleNotFoundError`` for an
unregistered provisioner), that built-in is raised as-is.
"""

from __future__ import annotations

import os

__all__ = [
    "ConnectionFileError",
    "KernelNurseryError",
    "KernelSpecError",
    "LaunchError",
    "NoSuchKernelError",
    "PortAllocationError",
    "ProvisionerConfigError",
    "ProvisionerError",
]


class KernelNurseryError(Exception):
    """Base class of every error that kernel-nursery raises deliberately."""


class _LocatedError(KernelNurseryError, ValueError):
    """An error in a file (or an in-memory mapping standing for one) at a named field."""

    _field_word = "field"

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.field = field
        where = f"{self.path}: " if self.path else ""
        what = f"{self._field_word} {field!r}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class KernelSpecError(_LocatedError):
    """A kernel specification (``kernel.json``) is unreadable or invalid.

    Attributes:
        path: The ``kernel.json`` file, or ``None`` for a spec built from a dict.
        field: The offending field as a dotted path (``"metadata.kernel_provisioner.config"``),
            or ``None`` when the whole file is at fault (it is not JSON, not an object).
    """


class NoSuchKernelError(KernelNurseryError, LookupError):
    """No kernel specification has the requested name.

    Attributes:
        name: The name that was asked for.
        available: The names that do exist, sorted, so the message can list them.

    When a kernel.json exists but cannot be used (its provisioner is not installed), *reason*
    says so in the message.
    """

    def __init__(self, name: str, available: list[str], *, reason: str | None = None) -> None:
        self.name = name
        self.available = sorted(available)
        choices = ", ".join(self.available) if self.available else "none are installed"
        why = f": {reason}" if reason else ""
        super().__init__(f"no kernel named {name!r}{why} (available: {choices})")

    def __str__(self) -> str:
        # LookupError (via KeyError semantics in some callers) would repr() the message.
        return str(self.args[0])


class ConnectionFileError(_LocatedError):
    """A connection file, or a connection-info mapping, is unreadable or invalid.

    Attributes:
        path: The connection file, or ``None`` for an in-memory mapping.
        field: The offending key, or ``None`` when the whole file is at fault.
    """

    _field_word = "key"


class PortAllocationError(KernelNurseryError, OSError):
    """No free ports (or ipc endpoints) could be reserved for a kernel."""


class ProvisionerError(KernelNurseryError):
    """A provisioner could not do what was asked of it (launch, re-attach, signal)."""


class LaunchError(ProvisionerError, OSError):
    """The kernel process could not be started (``argv[0]`` missing or not executable...).

    Nothing is left behind when this is raised: no process, connection file or reserved port.

    Attributes:
        argv: The command that was to be run.
    """

    def __init__(self, message: str, *, argv: list[str]) -> None:
        self.argv = list(argv)
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class ProvisionerConfigError(KernelNurseryError, ValueError):
    """The ``config`` of a ``kernel_provisioner`` stanza does not fit the provisioner class
    (an unknown trait, or a value the trait rejects)."""
