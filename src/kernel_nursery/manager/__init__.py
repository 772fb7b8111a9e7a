"""Kernel managers: the structured lifecycle of kernels, on any provisioner.

:class:`KernelManager` runs one kernel inside an ``async with`` scope (start, readiness,
interrupts, restarts, automatic restart of a crashed kernel, shutdown); :func:`start_kernel` is
its shortest form; :class:`KernelNursery` runs many kernels in one scope.
"""

from __future__ import annotations

from ._events import EventKind, KernelEvent
from ._manager import KernelManager, start_kernel
from ._nursery import KernelNursery

__all__ = ["EventKind", "KernelEvent", "KernelManager", "KernelNursery", "start_kernel"]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
