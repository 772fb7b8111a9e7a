"""The resource limits a kernel can be given, in one vocabulary for every isolating provisioner.

The container provisioner (``docker``) and the sandbox provisioner (``sandbox``) take the same
names and units in their ``kernel_provisioner.config``, so a kernel spec moves from one to the
other unchanged:

``memory``
    the most memory the kernel (with everything it starts) may use: a number of bytes, or a
    string with a unit, ``"512m"``, ``"2g"``, ``"64k"``, ``"100b"`` (powers of 1024, as Docker
    reads them; upper case too). Swap is not extra: the limit covers memory and swap together.
``cpus``
    how many CPUs' worth of time it may use, a positive number (``0.5``, ``2``).
``pids_limit``
    how many processes (threads included) it may run at once, a positive integer.

A limit the kernel hits is reported by the provisioner as an
:class:`~kernel_nursery.provisioning.ExitReason` naming the limit, and a kernel manager puts that
in its ``dead`` (or ``restarting``) event.

Every check here raises :class:`~kernel_nursery.ProvisionerConfigError` with one line that
names the setting, before anything is started.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .._errors import ProvisionerConfigError

__all__ = ["ResourceLimits", "format_memory", "parse_memory", "resource_limits"]

_MEMORY = re.compile(r"\s*(\d+)\s*([bkmg]?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
#: Below this a kernel cannot even start its interpreter; Docker refuses less than 6 MiB too.
MIN_MEMORY = 6 * 1024**2


@dataclass(frozen=True, kw_only=True)
class ResourceLimits:
    """Checked limits: ``None`` means no limit."""

    #: Bytes of memory (and swap) together.
    memory: int | None = None
    #: CPUs' worth of time.
    cpus: float | None = None
    #: Processes and threads at once.
    pids_limit: int | None = None


def parse_memory(value: object, *, setting: str = "memory") -> int:
    """Bytes, from a number of bytes or a string such as ``"512m"`` (see the module's text).

    Raises:
        ProvisionerConfigError: not a positive size, or below :data:`MIN_MEMORY`.
    """
    if isinstance(value, bool):
        value = None  # never a size
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _MEMORY.fullmatch(value)):
        size = int(match[1]) * _UNITS[match[2].lower()]
    else:
        raise ProvisionerConfigError(
            f"{setting} must be a size such as '512m', '2g' or a number of bytes, not {value!r:.40}"
        )
    if size < MIN_MEMORY:
        raise ProvisionerConfigError(
            f"{setting} {value!r:.40} is below the least a kernel can run in "
            f"({format_memory(MIN_MEMORY)})"
        )
    return size


def format_memory(size: int) -> str:
    """*size* bytes in the largest unit that divides it exactly: ``"512m"``, ``"1g"``."""
    for unit in ("g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size}b"


def resource_limits(*, memory: object, cpus: object, pids_limit: object) -> ResourceLimits:
    """Check the three settings as a provisioner's config holds them (empty string, ``0`` or
    ``None``: no limit) and return them as :class:`ResourceLimits`.

    Raises:
        ProvisionerConfigError: one of them is not a value of its kind (the message names it).
    """
    checked_memory = None if memory in ("", None, 0) else parse_memory(memory)
    checked_cpus: float | None = None
    if cpus not in ("", None, 0):
        if isinstance(cpus, bool) or not isinstance(cpus, int | float | str):
            raise ProvisionerConfigError(f"cpus must be a positive number, not {cpus!r:.40}")
        try:
            checked_cpus = float(cpus)
        except ValueError:
            checked_cpus = math.nan
        if not (math.isfinite(checked_cpus) and checked_cpus > 0):
            raise ProvisionerConfigError(f"cpus must be a positive number, not {cpus!r:.40}")
    checked_pids: int | None = None
    if pids_limit not in (None, 0):
        if isinstance(pids_limit, bool) or not isinstance(pids_limit, int) or pids_limit < 1:
            raise ProvisionerConfigError(
                f"pids_limit must be a positive integer, not {pids_limit!r:.40}"
            )
        checked_pids = pids_limit
    return ResourceLimits(memory=checked_memory, cpus=checked_cpus, pids_limit=checked_pids)
