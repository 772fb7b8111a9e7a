r"""The errors only the SSH provisioner raises: the connection failed (and why), or the remote
side could not start the kernel. Both are :class:`~kernel_nursery.LaunchError`\ s.
"""

from __future__ import annotations

from ..._errors import LaunchError

__all__ = ["RemoteLaunchError", "SSHAuthenticationError", "SSHConnectionError", "SSHHostKeyError"]


class SSHConnectionError(LaunchError):
    """The SSH connection for a remote kernel could not be made or was refused: an unknown
    host, a refused or timed-out connection, failed authentication, a host key that does not
    match. Nothing is left behind, on either side.

    Attributes:
        host: The host (or ssh config alias) as configured.
        argv: The ``ssh`` command that was run.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, host: str, argv: list[str]) -> None:
        self.host = host
        super().__init__(message, argv=argv)


class SSHAuthenticationError(SSHConnectionError):
    """The SSH server refused every credential offered (no usable key, agent or config).

    .. versionadded:: 0.1
    """


class SSHHostKeyError(SSHConnectionError):
    """The SSH host key is unknown or differs from the one recorded in ``known_hosts``. It is
    refused, never accepted silently: check the key, then record it (``ssh-keyscan``, or one
    interactive ``ssh``).

    .. versionadded:: 0.1
    """


class RemoteLaunchError(LaunchError):
    """The SSH connection worked but the kernel could not be started on the remote host: its
    Python or kernel is missing, its working directory does not exist, or its ports are taken.
    Nothing is left behind, on either side.

    Attributes:
        host: The host (or ssh config alias) as configured.
        reason: ``"no-python"``, ``"no-kernel"``, ``"ports-in-use"``, ``"bad-config"`` or
            ``"no-answer"``.

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, host: str, reason: str, argv: list[str]) -> None:
        self.host = host
        self.reason = reason
        super().__init__(message, argv=argv)
