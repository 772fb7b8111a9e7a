"""The resource limits a confining provisioner puts on a kernel: their names, units and parsing.

One vocabulary for every provisioner that confines kernels (``sandbox``, ``docker``), so that a
kernel spec's ``limits`` mean the same wherever they apply, and a ``dead`` event names a limit
the same way whichever provisioner enforced it. Each provisioner says how it enforces each one
(cgroup, rlimit, engine option) and reports what it applied; this module only names and parses.

========== ====================================================== ==========================
name       what it bounds                                         written as
========== ====================================================== ==========================
memory     memory of the kernel and everything it starts (bytes)  ``536870912``, ``"512m"``,
                                                                  ``"1g"``, ``"1.5GiB"``
pids       processes and threads alive at once, kernel included   ``64``
cpu_time   processor seconds each process may use in its life     ``60``, ``"90s"``,
                                                                  ``"5m"``, ``"1h"``
cpus       processors' worth of time per second (a rate)          ``0.5``, ``2``
file_size  the largest file the kernel may write (bytes)          ``"10m"``
open_files file descriptors each process may hold                 ``256``
========== ====================================================== ==========================

Sizes take a binary suffix (``k``, ``m``, ``g``, ``t``: 1024, 1024², ...; an optional ``b``,
``ib`` after it; any case), as Docker's ``--memory`` does. A limit left out (or ``None``) is
not applied.

Nothing here does I/O or imports a provisioner: the module sits beside them, below them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .._errors import ProvisionerConfigError

__all__ = ["LIMIT_NAMES", "Limits", "format_limit", "parse_limits", "parse_size"]

#: The limits' names, in the order they are reported.
LIMIT_NAMES = ("memory", "pids", "cpu_time", "cpus", "file_size", "open_files")

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_FACTORS = {"": 1, "s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Parsed limits: ``None`` where a limit is not set. Build it with :func:`parse_limits`.

    .. versionadded:: 0.1
    """

    #: Bytes of memory for the kernel and its children together.
    memory: int | None = None
    #: Processes and threads at once.
    pids: int | None = None
    #: Processor seconds per process (whole seconds: rlimits count in seconds).
    cpu_time: int | None = None
    #: Processors' worth of time per second.
    cpus: float | None = None
    #: Bytes of the largest file.
    file_size: int | None = None
    #: File descriptors per process.
    open_files: int | None = None

    def items(self) -> list[tuple[str, int | float]]:
        """The limits that are set, as ``(name, value)`` in :data:`LIMIT_NAMES` order."""
        found = [(f.name, getattr(self, f.name)) for f in fields(self)]
        return [(name, value) for name, value in found if value is not None]

    def describe(self) -> dict[str, str]:
        """The limits that are set, each as people read it (``{"memory": "512 MiB"}``)."""
        return {name: format_limit(name, value) for name, value in self.items()}


def parse_limits(value: object, *, where: str) -> Limits:
    """Check and parse a mapping of limits (a kernel spec's or a configuration's).

    Args:
        value: a mapping from the names in :data:`LIMIT_NAMES` to values (see the module's
            table); ``None`` values are left out. ``None`` or ``{}``: no limits.
        where: what holds it, for the error message (``"SandboxProvisioner.limits"``).

    Raises:
        ProvisionerConfigError: a name that is no limit, or a value that is not one (the
            message names both, on one line).
    """
    if value is None:
        return Limits()
    if not isinstance(value, Mapping):
        raise ProvisionerConfigError(
            f"{where} must be a mapping of limit names to values, not {type(value).__name__}"
        )
    for name in value:
        if name not in LIMIT_NAMES:
            raise ProvisionerConfigError(
                f"{where}: unknown limit {name!r:.40}; the limits are {', '.join(LIMIT_NAMES)}"
            )
    raw = {name: v for name, v in value.items() if v is not None}
    return Limits(
        memory=_size(raw, "memory", where),
        pids=_count(raw, "pids", where),
        cpu_time=_cpu_time(raw, where),
        cpus=_cpus(raw, where),
        file_size=_size(raw, "file_size", where),
        open_files=_count(raw, "open_files", where),
    )


def _size(raw: Mapping[str, object], name: str, where: str) -> int | None:
    return parse_size(raw[name], where=f"{where}[{name!r}]") if name in raw else None


def _count(raw: Mapping[str, object], name: str, where: str) -> int | None:
    if name not in raw:
        return None
    value = raw[name]
    if type(value) is str and value.strip().isdigit():
        value = int(value)
    if type(value) is not int or value < 1:
        raise ProvisionerConfigError(
            f"{where}[{name!r}] must be a whole number above 0, not {raw[name]!r:.40}"
        )
    return value


def _cpus(raw: Mapping[str, object], where: str) -> float | None:
    if "cpus" not in raw:
        return None
    number = _number(raw["cpus"])
    if number is None or not 0 < number < 1e6:
        raise ProvisionerConfigError(
            f"{where}['cpus'] must be a number of processors above 0 (0.5, 2), "
            f"not {raw['cpus']!r:.40}"
        )
    return number


def _cpu_time(raw: Mapping[str, object], where: str) -> int | None:
    if "cpu_time" not in raw:
        return None
    value = raw["cpu_time"]
    seconds = _seconds(value)
    if seconds is None or not 0 < seconds < 2**62:
        raise ProvisionerConfigError(
            f"{where}['cpu_time'] must be seconds above 0 (60, '90s', '5m', '1h'), "
            f"not {value!r:.40}"
        )
    return math.ceil(seconds)


def parse_size(value: object, *, where: str) -> int:
    """Bytes from ``536870912``, ``"512m"``, ``"1g"``, ``"1.5GiB"`` (binary multiples).

    Raises:
        ProvisionerConfigError: not a size above 0 (the message names *where*).
    """
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        size = float(match[1]) * _SIZE_FACTORS[match[2].lower()]
    if size is None or not 1 <= size < 2**63:
        raise ProvisionerConfigError(
            f"{where} must be a size in bytes above 0 (536870912, '512m', '1g'), not {value!r:.40}"
        )
    return int(size)


def format_limit(name: str, value: int | float) -> str:
    """A limit's value as people read it: ``512 MiB``, ``64 processes``, ``60 s``."""
    if name in ("memory", "file_size"):
        for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= factor:
                return f"{value / factor:.4g} {unit}"
        return f"{value} bytes"
    unit = {"pids": "processes", "cpu_time": "s", "cpus": "CPUs", "open_files": "files"}[name]
    return f"{value:g} {unit}"


def _number(raw: object) -> float | None:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw) if math.isfinite(raw) else None
    if isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _seconds(raw: object) -> float | None:
    if isinstance(raw, str) and (match := _DURATION.fullmatch(raw.strip())):
        return float(match[1]) * _DURATION_FACTORS[match[2].lower()]
    return _number(raw) if not isinstance(raw, str) else None
