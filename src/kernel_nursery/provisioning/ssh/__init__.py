"""The SSH provisioner: a kernel on another host, through the user's own ``ssh``.

The local ``ssh`` process stands for the remote kernel (its exit is the kernel's end); the remote
side (``provisioning/_scripts/ssh_remote.py``) starts the kernel and kills its process group when
the connection goes. Ports are forwarded through a shared control master (``_master.py``).
"""

from __future__ import annotations

from ._errors import RemoteLaunchError, SSHAuthenticationError, SSHConnectionError, SSHHostKeyError
from ._provisioner import SSHProvisioner

__all__ = [
    "RemoteLaunchError",
    "SSHAuthenticationError",
    "SSHConnectionError",
    "SSHHostKeyError",
    "SSHProvisioner",
]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
