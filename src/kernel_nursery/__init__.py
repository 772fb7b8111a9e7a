"""kernel-nursery: launch and supervise Jupyter kernels from async Python.

A structured-concurrency reimplementation of Jupyter's kernel provisioning on anyio, so it runs
under trio and asyncio alike. Every kernel has an owner scope; when the scope ends the kernel's
process group, connection file and ports are gone.

The names here are those most users touch: kernel managers, nurseries and pools, the client and
its messages, kernel specs, connection files, the provisioners one picks, and the errors one
may catch while doing so. Lower-level pieces live in their subpackage, as ``trio.lowlevel`` does
for trio: :mod:`kernel_nursery.provisioning` for writing or driving provisioners (with the errors
only one provisioner raises, in ``provisioning.ssh`` and ``provisioning.slurm``),
:mod:`kernel_nursery.wire` for the message format, signing and sockets,
:mod:`kernel_nursery.connection`, :mod:`kernel_nursery.kernelspec`,
:mod:`kernel_nursery.messaging` and :mod:`kernel_nursery.manager` for the rest by topic.
Names that moved from here (or were renamed) before the first release still import, with a
:class:`DeprecationWarning` saying where they live now.
"""

from __future__ import annotations

from typing import Any

from ._errors import (
    ChannelClosedError,
    ConnectionFileError,
    EncryptedHandshakeError,
    InvalidKernelIdError,
    KernelDiedError,
    KernelNurseryError,
    KernelReplyError,
    KernelSpecError,
    KernelStateError,
    KernelTimeoutError,
    LaunchError,
    LaunchFileNotFoundError,
    LaunchPermissionError,
    NoSuchKernelSpecError,
    PortAllocationError,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerHookError,
    ProvisionerInfoError,
    ResourceLimitError,
    SubscriptionOverflowError,
    TransportEncryptionError,
    UnknownKernelIdError,
)
from ._limits import raise_open_file_limit
from ._signals import SignalCancel, cancel_on_signals
from ._util import deprecated_attribute as _deprecated_attribute
from ._util import fixup_module_metadata
from ._version import __version__
from .connection import ConnectionInfo, read_connection_file, write_connection_file
from .kernelspec import KernelSpec, KernelSpecManager
from .manager import (
    KernelEvent,
    KernelManager,
    KernelNursery,
    KernelPool,
    PoolEvent,
    PoolStatus,
    start_kernel,
)
from .messaging import Comm, ExecuteResult, ExecuteStream, KernelClient, Message, Reply
from .provisioning import (
    DockerProvisioner,
    LocalProvisioner,
    SandboxProvisioner,
    SlurmProvisioner,
    SSHProvisioner,
)

__all__ = [
    "ChannelClosedError",
    "Comm",
    "ConnectionFileError",
    "ConnectionInfo",
    "DockerProvisioner",
    "EncryptedHandshakeError",
    "ExecuteResult",
    "ExecuteStream",
    "InvalidKernelIdError",
    "KernelClient",
    "KernelDiedError",
    "KernelEvent",
    "KernelManager",
    "KernelNursery",
    "KernelNurseryError",
    "KernelPool",
    "KernelReplyError",
    "KernelSpec",
    "KernelSpecError",
    "KernelSpecManager",
    "KernelStateError",
    "KernelTimeoutError",
    "LaunchError",
    "LaunchFileNotFoundError",
    "LaunchPermissionError",
    "LocalProvisioner",
    "Message",
    "NoSuchKernelSpecError",
    "PoolEvent",
    "PoolStatus",
    "PortAllocationError",
    "ProvisionerConfigError",
    "ProvisionerError",
    "ProvisionerHookError",
    "ProvisionerInfoError",
    "Reply",
    "ResourceLimitError",
    "SSHProvisioner",
    "SandboxProvisioner",
    "SignalCancel",
    "SlurmProvisioner",
    "SubscriptionOverflowError",
    "TransportEncryptionError",
    "UnknownKernelIdError",
    "__version__",
    "cancel_on_signals",
    "raise_open_file_limit",
    "read_connection_file",
    "start_kernel",
    "write_connection_file",
]

#: Names that left the top level before the first release (moved to a subpackage, or renamed):
#: old name → (the module it lives in now, its name there). They still import from here, with a
#: warning.
_MOVED: dict[str, tuple[str, str]] = {
    "InvalidSignatureError": ("kernel_nursery.wire", "InvalidSignatureError"),
    "JobEndedError": ("kernel_nursery.provisioning.slurm", "JobEndedError"),
    "JobError": ("kernel_nursery.provisioning.slurm", "JobError"),
    "JobRejectedError": ("kernel_nursery.provisioning.slurm", "JobRejectedError"),
    "KernelProvisionerBase": ("kernel_nursery.provisioning", "KernelProvisionerBase"),
    "KernelProvisionerFactory": ("kernel_nursery.provisioning", "KernelProvisionerFactory"),
    "MessageError": ("kernel_nursery.wire", "MessageError"),
    "NoSuchKernelError": ("kernel_nursery", "NoSuchKernelSpecError"),
    "QueueTimeoutError": ("kernel_nursery.provisioning.slurm", "QueueTimeoutError"),
    "RemoteLaunchError": ("kernel_nursery.provisioning.ssh", "RemoteLaunchError"),
    "SSHAuthenticationError": ("kernel_nursery.provisioning.ssh", "SSHAuthenticationError"),
    "SSHConnectionError": ("kernel_nursery.provisioning.ssh", "SSHConnectionError"),
    "SSHHostKeyError": ("kernel_nursery.provisioning.ssh", "SSHHostKeyError"),
    "Session": ("kernel_nursery.wire", "Session"),
    "UnknownKernelError": ("kernel_nursery", "UnknownKernelIdError"),
    "stop_process": ("kernel_nursery.provisioning", "shutdown_kernel_process"),
}


def __getattr__(name: str) -> Any:
    """A name that moved or was renamed before the first release, with a
    :class:`DeprecationWarning`."""
    return _deprecated_attribute(__name__, name, _MOVED)


fixup_module_metadata(__name__, globals())
del fixup_module_metadata
