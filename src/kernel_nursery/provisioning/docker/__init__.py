"""The container provisioner: a kernel in a Docker or Podman container, through the engine's
command-line client.

A ``wait`` client per container stands for the kernel (its answer is the kernel's end, as the
``ssh`` process stands for a remote kernel); the container is labelled with the kernel's id and
its owner, created with a cid file, and removed in every ending, by this process's guardian if
it dies. Settings and their checks are in ``_config.py``, the engine calls and the labels in
``_engine.py``.
"""

from __future__ import annotations

from ._engine import remove_stale_containers
from ._provisioner import DockerProvisioner

__all__ = ["DockerProvisioner", "remove_stale_containers"]

from ..._util import fixup_module_metadata

fixup_module_metadata("kernel_nursery.provisioning", globals())
del fixup_module_metadata
