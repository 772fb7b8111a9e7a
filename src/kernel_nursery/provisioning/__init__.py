"""Kernel provisioners: what starts a kernel, watches it and stops it.

:class:`KernelProvisionerBase` is the contract, :class:`LocalProvisioner` the default
implementation (a local process), :class:`DockerProvisioner` runs a kernel in a container
(Docker or Podman), :class:`SSHProvisioner` runs a kernel on another host over
SSH, :class:`SlurmProvisioner` runs kernels as Slurm jobs, and
:class:`KernelProvisionerFactory` finds provisioners that packages register in the entry-point
group ``kernel_nursery.provisioners``. The API is that of ``jupyter_client.provisioning``, on
anyio.
"""

from __future__ import annotations

from ._base import (
    DEFAULT_SHUTDOWN_WAIT_TIME,
    DEFAULT_STABLE_START_TIME,
    KILL_WAIT_TIME,
    KernelProvisionerBase,
    KernelProvisionerMeta,
    LaunchProgress,
    stop_process,
)
from ._command import format_kernel_cmd
from ._factory import (
    DEFAULT_PROVISIONER_ENV,
    ENTRY_POINT_GROUP,
    JUPYTER_PREFIX,
    KernelProvisionerFactory,
)
from ._process import UNKNOWN_EXIT_STATUS
from .docker import DockerProvisioner, remove_stale_containers
from .local import LocalProvisioner
from .slurm import SlurmProvisioner
from .ssh import SSHProvisioner

__all__ = [
    "DEFAULT_PROVISIONER_ENV",
    "DEFAULT_SHUTDOWN_WAIT_TIME",
    "DEFAULT_STABLE_START_TIME",
    "ENTRY_POINT_GROUP",
    "JUPYTER_PREFIX",
    "KILL_WAIT_TIME",
    "UNKNOWN_EXIT_STATUS",
    "DockerProvisioner",
    "KernelProvisionerBase",
    "KernelProvisionerFactory",
    "KernelProvisionerMeta",
    "LaunchProgress",
    "LocalProvisioner",
    "SSHProvisioner",
    "SlurmProvisioner",
    "format_kernel_cmd",
    "remove_stale_containers",
    "stop_process",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
