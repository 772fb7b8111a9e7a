"""The local provisioner: a kernel as a process group on this machine, supervised through a pidfd
(or the child process itself) and ended with its group, the guardian covering a manager that dies.
"""

from __future__ import annotations

from ._provisioner import LocalProvisioner

__all__ = ["LocalProvisioner"]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
