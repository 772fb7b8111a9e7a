"""The fork server's errors."""

from __future__ import annotations

from ..._errors import LaunchError

__all__ = ["ForkServerError"]


class ForkServerError(LaunchError):
    """A kernel could not be forked from a template (the message says why: a failed preload,
    a template with threads, a command that is not ``python -m module``...) and
    :attr:`~kernel_nursery.provisioning.forkserver.ForkServerProvisioner.fallback` is off.
    Nothing is left behind: no process, connection file or reserved port.

    .. versionadded:: 0.1
    """
