"""Kernel specifications: Jupyter's ``kernel.json`` files, read, checked and found.

:class:`KernelSpec` is one kernel's spec; :class:`KernelSpecManager` finds the installed ones in
Jupyter's data directories. The file format is Jupyter's, unchanged.
"""

from __future__ import annotations

from .._kernelspec import KernelSpec, ProvisionerStanza
from ._manager import NATIVE_KERNEL_NAME, KernelSpecManager

__all__ = ["NATIVE_KERNEL_NAME", "KernelSpec", "KernelSpecManager", "ProvisionerStanza"]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
