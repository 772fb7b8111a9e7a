"""The ``sandbox`` provisioner: local kernels confined by bubblewrap, with resource limits."""

from __future__ import annotations

from ._provisioner import SandboxProvisioner

__all__ = ["SandboxProvisioner"]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
