"""kernel-nursery: launch and supervise Jupyter kernels from async Python.

A structured-concurrency reimplementation of Jupyter's kernel provisioning on anyio, so it runs
under trio and asyncio alike. Every kernel has an owner scope; when the scope ends the kernel's
process group, connection file and ports are gone.

The public API is re-exported here; :mod:`kernel_nursery.provisioning`,
:mod:`kernel_nursery.kernelspec`, :mod:`kernel_nursery.connection` and
:mod:`kernel_nursery.messaging` hold the same names by
topic, with a few lower-level helpers.
"""

from __future__ import annotations

from ._errors import (
    ChannelClosedError,
    ConnectionFileError,
    EncryptedHandshakeError,
    InvalidKernelIdError,
    InvalidSignatureError,
    JobEndedError,
    JobError,
    JobRejectedError,
    KernelDiedError,
    KernelNurseryError,
    KernelReplyError,
    KernelSpecError,
    KernelStateError,
    KernelTimeoutError,
    LaunchError,
    LaunchFileNotFoundError,
    LaunchPermissionError,
    MessageError,
    NoSuchKernelError,
    PortAllocationError,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerInfoError,
    QueueTimeoutError,
    RemoteLaunchError,
    ResourceLimitError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
    SubscriptionOverflowError,
    TransportEncryptionError,
    UnknownKernelError,
)
from ._limits import raise_open_file_limit
from ._signals import SignalCancel, cancel_on_signals
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
from .messaging import Comm, ExecuteResult, ExecuteStream, KernelClient, Message, Reply, Session
from .provisioning import (
    KernelProvisionerBase,
    KernelProvisionerFactory,
    LocalProvisioner,
    SlurmProvisioner,
    SSHProvisioner,
    stop_process,
)

__all__ = [
    "ChannelClosedError",
    "Comm",
    "ConnectionFileError",
    "ConnectionInfo",
    "EncryptedHandshakeError",
    "ExecuteResult",
    "ExecuteStream",
    "InvalidKernelIdError",
    "InvalidSignatureError",
    "JobEndedError",
    "JobError",
    "JobRejectedError",
    "KernelClient",
    "KernelDiedError",
    "KernelEvent",
    "KernelManager",
    "KernelNursery",
    "KernelNurseryError",
    "KernelPool",
    "KernelProvisionerBase",
    "KernelProvisionerFactory",
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
    "MessageError",
    "NoSuchKernelError",
    "PoolEvent",
    "PoolStatus",
    "PortAllocationError",
    "ProvisionerConfigError",
    "ProvisionerError",
    "ProvisionerInfoError",
    "QueueTimeoutError",
    "RemoteLaunchError",
    "Reply",
    "ResourceLimitError",
    "SSHAuthenticationError",
    "SSHConnectionError",
    "SSHHostKeyError",
    "SSHProvisioner",
    "Session",
    "SignalCancel",
    "SlurmProvisioner",
    "SubscriptionOverflowError",
    "TransportEncryptionError",
    "UnknownKernelError",
    "__version__",
    "cancel_on_signals",
    "raise_open_file_limit",
    "read_connection_file",
    "start_kernel",
    "stop_process",
    "write_connection_file",
]

from ._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
