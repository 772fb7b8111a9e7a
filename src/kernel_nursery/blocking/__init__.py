"""A synchronous face: kernels for plain scripts and for code already inside an event loop.

:func:`start_kernel` runs the async API on an event loop of its own, in a thread (anyio's
blocking portal), and hands back a :class:`BlockingKernel` whose methods wait for their
results.
"""

from __future__ import annotations

from ._kernel import BlockingKernel, SyncStdinHandler, start_kernel

__all__ = ["BlockingKernel", "SyncStdinHandler", "start_kernel"]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
