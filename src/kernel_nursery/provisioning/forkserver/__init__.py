"""The fork-server provisioner: local Python kernels forked from a warm template process that
has imported ipykernel (and the modules it is told to preload), each then supervised as a local
kernel. See :doc:`/forkserver`.
"""

from __future__ import annotations

from ._errors import ForkServerError
from ._provisioner import ForkServerProvisioner
from ._template import hold_fork_templates

__all__ = ["ForkServerError", "ForkServerProvisioner", "hold_fork_templates"]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
