"""The ``kernel-nursery`` command line (also ``python -m kernel_nursery``)."""

from __future__ import annotations

from ._app import KernelNurseryApp, main

__all__ = ["KernelNurseryApp", "main"]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
