"""The exception hierarchy: every error kernel-nursery raises on purpose derives from
:class:`KernelNurseryError`.

Where it helps callers, a class also derives from the built-in exception that describes the
same kind of failure (a bad kernel.json is a :class:`ValueError`, an unknown kernel name a
:class:`LookupError`), so code written against ``jupyter_client``'s broad ``except`` clauses
keeps working. Where the reference API names a built-in error (``ModuleNotFoundError`` for an
unregistered provisioner), that built-in is raised as-is.

Errors that only one provisioner raises live in that provisioner's package
(``provisioning/ssh/_errors.py``, ``provisioning/slurm/_errors.py``), derived from the common
ones here (:class:`LaunchError`, :class:`ProvisionerError`).
"""

from __future__ import annotations

import difflib
import os

__all__ = [
    "ChannelClosedError",
    "ConnectionFileError",
    "EncryptedHandshakeError",
    "InvalidKernelIdError",
    "InvalidSignatureError",
    "KernelDiedError",
    "KernelNurseryError",
    "KernelReplyError",
    "KernelSpecError",
    "KernelStateError",
    "KernelTimeoutError",
    "LaunchError",
    "LaunchFileNotFoundError",
    "LaunchPermissionError",
    "MessageError",
    "NoSuchKernelSpecError",
    "PortAllocationError",
    "ProvisionerConfigError",
    "ProvisionerError",
    "ProvisionerHookError",
    "ProvisionerInfoError",
    "ResourceLimitError",
    "SubscriptionOverflowError",
    "TransportEncryptionError",
    "UnknownKernelIdError",
]


class KernelNurseryError(Exception):
    """Base class of every error that kernel-nursery raises deliberately."""


class _LocatedError(KernelNurseryError, ValueError):
    """An error in a file (or an in-memory mapping standing for one) at a named field."""

    _field_word = "field"

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        field: str | None = None,
    ) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.field = field
        where = f"{self.path}: " if self.path else ""
        what = f"{self._field_word} {field!r}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class KernelSpecError(_LocatedError):
    """A kernel specification (``kernel.json``) is unreadable or invalid.

    Attributes:
        path: The ``kernel.json`` file, or ``None`` for a spec built from a dict.
        field: The offending field as a dotted path (``"metadata.kernel_provisioner.config"``),
            or ``None`` when the whole file is at fault (it is not JSON, not an object).
    """


class NoSuchKernelSpecError(KernelNurseryError, LookupError):
    """No kernel specification has the requested name (compare
    :class:`UnknownKernelIdError`: no *running* kernel has the requested id).

    Attributes:
        name: The name that was asked for.
        available: The names that do exist, sorted, so the message can list them.

    When a kernel.json exists but cannot be used (its provisioner is not installed), *reason*
    says so in the message. The message ends with the next step: *hint* when given (what
    provides the kernel), else the closest available name (``did you mean 'python3'?``).

    ``NoSuchKernelError``, its name before the first release, is a deprecated alias.
    """

    def __init__(
        self,
        name: str,
        available: list[str],
        *,
        reason: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.name = name
        self.available = sorted(available)
        choices = ", ".join(self.available) if self.available else "none are installed"
        why = f": {reason}" if reason else ""
        if hint is None and not reason:
            close = difflib.get_close_matches(name.lower(), self.available, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        after = f"; {hint}" if hint else ""
        super().__init__(f"no kernel named {name!r}{why} (available: {choices}){after}")

    def __str__(self) -> str:
        # LookupError (via KeyError semantics in some callers) would repr() the message.
        return str(self.args[0])


class ConnectionFileError(_LocatedError):
    """A connection file, or a connection-info mapping, is unreadable or invalid.

    Attributes:
        path: The connection file, or ``None`` for an in-memory mapping.
        field: The offending key, or ``None`` when the whole file is at fault.
    """

    _field_word = "key"


class PortAllocationError(KernelNurseryError, OSError):
    """No free ports (or ipc endpoints) could be reserved for a kernel."""


class ResourceLimitError(KernelNurseryError, OSError):
    """This process reached one of its limits (open files, memory) while starting a kernel.

    Raised at once, before the kernel's ``ready_timeout`` runs out, and leaving nothing of that
    kernel behind (no process, connection file or held port); kernels already running are not
    disturbed. The message says which limit and how to raise it (for open files: ``ulimit -n``,
    or :func:`~kernel_nursery.raise_open_file_limit`).

    Attributes:
        limit: ``"open files"`` or ``"memory"``.
        errno: The OS's error number (``EMFILE``, ``ENFILE``, ``ENOMEM``).

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, limit: str, errno: int) -> None:
        self.limit = limit
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:
        return str(self.args[0])


class ProvisionerError(KernelNurseryError):
    """A provisioner could not do what was asked of it (launch, re-attach, signal)."""


class ProvisionerHookError(ProvisionerError):
    """A provisioner's hook misbehaved while a kernel manager drove it: it raised, returned
    something it must not (a ``poll()`` that is not a status), or did not return within its
    budget and was abandoned.

    The manager logged it as an error (naming the provisioner's class and the hook), went on,
    and stopped the kernel as far as it could by itself (for a provisioner that exposes a local
    process group, by killing that group); then it raised this, once the kernel was stopped.
    What the hook raised, if anything, is the ``__cause__``. See :doc:`/manager` for the bounds.

    Attributes:
        provisioner: The provisioner's class name.
        hook: The hook's name (``"terminate"``, ``"cleanup"``...).

    .. versionadded:: 0.1
    """

    def __init__(self, message: str, *, provisioner: str, hook: str) -> None:
        self.provisioner = provisioner
        self.hook = hook
        super().__init__(message)


class ProvisionerInfoError(ProvisionerError, ValueError):
    """Provisioner info given to ``load_provisioner_info`` does not describe a kernel this
    process may take over: a process id or group that is not a number above 1, that names this
    process or its own group, or a process that cannot be told to be the kernel (its group or
    start time differs from the info's), or a connection file that is not the kernel's (cleanup
    would remove it); for a remote kernel, a start time, ports or a connection file that are not
    what they must be; for a Slurm job, a job or step id that is not one, or a step of an
    allocation. Every provisioner raises it for such info. Nothing is signalled, removed or
    taken over.

    .. versionadded:: 0.1
    """


class LaunchError(ProvisionerError, OSError):
    """The kernel process could not be started (``argv[0]`` missing or not executable...).

    Nothing is left behind when this is raised: no process, connection file or reserved port.

    Attributes:
        argv: The command that was to be run.
    """

    def __init__(self, message: str, *, argv: list[str]) -> None:
        self.argv = list(argv)
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class LaunchFileNotFoundError(LaunchError, FileNotFoundError):
    """The kernel's program, or its working directory, does not exist: a :class:`LaunchError`
    that is also the :class:`FileNotFoundError` the OS raised (jupyter_client raises that one,
    and its callers catch it), with its ``errno`` and the program as ``filename``.

    .. versionadded:: 0.1
    """


class LaunchPermissionError(LaunchError, PermissionError):
    """The kernel's program is not executable (or not reachable through its directories): a
    :class:`LaunchError` that is also the :class:`PermissionError` the OS raised, with its
    ``errno`` and the program as ``filename``.

    .. versionadded:: 0.1
    """


def launch_os_error(message: str, *, argv: list[str], cause: OSError) -> LaunchError:
    """The :class:`LaunchError` for an OS error *cause* at a kernel's spawn: of the subclass
    matching its built-in kind (missing, not permitted), with *message* and the OS's
    ``errno``, and the program as ``filename``."""
    kind: type[LaunchError] = LaunchError
    if isinstance(cause, FileNotFoundError):
        kind = LaunchFileNotFoundError
    elif isinstance(cause, PermissionError):
        kind = LaunchPermissionError
    error = kind(message, argv=argv)
    error.errno, error.strerror = cause.errno, cause.strerror
    error.filename = argv[0] if argv else cause.filename
    return error


class ProvisionerConfigError(KernelNurseryError, ValueError):
    """The ``config`` of a ``kernel_provisioner`` stanza does not fit the provisioner class
    (an unknown trait, or a value the trait rejects)."""


class MessageError(KernelNurseryError, ValueError):
    """A message received from a kernel is malformed (missing delimiter, bad JSON...).

    Channels drop such messages with a warning in the log; this is raised by the low-level
    :meth:`~kernel_nursery.messaging.Session.deserialize`.
    """


class InvalidSignatureError(MessageError):
    """A received message's HMAC signature does not match its content, or replays an earlier
    message. It is never trusted: channels drop it and log a warning."""


class KernelTimeoutError(KernelNurseryError, TimeoutError):
    """The kernel did not answer within the time given (a request, or readiness)."""


class KernelDiedError(KernelNurseryError):
    """The kernel process exited while a request was waiting for its answer.

    Attributes:
        exit_status: The process's exit status as the provisioner reported it, if known.
    """

    def __init__(self, message: str, *, exit_status: int | None = None) -> None:
        self.exit_status = exit_status
        super().__init__(message)


class TransportEncryptionError(KernelNurseryError):
    """A kernel's channels cannot be encrypted as asked (CurveZMQ): this libzmq lacks CURVE,
    the kernel spec says the kernel does not support it, or the kernel answered a client's
    encrypted handshake in clear (it ignored the connection file's ``curve_*`` keys).

    .. versionadded:: 0.1
    """


class EncryptedHandshakeError(TransportEncryptionError, KernelTimeoutError):
    """The kernel did not answer in time over its encrypted (CurveZMQ) connection, and every
    encrypted handshake with it failed: most likely the connection info's ``curve_publickey``
    is not the key the kernel serves with (a stale or rewritten connection file). Also a
    :class:`KernelTimeoutError`, which is what it replaces.

    .. versionadded:: 0.1
    """


class ChannelClosedError(KernelNurseryError):
    """The client (or the channel) was closed while a request was waiting on it."""


class KernelReplyError(KernelNurseryError):
    """The kernel answered a request with an error reply (``status: "error"``), and the caller
    asked for errors to be raised (``raise_on_error=True``).

    Attributes:
        msg_type: The reply's message type (``"complete_reply"``...).
        ename: The exception's name in the kernel (may be empty).
        evalue: The exception's value in the kernel (may be empty).
        traceback: The kernel's traceback lines (may be empty).
    """

    def __init__(self, msg_type: str, ename: str, evalue: str, traceback: list[str]) -> None:
        self.msg_type, self.ename, self.evalue, self.traceback = msg_type, ename, evalue, traceback
        super().__init__(f"the kernel answered {msg_type} with an error: {ename}: {evalue:.200}")

    @classmethod
    def from_content(cls, msg_type: str, content: dict[str, object]) -> KernelReplyError:
        """The error for an error reply's *content*."""
        tb = content.get("traceback")
        return cls(
            msg_type,
            str(content.get("ename", "")),
            str(content.get("evalue", "")),
            [str(line) for line in tb] if isinstance(tb, list) else [],
        )


class SubscriptionOverflowError(KernelNurseryError):
    """A subscriber (to iopub, or to a comm) fell behind by more messages than its buffer
    holds; its subscription ended rather than block the client or lose messages silently.
    Open a new one, with a larger ``max_buffer`` or a faster consumer."""


class KernelStateError(KernelNurseryError, RuntimeError):
    """A kernel manager (or nursery) was asked for something its state does not allow:
    starting a kernel twice, using one outside its ``async with`` block, restarting a kernel
    that is not running."""


class InvalidKernelIdError(KernelNurseryError, ValueError):
    """A kernel id that cannot be used: it names the connection file and keys the kernel in a
    nursery, so it is 1 to 128 letters, digits, ``.``, ``_`` or ``-``, not starting with ``.``
    or ``-`` (a UUID, by default).

    Attributes:
        kernel_id: The id that was given.
    """

    def __init__(self, kernel_id: object) -> None:
        self.kernel_id = kernel_id
        super().__init__(
            f"invalid kernel id {kernel_id!r:.80}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )


class UnknownKernelIdError(KernelNurseryError, KeyError):
    """A kernel nursery has no running kernel with the given id (compare
    :class:`NoSuchKernelSpecError`: no kernel *specification* has the requested name).

    Attributes:
        kernel_id: The id asked for.

    ``UnknownKernelError``, its name before the first release, is a deprecated alias.
    """

    def __init__(self, kernel_id: str, known: list[str]) -> None:
        self.kernel_id = kernel_id
        super().__init__(f"no kernel with id {kernel_id!r} in this nursery ({len(known)} running)")

    def __str__(self) -> str:
        return str(self.args[0])
