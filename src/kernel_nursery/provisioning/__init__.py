"""Kernel provisioners: what starts a kernel, watches it and stops it.

:class:`KernelProvisionerBase` is the contract, :class:`LocalProvisioner` the default
implementation (a local process), :class:`SandboxProvisioner` runs local kernels confined by
bubblewrap, :class:`DockerProvisioner` runs a kernel in a container (Docker or Podman),
:class:`ForkServerProvisioner` forks Python kernels from a warm template process,
:class:`SSHProvisioner` runs a kernel on another host over SSH, :class:`SlurmProvisioner` runs
kernels as Slurm jobs, and
:class:`KernelProvisionerFactory` finds provisioners that packages register in the entry-point
group ``kernel_nursery.provisioners``. The API is that of ``jupyter_client.provisioning``, on
anyio.

The errors that only one provisioner raises live in its package and are re-exported here:
:class:`SSHConnectionError` and its kin from :mod:`kernel_nursery.provisioning.ssh`,
:class:`JobError` and its kin from :mod:`kernel_nursery.provisioning.slurm`.
"""

from __future__ import annotations

from typing import Any

from .._util import deprecated_attribute as _deprecated_attribute
from .._util import fixup_module_metadata
from ._base import (
    DEFAULT_SHUTDOWN_WAIT_TIME,
    DEFAULT_STABLE_START_TIME,
    KILL_WAIT_TIME,
    KernelProvisionerBase,
    KernelProvisionerMeta,
    LaunchProgress,
    shutdown_kernel_process,
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
from .forkserver import ForkServerError, ForkServerProvisioner, hold_fork_templates
from .local import LocalProvisioner
from .sandbox import SandboxProvisioner
from .slurm import JobEndedError, JobError, JobRejectedError, QueueTimeoutError, SlurmProvisioner
from .ssh import (
    RemoteLaunchError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
    SSHProvisioner,
)

__all__ = [
    "DEFAULT_PROVISIONER_ENV",
    "DEFAULT_SHUTDOWN_WAIT_TIME",
    "DEFAULT_STABLE_START_TIME",
    "ENTRY_POINT_GROUP",
    "JUPYTER_PREFIX",
    "KILL_WAIT_TIME",
    "UNKNOWN_EXIT_STATUS",
    "DockerProvisioner",
    "ForkServerError",
    "ForkServerProvisioner",
    "JobEndedError",
    "JobError",
    "JobRejectedError",
    "KernelProvisionerBase",
    "KernelProvisionerFactory",
    "KernelProvisionerMeta",
    "LaunchProgress",
    "LocalProvisioner",
    "QueueTimeoutError",
    "RemoteLaunchError",
    "SSHAuthenticationError",
    "SSHConnectionError",
    "SSHHostKeyError",
    "SSHProvisioner",
    "SandboxProvisioner",
    "SlurmProvisioner",
    "format_kernel_cmd",
    "hold_fork_templates",
    "remove_stale_containers",
    "shutdown_kernel_process",
]

#: Names renamed before the first release: old name → (its module now, its name there); they
#: still import from here, with a warning.
_MOVED: dict[str, tuple[str, str]] = {
    "stop_process": ("kernel_nursery.provisioning", "shutdown_kernel_process"),
}


def __getattr__(name: str) -> Any:
    """A name renamed before the first release, with a :class:`DeprecationWarning`."""
    return _deprecated_attribute(__name__, name, _MOVED)


fixup_module_metadata(__name__, globals())
del fixup_module_metadata
