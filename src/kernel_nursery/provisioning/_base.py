"""``KernelProvisionerBase``: the contract between a kernel manager and whatever runs a kernel."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
from abc import ABCMeta, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from string import Template
from types import TracebackType
from typing import Any, Self, cast

import anyio
from traitlets import Dict, Instance, Unicode
from traitlets.config import LoggingConfigurable
from traitlets.traitlets import MetaHasTraits

from .._errors import InvalidKernelIdError, ProvisionerHookError
from .._kernelspec import KernelSpec
from ..connection import ConnectionInfo, validate_connection_info
from ._command import pop_env
from ._hooks import FAILED, call_hook, hook_failed, is_status, kill_group, sync_hook

__all__ = [
    "DEFAULT_SHUTDOWN_WAIT_TIME",
    "DEFAULT_STABLE_START_TIME",
    "KILL_WAIT_TIME",
    "KernelProvisionerBase",
    "KernelProvisionerMeta",
    "LaunchProgress",
    "shutdown_kernel_process",
]

#: Seconds a kernel gets to exit after a polite request (or SIGTERM) before it is killed,
#: when neither the caller nor the owning manager says otherwise.
DEFAULT_SHUTDOWN_WAIT_TIME = 5.0
#: Seconds within which a (re)started kernel is expected to be up, by default.
DEFAULT_STABLE_START_TIME = 10.0
#: Seconds to wait for the exit of a process that was sent SIGKILL. SIGKILL cannot be caught, so
#: only a process stuck in the kernel (uninterruptible I/O) takes longer; the bound keeps a
#: shielded clean-up from hanging its caller forever in that case.
KILL_WAIT_TIME = 5.0
#: What a kernel id may be: it names the connection file (here, on remote hosts, on Slurm nodes)
#: and Slurm jobs (``scancel --name``), so no separator, no white space or comma, no leading dot
#: or dash.
_KERNEL_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_kernel_id(kernel_id: object) -> str:
    """*kernel_id* itself, if it can be used as a kernel id (see :data:`_KERNEL_ID`).

    Raises:
        InvalidKernelIdError: it cannot (a path separator, a comma, white space, a newline...).
    """
    if not isinstance(kernel_id, str) or not _KERNEL_ID.fullmatch(kernel_id):
        raise InvalidKernelIdError(kernel_id)
    return kernel_id


@dataclass(frozen=True, kw_only=True)
class LaunchProgress:
    """Where a kernel's launch stands, as its provisioner reports it while
    :meth:`~KernelProvisionerBase.launch_kernel` runs (see
    :meth:`~KernelProvisionerBase.report_progress`): submitted to a scheduler, waiting in its
    queue, running on a node. A kernel manager passes each one on as a ``progress``
    :class:`~kernel_nursery.KernelEvent`.

    .. versionadded:: 0.1
    """

    #: The provisioner's word for the stage reached, e.g. ``SUBMITTED``, ``PENDING``,
    #: ``RUNNING`` (those of :class:`~kernel_nursery.SlurmProvisioner`). Each provisioner
    #: documents its own.
    state: str
    #: The host (node) the kernel runs on, once known; otherwise ``None``.
    node: str | None = None
    #: One line for people, e.g. ``job 42 is pending in the queue``.
    detail: str | None = None


class KernelProvisionerMeta(ABCMeta, MetaHasTraits):
    """Metaclass of provisioners: abstract methods (:class:`abc.ABCMeta`) and traits
    (:class:`traitlets.MetaHasTraits`) on one class."""


class KernelProvisionerBase(LoggingConfigurable, metaclass=KernelProvisionerMeta):
    """Abstract base of kernel provisioners: what starts a kernel, watches it and stops it.

    A kernel manager drives a provisioner through a fixed sequence (the same as Jupyter's):
    :meth:`pre_launch` → :meth:`launch_kernel` → :meth:`post_launch`; then :meth:`poll`,
    :meth:`wait`, :meth:`send_signal` while the kernel runs; then :meth:`shutdown_requested`,
    :meth:`terminate` / :meth:`kill` and :meth:`cleanup` to stop it. Most methods mirror
    :class:`subprocess.Popen`, which is what managers used before provisioners existed.

    Subclasses implement the abstract methods; those that override :meth:`pre_launch`,
    :meth:`get_provisioner_info` or :meth:`load_provisioner_info` call the superclass first.

    A provisioner is also an async context manager. Leaving ``async with provisioner:`` (normally,
    by an exception or by cancellation) stops the kernel if it still runs, with
    :func:`shutdown_kernel_process`, and calls ``cleanup(restart=False)``, all shielded from
    cancellation and bounded (a hook that hangs is abandoned; one that fails is logged, and
    raised as :class:`~kernel_nursery.ProvisionerHookError` when the block raised nothing), so
    that no process, connection file or reserved port outlives the block. A provisioner used
    without ``async with`` must be stopped and cleaned up by its user (a kernel manager does it).

    Every ``async`` method here is safe to cancel in the sense that cancellation never leaves a
    process the provisioner has lost track of; each says what state remains.

    .. versionadded:: 0.1
    """

    #: The id of the kernel this provisioner runs (a UUID string, given by the manager).
    kernel_id = Unicode(None, allow_none=True, help="The kernel's id.")
    #: The kernel's specification.
    kernel_spec = Instance(KernelSpec, allow_none=True, help="The kernel's specification.")
    #: The connection info of the running kernel (empty until :meth:`launch_kernel`); each
    #: provisioner has its own dict.
    connection_info = Dict(help="The kernel's connection info; empty until launch.")
    #: Called with each :class:`LaunchProgress` the provisioner reports (see
    #: :meth:`report_progress`), from the task that reports it; ``None``: nobody listens. Set
    #: by the provisioner's owner (a kernel manager turns them into ``progress`` events). It
    #: must be a plain function that does not block or raise (an exception is logged and
    #: dropped; an async function's coroutine is logged as an error and closed unrun).
    #:
    #: .. versionadded:: 0.1
    progress_callback: Callable[[LaunchProgress], None] | None = None
    #: Why the kernel's last process ended, in a few words for people, when the provisioner
    #: knows more than its exit status (a resource limit it enforced, a scheduler's word);
    #: ``None`` otherwise. Set by the provisioner once it has seen the exit (by the time
    #: :meth:`wait` returns it), kept until the next launch. A kernel manager passes it on in
    #: the ``dead`` and ``restarting`` events (:attr:`KernelEvent.reason
    #: <kernel_nursery.KernelEvent.reason>`).
    #:
    #: .. versionadded:: 0.1
    end_reason: str | None = None
    #: When a resource limit ended the kernel: the limit's name (``memory``, ``cpu_time``...,
    #: the names of the limits' vocabulary shared by the confining provisioners); otherwise
    #: ``None``. Set and kept as :attr:`end_reason`.
    #:
    #: .. versionadded:: 0.1
    end_limit: str | None = None

    # ------------------------------------------------------------------ abstract interface

    @property
    @abstractmethod
    def has_process(self) -> bool:
        """Whether this provisioner manages a process (running, or exited but not yet cleaned
        up). True right after :meth:`launch_kernel` returns."""

    @abstractmethod
    async def poll(self) -> int | None:
        """``None`` while the kernel runs; its exit status once it has exited.

        Answers at once: it never waits for the kernel.
        """

    @abstractmethod
    async def wait(self) -> int | None:
        """Wait until the kernel process has exited and return its exit status.

        Any number of tasks may wait at once; all return when the process exits. Cancelling a
        waiter affects only that waiter.
        """

    @abstractmethod
    async def send_signal(self, signum: int) -> None:
        """Send signal *signum* to the kernel (its process group, where the platform has them).

        Signalling a kernel that has already exited is not an error.
        """

    @abstractmethod
    async def kill(self, restart: bool = False) -> None:
        """Kill the kernel at once (SIGKILL where it exists). *restart* is true when a new
        :meth:`launch_kernel` follows, so resources to keep for it must be kept."""

    @abstractmethod
    async def terminate(self, restart: bool = False) -> None:
        """Ask the kernel process to end (SIGTERM where it exists), which it may catch to clean up.
        *restart* is true when a new :meth:`launch_kernel` follows."""

    @abstractmethod
    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Start the kernel with the command *cmd* and return its connection info.

        *kwargs* are what :meth:`pre_launch` returned, less ``cmd``.
        """

    @abstractmethod
    async def cleanup(self, restart: bool = False) -> None:
        """Release what was allocated for the kernel. Called last in every shutdown sequence.

        With *restart* true a new launch follows and what it reuses (ports, connection file,
        key) is kept.
        """

    # ------------------------------------------------------------------ progress

    def report_progress(
        self, state: str, *, node: str | None = None, detail: str | None = None
    ) -> None:
        """Tell the owner where a launch stands (queued, running on a node...), through
        :attr:`progress_callback`. For provisioners whose launch has stages worth seeing (a
        scheduler's queue, a remote host); they call it from :meth:`launch_kernel`. Never
        blocks; does nothing when nobody listens; a callback that raises is logged, and the
        launch goes on.

        .. versionadded:: 0.1
        """
        callback = self.progress_callback
        if callback is None:
            return
        try:
            result: object = callback(LaunchProgress(state=state, node=node, detail=detail))
        except Exception:
            self.log.exception("Kernel %s: the progress callback failed", self.kernel_id)
            return
        if inspect.isawaitable(result):
            # An async function: nothing here awaits it (reports come from the middle of a
            # launch, which must not wait for a listener). Said, and closed unrun.
            close = getattr(result, "close", None)
            if callable(close):
                close()
            self.log.error(
                "Kernel %s: the progress callback returned an awaitable, which is never "
                "awaited: it must be a plain (not async) function",
                self.kernel_id,
            )

    # ------------------------------------------------------------------ hooks with defaults

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Called when the kernel has been asked to shut down, before the manager waits for it.

        Does nothing by default; a provisioner that must prepare for the shutdown (notify a
        scheduler, say) overrides it.
        """

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Prepare the launch and return the keyword arguments for :meth:`launch_kernel`.

        The base implementation builds the kernel's environment: a copy of ``kwargs["env"]`` (or
        of :data:`os.environ`), updated with the kernel spec's ``env`` whose values have
        ``${NAME}`` replaced from that environment (names not found stay as written), and passed
        through :meth:`_finalize_env`. The caller's mapping is never modified.

        Subclasses call it, typically last, and add ``cmd`` (the kernel's command) to the result.

        Raises:
            LaunchError: ``env`` is not a mapping. (Its names and values are checked by
                :meth:`launch_kernel`.)
        """
        result = dict(kwargs)
        base_env = pop_env(result)
        env = dict(os.environ if base_env is None else base_env)
        if self.kernel_spec is not None:
            env.update(
                {
                    name: Template(value).safe_substitute(env)
                    for name, value in self.kernel_spec.env.items()
                }
            )
        self._finalize_env(env)
        result["env"] = env
        return result

    async def post_launch(self, **kwargs: Any) -> None:
        """Called after :meth:`launch_kernel` returns, with the same keyword arguments. Does
        nothing by default."""

    async def get_provisioner_info(self) -> dict[str, Any]:
        """What another process needs to take this kernel over (see :meth:`load_provisioner_info`).

        Plain JSON data. Subclasses call this first, then add their own entries.
        """
        return {"kernel_id": self.kernel_id, "connection_info": dict(self.connection_info)}

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`get_provisioner_info`, possibly in another process.

        Subclasses call this first, then read their own entries.

        Raises:
            InvalidKernelIdError: the saved kernel id is not one (see :func:`check_kernel_id`):
                it names files and jobs once the kernel is restarted or cleaned up.
            ConnectionFileError: the saved connection info is incomplete or ill-typed.
        """
        kernel_id = provisioner_info.get("kernel_id")
        self.kernel_id = None if kernel_id is None else check_kernel_id(kernel_id)
        info = provisioner_info.get("connection_info") or {}
        self.connection_info = dict(validate_connection_info(info)) if info else {}

    def get_shutdown_wait_time(self, recommended: float | None = None) -> float:
        """Seconds a kernel gets between a shutdown request (or SIGTERM) and being killed.

        *recommended* when given; otherwise the owning manager's ``shutdown_wait_time`` when the
        provisioner has a parent that sets one; otherwise :data:`DEFAULT_SHUTDOWN_WAIT_TIME`.
        Provisioners whose kernels stop slowly (remote ones) override it.
        """
        return self._from_parent("shutdown_wait_time", recommended, DEFAULT_SHUTDOWN_WAIT_TIME)

    def get_stable_start_time(self, recommended: float | None = None) -> float:
        """Seconds within which a (re)started kernel is expected to be up; a kernel that dies
        sooner counts as a failed start. Chosen like :meth:`get_shutdown_wait_time`, from the
        parent's ``stable_start_time``, default :data:`DEFAULT_STABLE_START_TIME`."""
        return self._from_parent("stable_start_time", recommended, DEFAULT_STABLE_START_TIME)

    def _from_parent(self, name: str, recommended: float | None, default: float) -> float:
        if recommended is not None:
            return float(recommended)
        value = getattr(self.parent, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return default

    def _finalize_env(self, env: dict[str, str]) -> None:
        """Last adjustments to the kernel's environment, in place. The default removes
        ``PYTHONEXECUTABLE`` for Python kernels, which would otherwise make the kernel's
        ``sys.executable`` point at the launching interpreter (as on macOS framework builds)."""
        if self.kernel_spec is not None and self.kernel_spec.language.lower().startswith("python"):
            env.pop("PYTHONEXECUTABLE", None)

    # ------------------------------------------------------------------ async with

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        errors: list[ProvisionerHookError] = []
        await shutdown_kernel_process(self, errors=errors)
        # Shielded, and bounded: a cleanup that hangs is abandoned (and logged).
        with anyio.CancelScope(shield=True):
            await call_hook(self, "cleanup", 2 * KILL_WAIT_TIME, restart=False, errors=errors)
        if errors and exc is None:
            raise errors[0]  # each was logged; the first is the block's error


async def shutdown_kernel_process(
    provisioner: KernelProvisionerBase,
    *,
    restart: bool = False,
    wait_time: float | None = None,
    shutdown_requested: bool = False,
    now: bool = False,
    kill_wait: float = KILL_WAIT_TIME,
    errors: list[ProvisionerHookError] | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> int | None:
    """Stop the kernel process that *provisioner* runs, for sure: (wait,) terminate, wait, kill,
    wait. The provisioner itself is left to ``cleanup()`` (or to a new launch, with *restart*).

    The one escalation used by every path that stops a kernel. When *shutdown_requested* (the
    kernel was asked to exit, by a ``shutdown_request``), first up to *wait_time* for it to exit
    by itself; then ``terminate(restart)`` and up to *wait_time* (default:
    ``provisioner.get_shutdown_wait_time()``); then ``kill(restart)`` and up to *kill_wait*.
    With *now*, straight to the kill. Each step's hook and its wait share the step's time;
    nothing polls. A kernel that has already exited is not signalled at all.

    Every hook call is bounded (``call_hook``): one that hangs is abandoned at its step's end,
    one that raises or answers garbage is logged (on *log*) and noted in *errors*, and the
    escalation goes on. When the kill did not end the kernel and the provisioner exposes a
    local process group (``pgid``), that group is killed here. At most ``2 * wait_time + 4 *
    kill_wait`` in all. Shielded from cancellation: a caller cancelled meanwhile sees the
    cancellation after the kernel is gone, never a half-stopped kernel.

    Returns:
        The exit status, or ``None`` when it is not known: the process had not exited after
        SIGKILL and *kill_wait* (logged as an error; it can only be stuck in the OS kernel), or
        the provisioner's hooks failed to say.

    ``stop_process``, its name before the first release (it takes a provisioner, not a
    process), is a deprecated alias in :mod:`kernel_nursery.provisioning`.
    """
    hook = functools.partial(call_hook, provisioner, errors=errors, log=log)
    if not provisioner.has_process:
        status = await hook("poll", kill_wait, check=is_status)
        return None if status is FAILED else cast("int | None", status)
    # Shielded, and bounded: every await below is a hook or a wait with a deadline.
    with anyio.CancelScope(shield=True):
        status = await hook("poll", kill_wait, check=is_status)
        if status is not None and status is not FAILED:
            return cast(int, status)
        if wait_time is None:
            wait_time = sync_hook(
                provisioner, "get_shutdown_wait_time", DEFAULT_SHUTDOWN_WAIT_TIME, log=log
            )
        steps = _steps(wait_time, kill_wait, now=now, shutdown_requested=shutdown_requested)
        for send, name, seconds, level in steps:
            status = await _escalate(provisioner, send, restart, seconds, hook)
            if status is not FAILED:
                return cast("int | None", status)
            message = "Kernel %s did not exit %.3g s after %s"
            (log or provisioner.log).log(level, message, provisioner.kernel_id, seconds, name)
        status = await _after_kill(provisioner, kill_wait, hook, errors=errors, log=log)
    return cast("int | None", status)


def _steps(
    wait_time: float, kill_wait: float, *, now: bool, shutdown_requested: bool
) -> list[tuple[str | None, str, float, int]]:
    """The steps of :func:`shutdown_kernel_process`: (hook, what it sends, seconds, log level
    if it fails)."""
    steps: list[tuple[str | None, str, float, int]] = [
        ("terminate", "SIGTERM", wait_time, logging.WARNING),
        ("kill", "SIGKILL", kill_wait, logging.ERROR),
    ]
    if now:
        del steps[0]
    elif shutdown_requested:
        steps.insert(0, (None, "the shutdown request", wait_time, logging.WARNING))
    return steps


async def _after_kill(
    provisioner: KernelProvisionerBase,
    kill_wait: float,
    hook: Callable[..., Awaitable[Any]],
    *,
    errors: list[ProvisionerHookError] | None,
    log: logging.Logger | logging.LoggerAdapter[Any] | None,
) -> int | None:
    """No exit seen after the kill: the status if ``poll()`` knows it (then ``wait()`` hung,
    logged as such), else the process group killed here where it can be reached; ``None``."""
    status = await hook("poll", kill_wait, check=is_status)
    if status is not None and status is not FAILED:
        what = "did not return after the kernel exited"
        hook_failed(provisioner, "wait", what, log=log or provisioner.log, errors=errors)
        return cast(int, status)
    await kill_group(provisioner, kill_wait)
    return None


async def _escalate(
    provisioner: KernelProvisionerBase,
    send: str | None,
    restart: bool,
    seconds: float,
    hook: Callable[..., Awaitable[Any]],
) -> Any:
    """One step of :func:`shutdown_kernel_process`: the hook *send* (if any), then the
    kernel's exit, both within *seconds*. The exit status, or :data:`FAILED` when it did not
    come (or ``wait()`` failed, which is logged)."""
    deadline = anyio.current_time() + seconds
    if send is not None:
        await hook(send, seconds, restart)
    left = max(deadline - anyio.current_time(), 0.0)
    return await hook("wait", left, check=is_status, quiet_timeout=True)
