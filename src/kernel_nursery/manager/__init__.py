"""Kernel managers: the structured lifecycle of kernels, on any provisioner.

:class:`KernelManager` runs one kernel inside an ``async with`` scope (start, readiness,
interrupts, restarts, automatic restart of a crashed kernel, shutdown); :func:`start_kernel` is
its shortest form; :class:`KernelNursery` runs many kernels in one scope (and culls idle ones
if asked); :class:`KernelPool` keeps kernels warm and hands each to one taker.
"""

from __future__ import annotations

from ._events import EventKind, KernelEvent, PoolEvent, PoolEventKind, PoolStatus
from ._manager import KernelManager, start_kernel
from ._nursery import KernelNursery
from ._pool import KernelPool

__all__ = [
    "EventKind",
    "KernelEvent",
    "KernelManager",
    "KernelNursery",
    "KernelPool",
    "PoolEvent",
    "PoolEventKind",
    "PoolStatus",
    "start_kernel",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
