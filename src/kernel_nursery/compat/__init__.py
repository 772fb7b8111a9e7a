"""Bridges with jupyter_client, both ways; imported only by those who use them.

- :class:`NurseryProvisioner` and :class:`NurseryLocalProvisioner` are jupyter_client
  provisioners (entry-point group ``jupyter_client.kernel_provisioners``, names
  ``kernel-nursery`` and ``kernel-nursery-local``) that run kernels with kernel-nursery's
  provisioners, for jupyter_client's kernel managers, jupyter_server, JupyterLab and nbclient.
- :class:`NurseryRestarter` and :class:`AsyncNurseryRestarter` are restarters for
  jupyter_client's IOLoop kernel managers (jupyter_server's) that await a kernel's exit instead
  of polling for it every 3 s.
- :class:`JupyterProvisioner` is one of our provisioners that runs a jupyter_client provisioner,
  for our kernel manager on either backend; kernel specs name it ``jupyter:<name>``.

Importing this subpackage imports jupyter_client (the ``jupyter`` extra:
``pip install kernel-nursery[jupyter]``); ``import kernel_nursery`` never does.
"""

from __future__ import annotations

from ._from_jupyter import CANCEL_WAIT, JUPYTER_GROUP, JupyterProvisioner
from ._restarter import AsyncNurseryRestarter, NurseryRestarter
from ._to_jupyter import NurseryLocalProvisioner, NurseryProvisioner

__all__ = [
    "CANCEL_WAIT",
    "JUPYTER_GROUP",
    "AsyncNurseryRestarter",
    "JupyterProvisioner",
    "NurseryLocalProvisioner",
    "NurseryProvisioner",
    "NurseryRestarter",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
