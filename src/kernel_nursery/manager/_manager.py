"""``KernelManager``: one kernel's whole life, inside a scope."""

from __future__ import annotations

import errno
import functools
import logging
import math
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Self, cast

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from traitlets import Bool, Enum, Float, Instance, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .._errors import (
    KernelDiedError,
    KernelNurseryError,
    KernelStateError,
    KernelTimeoutError,
    ProvisionerHookError,
)
from .._limits import at_open_file_limit, claim_descriptors, limit_error
from .._taskgroup import OwnedTaskGroup
from ..connection import PORT_NAMES, ConnectionInfo, validate_connection_info
from ..connection._ports import ports_in_use, unhold_ports
from ..kernelspec import KernelSpec, KernelSpecManager
from ..messaging import KernelClient
from ..messaging._client import WaitForExit
from ..messaging._curve import wait_for_ready_encrypted
from ..provisioning import (
    KILL_WAIT_TIME,
    KernelProvisionerBase,
    KernelProvisionerFactory,
    LaunchProgress,
    shutdown_kernel_process,
)
from ..provisioning._base import check_kernel_id
from ..provisioning._hooks import FAILED, call_hook, is_status, kill_group, sync_hook
from ..wire import is_encrypted
from ._activity import Activity, TrackedClient
from ._events import EventHub, EventKind, KernelEvent

__all__ = ["KernelManager", "start_kernel"]


#: Descriptors a running kernel keeps in this process: its manager's client (two per zmq
#: socket: control, with heartbeat supervision hb too) and its process; more while a start's
#: client is whole (counted in the start's peak).
_KEPT_DESCRIPTORS = 6


class _PortsTaken(KernelDiedError):
    """A kernel died before it was ready because another program holds one of its ports."""


def _ports_of(info: ConnectionInfo) -> list[int]:
    return [info[name] for name in PORT_NAMES]


#: Why a kernel's process ended, as its provisioner says: (reason, limit), each maybe ``None``.
_Why = tuple[str | None, str | None]


def _why(provisioner: KernelProvisionerBase | None) -> _Why:
    """What *provisioner* knows of its kernel's end beyond the exit status: plain attributes,
    nothing awaited, so nothing to bound; a plug-in's property that raises, or a value that
    is not text, counts as not knowing."""
    found: list[str | None] = []
    for name in ("end_reason", "end_limit"):
        try:
            value = getattr(provisioner, name, None)
        except Exception:
            value = None
        found.append(value if isinstance(value, str) else None)
    return found[0], found[1]


class _Incarnation:
    """One launched kernel process: what the clients the manager hands out follow."""

    def __init__(self, number: int, provisioner: KernelProvisionerBase) -> None:
        self.number = number
        self.info = validate_connection_info(provisioner.connection_info)
        self.exited = anyio.Event()
        self.status: int | None = None
        self.ready = anyio.Event()  # it answered: heartbeat supervision may begin

    def exit(self, status: int | None) -> None:
        if not self.exited.is_set():
            self.status = status
            self.exited.set()

    async def wait(self) -> int | None:
        await self.exited.wait()
        return self.status


class KernelManager(LoggingConfigurable):
    """Starts, watches, restarts and stops one kernel, whose life is bound to a scope.

    .. code-block:: python

        async with KernelManager(kernel_name="python3") as km:
            await km.start_kernel()
            async with km.client() as kc:
                print((await kc.execute("1 + 1")).results)
        # the kernel has been shut down here, politely if it could be

    Inside ``async with`` everything that runs for the kernel in the background (the
    supervisor that awaits its exit to restart it, the manager's own client on the control
    channel) is a task of the manager's task group. Leaving the block, normally, by an
    exception or by cancellation, shuts the kernel down (a ``shutdown_request``, then SIGTERM,
    then SIGKILL, each after :attr:`shutdown_wait_time`), shielded, and ends those tasks: no
    process, connection file or port remains, and the exception raised in the block is the one
    that propagates.

    The provisioner hooks are called in Jupyter's order: ``pre_launch``, ``launch_kernel``,
    ``post_launch`` to start; ``shutdown_requested``, ``terminate``/``kill`` (with the
    ``restart`` flag, on every path) and ``cleanup(restart)`` to stop.

    .. versionadded:: 0.1
    """

    kernel_name = Unicode("python3", config=True, help="The kernel spec to start.")
    shutdown_wait_time = Float(
        5.0,
        config=True,
        help="Seconds a kernel gets to exit after a shutdown request, and again after SIGTERM, "
        "before it is killed.",
    )
    kill_wait_time = Float(
        KILL_WAIT_TIME,
        min=0.0,
        config=True,
        help="Seconds a kernel gets to exit after SIGKILL, and the budget of each call into the "
        "provisioner that should answer at once (poll, terminate, kill, send_signal...) while "
        "it is stopped; a call that takes longer is abandoned and logged as an error.",
    )
    stable_start_time = Float(
        10.0,
        config=True,
        help="A kernel that dies sooner than this after its start counts against restart_limit.",
    )
    restart_limit = Integer(
        5,
        config=True,
        help="How many times in a row a kernel that keeps dying soon after its start is "
        "restarted before it is reported dead.",
    )
    autorestart = Bool(
        True, config=True, help="Restart the kernel when it dies without being asked to."
    )
    ready_timeout = Float(
        60.0,
        config=True,
        help="Seconds start_kernel and restart_kernel wait for the kernel to answer.",
    )
    port_conflict_retries = Integer(
        3,
        config=True,
        help="How many times a start (or restart) is tried again on new ports when its kernel "
        "exited before it was ready because another program took one of its ports in the "
        "moment between their choice and the kernel's bind. 0 turns retrying off.",
    )
    transport = Enum(
        ["tcp", "ipc"],
        default_value="tcp",
        config=True,
        help="Transport for the kernel's sockets, passed to provisioners that have the trait.",
    )
    ip = Unicode(
        "",
        config=True,
        help="Address (tcp) or path prefix (ipc) for the kernel's sockets, passed to "
        "provisioners that have the trait; empty means the provisioner's default.",
    )
    transport_encryption = Enum(
        ["", "auto", "required", "disabled"],
        default_value="",
        config=True,
        help="CurveZMQ encryption of the kernel's channels, passed to provisioners that have "
        "the trait (see LocalProvisioner.transport_encryption); empty means the provisioner's "
        "default ('auto': kernels whose spec declares curve, and tcp kernels listening beyond "
        "loopback).",
    )
    heartbeat_interval = Float(
        0.0,
        min=0.0,
        config=True,
        help="Seconds between heartbeats sent to a running kernel, each of which it has as "
        "long to echo; 0 (the default) turns heartbeat supervision off, with no wake-ups.",
    )
    heartbeat_misses = Integer(
        3,
        min=1,
        config=True,
        help="How many heartbeats in a row a kernel may miss before it is reported "
        "unresponsive (an 'unresponsive' event), when heartbeat_interval is set.",
    )
    heartbeat_restart = Bool(
        False,
        config=True,
        help="Restart (now=True) a kernel reported unresponsive by heartbeat supervision.",
    )
    kernel_id = Unicode(help="The kernel's id; a new UUID when not given.")

    @default("kernel_id")
    def _kernel_id_default(self) -> str:
        return str(uuid.uuid4())

    kernel_spec_manager = Instance(
        KernelSpecManager,
        help="Where kernel specs are looked up. Default: a KernelSpecManager child of this "
        "manager (so configuration given to the manager reaches it), asking this manager's "
        "provisioner_factory.",
    )
    provisioner_factory = Instance(
        KernelProvisionerFactory,
        help="Where the kernel's provisioner comes from. Default: the factory of the "
        "kernel_spec_manager given to this manager (so the two agree on which kernels can "
        "start); otherwise KernelProvisionerFactory.for_parent(this manager).",
    )

    @default("provisioner_factory")
    def _provisioner_factory_default(self) -> KernelProvisionerFactory:
        # The spec manager given to this manager decides which kernels exist: the same factory
        # must create them. Otherwise configuration given to this manager (or its parents)
        # for the factory reaches it (a factory of its own), or it shares the process's.
        if self.trait_has_value("kernel_spec_manager"):
            return self.kernel_spec_manager.provisioner_factory
        return KernelProvisionerFactory.for_parent(self)

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(parent=self, provisioner_factory=self.provisioner_factory)

    def __init__(self, *, kernel_spec: KernelSpec | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_kernel_id(self.kernel_id)
        self._kernel_spec = kernel_spec
        self.provisioner: KernelProvisionerBase | None = None
        self._launch_kwargs: dict[str, Any] = {}
        self._group = OwnedTaskGroup()
        self._tg: anyio.abc.TaskGroup | None = None
        self._lock = anyio.Lock()
        self._events = EventHub()
        # One incarnation (a launched process) at a time; the generation tells a supervisor
        # whether the process it watched is still the current one.
        self._generation = 0
        self._started_at = 0.0
        self._rapid_deaths = 0
        self._client: KernelClient | None = None
        self._client_scope: anyio.CancelScope | None = None
        self._supervisor_scope: anyio.CancelScope | None = None
        self._dead = False
        # The start (or restart) waiting for its kernel now, which a shutdown cancels, and how
        # many shutdowns are waiting for the lock: a start begun meanwhile is cancelled at once.
        self._start_scope: anyio.CancelScope | None = None
        self._stopping = 0
        self._closed = False
        self._close_error: Exception | None = None
        # What the provisioner's hooks did wrong while the manager drove them (each logged):
        # the next shutdown_kernel raises the first, once the kernel is stopped.
        self._hook_errors: list[ProvisionerHookError] = []
        self._in_hook: str | None = None  # the start hook running now, for the log
        # The current (or last) incarnation, and an event set (then replaced) at each change
        # of it or of whether one will follow: what km.client()'s clients await to follow.
        self._incarnation: _Incarnation | None = None
        self._changed = anyio.Event()
        # How many times the kernel ended for good (shut down, dead, failed to start): a client
        # follows restarts only within the life it was made in, never into a later start.
        self._ends = 0
        self._gone = True  # no kernel now, and none will come unless start_kernel is called
        self._activity = Activity()  # what culling judges by

    # ------------------------------------------------------------------ state

    @property
    def kernel_spec(self) -> KernelSpec | None:
        """The kernel's spec: the one given to the manager, or the one looked up by
        :attr:`kernel_name` (by :meth:`get_kernel_spec` or the first start); ``None`` before.
        Never reads the disk.
        """
        return self._kernel_spec

    async def get_kernel_spec(self) -> KernelSpec:
        """The kernel's spec, looked up by :attr:`kernel_name` unless one was given or was
        looked up before (then it is returned at once).

        The lookup reads directories and files, so it runs in a worker thread. Cancelled, it
        abandons that thread, which finishes its reads and creates nothing; the manager is left
        as it was.

        Raises:
            NoSuchKernelSpecError, KernelSpecError: as :meth:`KernelSpecManager.get_kernel_spec`.

        .. versionadded:: 0.1
        """
        if self._kernel_spec is None:
            spec = await anyio.to_thread.run_sync(
                self.kernel_spec_manager.get_kernel_spec, self.kernel_name, abandon_on_cancel=True
            )
            if self._kernel_spec is None:  # another task may have looked it up meanwhile
                self._kernel_spec = spec
        return self._kernel_spec

    @property
    def connection_info(self) -> ConnectionInfo:
        """The running kernel's connection info.

        Raises:
            KernelStateError: no kernel has been started.
        """
        if self.provisioner is None or not self.provisioner.connection_info:
            raise KernelStateError("no kernel is running in this manager")
        return validate_connection_info(self.provisioner.connection_info)

    @property
    def connection_file(self) -> str | None:
        """The path of the running kernel's connection file, or ``None`` when there is none
        (no kernel, or a provisioner that writes no file here).

        .. versionadded:: 0.1
        """
        if self.provisioner is None or not self.provisioner.connection_info:
            return None
        path = getattr(self.provisioner, "connection_file", None)
        return path if isinstance(path, str) and path else None

    @property
    def pid(self) -> int | None:
        """The process id of the running kernel, when its provisioner runs it as a local
        process (:class:`~kernel_nursery.LocalProvisioner` does); otherwise ``None``.

        .. versionadded:: 0.1
        """
        if self.provisioner is None or not self.provisioner.has_process:
            return None
        pid = getattr(self.provisioner, "pid", None)
        return pid if isinstance(pid, int) else None

    @property
    def has_kernel(self) -> bool:
        """Whether a kernel process is managed now (running, or exited and not cleaned up)."""
        return self.provisioner is not None and self.provisioner.has_process

    @property
    def dead(self) -> bool:
        """Whether the kernel died and was not (or could no more) be restarted. A ``dead``
        event says so too, with the exit status."""
        return self._dead

    @property
    def last_activity(self) -> float:
        """When the kernel last showed activity, on the event loop's clock
        (:func:`anyio.current_time`): its start, a message it sent (a busy/idle status, an
        output, a reply) or a request from a client made by this manager.

        .. versionadded:: 0.1
        """
        return self._activity.last

    @property
    def execution_state(self) -> str:
        """The kernel's last published status: ``busy``, ``idle``, ``starting``, or
        ``unknown`` before it published one.

        .. versionadded:: 0.1
        """
        return self._activity.state

    @property
    def connections(self) -> int:
        """How many clients made by :meth:`client` are open now.

        .. versionadded:: 0.1
        """
        return self._activity.connections

    async def is_alive(self) -> bool:
        """Whether the kernel process is running. Answers at once (the provisioner's ``poll``
        gets :attr:`kill_wait_time`).

        Raises:
            ProvisionerHookError: the provisioner's ``poll`` raised, answered something else
                than an exit status, or did not answer in time (logged).
        """
        provisioner = self.provisioner
        if provisioner is None or not provisioner.has_process:
            return False
        since = len(self._hook_errors)
        status = await self._hook(provisioner, "poll", self.kill_wait_time, check=is_status)
        if status is FAILED:
            self._raise_hook_errors(since)
        return status is None

    # ------------------------------------------------------------------ scope

    async def __aenter__(self) -> Self:
        if self._group.is_open:
            raise KernelStateError("this KernelManager is already open")
        if self._closed:
            raise KernelStateError("this KernelManager has been closed; make a new one")
        self._tg = await self._group.open(self._close)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Twin of manager/_nursery.py KernelNursery.__aexit__: each owns its group and its
        # close error; a shared base for three lines would hide more than it saves.
        await self._group.close()
        error, self._close_error = self._close_error, None
        if error is not None and exc is None:
            raise error  # the shutdown's own failure, when the block had none of its own

    async def _close(self) -> None:
        # Shielded, and bounded: the lock wait by stop_bound() (whoever holds the lock is
        # bounded so once the start in flight is cancelled, which shutdown_kernel does first),
        # then the stop itself by stop_bound().
        try:
            with anyio.CancelScope(shield=True):  # bounded: see above
                await self.shutdown_kernel()
        except Exception as exc:
            # Raised from __aexit__ (unwrapped) unless the block raised; logged either way.
            self.log.error("Kernel %s: shutting down failed: %r", self.kernel_id, exc)
            self._close_error = exc
        finally:
            self._closed = True
            self._announce()
            self._events.close()
            self._tg = None

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise KernelStateError(
                "use the KernelManager as 'async with KernelManager(...) as km:' first"
            )
        return self._tg

    # ------------------------------------------------------------------ events

    def events(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[KernelEvent]]:
        """Subscribe to lifecycle events: an async context manager giving a stream of
        :class:`KernelEvent` (``async for event in stream``), which ends when the manager
        closes (at once, for a subscription made after it closed). Each subscriber gets every
        event emitted after it subscribed.

        .. code-block:: python

            async with km.events() as events:
                async for event in events:
                    print(event.kind, event.exit_status)
        """
        return self._events.subscribe()

    def _emit(
        self, kind: EventKind, exit_status: int | None = None, *, why: _Why = (None, None)
    ) -> None:
        self.log.debug("Kernel %s: %s (status %s)", self.kernel_id, kind, exit_status)
        reason, limit = why
        self._events.emit(
            KernelEvent(
                kind=kind,
                kernel_id=self.kernel_id,
                exit_status=exit_status,
                reason=reason,
                limit=limit,
            )
        )

    def _on_progress(self, provisioner: KernelProvisionerBase, progress: LaunchProgress) -> None:
        """A provisioner's launch progress, passed on as a ``progress`` event; dropped when it
        comes late from a provisioner the manager has let go (cleaned up for good)."""
        if provisioner is not self.provisioner:
            self.log.debug("Kernel %s: late progress dropped: %s", self.kernel_id, progress)
            return
        self.log.debug("Kernel %s: %s (%s)", self.kernel_id, progress.state, progress.detail)
        self._events.emit(
            KernelEvent(
                kind="progress",
                kernel_id=self.kernel_id,
                state=progress.state,
                node=progress.node,
                detail=progress.detail,
            )
        )

    def _announce(self) -> None:
        """Wake whoever waits for the next incarnation (see :meth:`_successor`)."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def _end(self) -> None:
        """The kernel ended for good (until a new start_kernel): clients stop following."""
        self._ends += 1
        self._gone = True
        self._announce()

    async def _successor(self, number: int, ends: int) -> tuple[ConnectionInfo, WaitForExit] | None:
        """Wait for an incarnation after incarnation *number* in the same life (*ends*): its
        connection info and exit; ``None`` when none will come (shut down, dead, failed to
        start, or the manager closed)."""
        while True:
            if self._closed or self._ends != ends:
                return None
            current = self._incarnation
            if current is not None and current.number > number:
                return current.info, current.wait
            if self._dead or self._gone:
                return None
            await self._changed.wait()

    # ------------------------------------------------------------------ starting

    async def start_kernel(self, **kwargs: Any) -> None:
        """Start the kernel and wait until it answers (:attr:`ready_timeout`).

        *kwargs* are passed to the provisioner's ``pre_launch`` (``env``, ``cwd``,
        ``extra_arguments``...) and kept for restarts. After ``shutdown_kernel(restart=True)``
        the kernel starts again on the ports, key and connection file that were kept; after
        the kernel was reported dead, on new ones.

        If it fails, or is cancelled, nothing is left: no process, file or port. A
        :meth:`shutdown_kernel` (or the end of the manager's block) while it waits for the
        kernel cancels it.

        Raises:
            KernelStateError: not inside ``async with``, a kernel is already running, or the
                kernel was shut down before it was ready.
            NoSuchKernelSpecError, KernelSpecError: the kernel spec cannot be had.
            ModuleNotFoundError, ProvisionerError: its provisioner cannot be had.
            LaunchError: the kernel program cannot be run.
            KernelDiedError: the kernel exited before it answered (with its exit status).
            KernelTimeoutError: it did not answer within :attr:`ready_timeout`.
        """
        self._task_group()
        async with self._lock:
            if self.provisioner is not None and self.provisioner.has_process:
                raise KernelStateError(f"kernel {self.kernel_id} has already been started")
            if self._dead:
                self.provisioner = None  # cleaned up for good: the kernel gets a new one
            self._launch_kwargs = dict(kwargs)
            self._rapid_deaths = 0
            self._dead = False
            self._emit("starting")
            self._gone = False
            try:
                await self._start_guarded("starting")
            except BaseException as exc:
                self._start_failed(exc)
                raise
            self._emit("started")

    def _start_failed(self, exc: BaseException) -> None:
        """A start or restart failed, or was cancelled, and left nothing: say how it ended.

        A shutdown that cancelled it has said so already (``shutdown``); a cancelled caller
        gets ``shutdown`` too; any other failure is ``dead``, with the exit status if the
        kernel exited.
        """
        self._end()
        if isinstance(exc, KernelStateError):
            return
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            self._emit("shutdown")
        else:
            status = exc.exit_status if isinstance(exc, KernelDiedError) else None
            self._emit("dead", status, why=_why(self.provisioner))

    async def _new_provisioner(self) -> KernelProvisionerBase:
        """The provisioner the kernel spec asks for, from the factory, given the manager's
        transport and ip where it has those traits and the spec's own config does not set them.
        """
        spec = await self.get_kernel_spec()
        provisioner = self.provisioner_factory.create_provisioner_instance(
            self.kernel_id, spec, parent=self
        )
        provisioner.progress_callback = functools.partial(self._on_progress, provisioner)
        stanza = spec.kernel_provisioner
        from_spec = set(stanza["config"]) if stanza else set()
        for name in ("transport", "ip", "transport_encryption"):
            value = getattr(self, name)
            if value and provisioner.has_trait(name) and name not in from_spec:
                provisioner.set_trait(name, value)
        return provisioner

    async def _start_guarded(self, doing: str) -> None:
        """:meth:`_start_incarnation` in a scope that :meth:`shutdown_kernel` cancels, tried
        again on new ports (:attr:`port_conflict_retries`) when another program took one of
        the kernel's ports before it could bind it. Must hold the lock.

        Raises:
            KernelStateError: a shutdown cancelled it; nothing of the kernel is left.
        """
        with anyio.CancelScope() as scope:
            self._start_scope = scope
            if self._stopping:
                scope.cancel()
            try:
                for attempt in range(self.port_conflict_retries + 1):
                    if self.provisioner is None:
                        self.provisioner = await self._new_provisioner()  # new ports, new file
                    try:
                        await self._start_incarnation()
                        break
                    except _PortsTaken as exc:
                        if attempt == self.port_conflict_retries:
                            raise KernelDiedError(str(exc), exit_status=exc.exit_status) from None
                        self.log.warning(
                            "%s; trying again on new ports (%d of %d)",
                            exc,
                            attempt + 1,
                            self.port_conflict_retries,
                        )
            finally:
                self._start_scope = None
        if scope.cancelled_caught:
            raise KernelStateError(f"kernel {self.kernel_id} was shut down while it was {doing}")

    async def _start_incarnation(self) -> None:
        """Launch, attach the client and the supervisor, and wait for readiness; on any
        failure or cancellation, take it all down again (shielded), drop the provisioner (it
        has been cleaned up for good) and re-raise.

        Raises:
            _PortsTaken: the kernel exited before it was ready, and a socket of another
                program now holds one of its ports (it could not bind it).
        """
        what = f"cannot start kernel {self._display_name()!r}"
        release: Callable[[], None] | None = None
        try:
            release = await claim_descriptors(what, keep=_KEPT_DESCRIPTORS)
            await self._launch()
            await self._wait_until_ready()
            self._settle()
        except BaseException as exc:
            await self._undo_start(exc, what)
            raise
        finally:
            if release is not None:
                release()

    async def _wait_until_ready(self) -> None:
        """Wait (:attr:`ready_timeout`) until the new kernel answers; say why it did not.

        Raises:
            _PortsTaken, KernelDiedError, KernelTimeoutError: as :meth:`start_kernel`.
        """
        provisioner, client = self.provisioner, self._client
        assert provisioner is not None
        assert client is not None
        try:
            await wait_for_ready_encrypted(client, timeout=self.ready_timeout)
        except KernelDiedError as exc:
            message = (
                f"kernel {self._display_name()!r} exited with status {exc.exit_status} "
                "before it was ready"
            )
            info = validate_connection_info(provisioner.connection_info)
            taken = ports_in_use(transport=info["transport"], ip=info["ip"], ports=_ports_of(info))
            if taken:
                ports = ", ".join(map(str, taken))
                raise _PortsTaken(
                    f"{message}: another program took its port {ports}",
                    exit_status=exc.exit_status,
                ) from None
            raise KernelDiedError(message, exit_status=exc.exit_status) from None
        except KernelTimeoutError:
            hint = ""
            if is_encrypted(client.connection_info):
                hint = "; its channels are encrypted (CurveZMQ): a kernel that cannot be "
                hint += "reached encrypted never answers"
            raise KernelTimeoutError(
                f"kernel {self._display_name()!r} did not answer within "
                f"{self.ready_timeout:g} s (KernelManager.ready_timeout){hint}"
            ) from None

    def _settle(self) -> None:
        """The kernel answered: lighten the manager's own client, release the held ports."""
        provisioner, client = self.provisioner, self._client
        assert provisioner is not None
        assert client is not None
        if self._incarnation is not None:
            self._incarnation.ready.set()
        # The manager's own client needs iopub no more (readiness is known, and it only
        # asks on control): dropping it spares a decode of every message the kernel
        # publishes for as long as the kernel runs.
        client.close_iopub()
        # So the last status it saw may be the "busy" of its own kernel_info request, whose
        # "idle" it will never see: having answered, the kernel is idle.
        self._activity.answered()
        # Nor the sockets it does not use until asked (only control serves shutdowns and
        # interrupts): two descriptors per socket, the kernels one process can supervise.
        unused = ["shell", "stdin", "iopub"] + (["hb"] if self.heartbeat_interval <= 0 else [])
        client._release_channels(unused)
        # It has bound its ports: no need to hold them against other programs any more.
        info = validate_connection_info(provisioner.connection_info)
        unhold_ports(transport=info["transport"], ip=info["ip"], ports=_ports_of(info))

    async def _undo_start(self, exc: BaseException, what: str) -> None:
        """A start failed with *exc* (or was cancelled): stop what it made, shielded and
        bounded, and drop the provisioner. Raises a limit's error instead of *exc* when the
        start ran out of descriptors or memory; otherwise returns (the caller re-raises)."""
        # Out of descriptors (or memory) wherever the start opened one: the connection
        # file, the held ports, the spawn, the guardian, the client. A client that zmq
        # could not connect for want of descriptors never reaches its kernel: a timeout
        # at the limit says so. Judged before the stop below frees descriptors.
        error = limit_error(exc, what)
        if error is None and isinstance(exc, KernelTimeoutError) and at_open_file_limit():
            error = limit_error(OSError(errno.EMFILE, "Too many open files"), what)
        hook, self._in_hook = self._in_hook, None
        if hook is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
            level = logging.WARNING if hook == "launch_kernel" else logging.ERROR
            self.log.log(
                level,
                "Kernel %s: the start was cancelled while %s.%s() ran",
                self.kernel_id,
                type(self.provisioner).__name__,
                hook,
            )
        with anyio.CancelScope(shield=True):  # bounded: _stop is (stop_bound)
            await self._stop(now=True, restart=False)
            self.provisioner = None
        # What the hooks did wrong meanwhile was logged; the start's own error is raised.
        self._hook_errors.clear()
        if error is not None:
            raise error from exc

    def _display_name(self) -> str:
        spec = self._kernel_spec
        return (spec.name or spec.display_name or self.kernel_name) if spec else self.kernel_name

    async def _launch(self) -> None:
        provisioner = self.provisioner
        assert provisioner is not None
        kw = await self._start_hook(provisioner, "pre_launch", **self._launch_kwargs)
        if not isinstance(kw, dict) or not isinstance(kw.get("cmd"), list):
            message = f"returned {kw!r}, not the launch keywords with a 'cmd' list"
            raise self._hook_error(provisioner, "pre_launch", message)
        cmd = kw.pop("cmd")
        await self._start_hook(provisioner, "launch_kernel", cmd, **kw)
        await self._start_hook(provisioner, "post_launch", **kw)
        self._started_at = anyio.current_time()
        self._activity.touch()
        self._generation += 1
        number = self._incarnation.number + 1 if self._incarnation is not None else 1
        self._incarnation = _Incarnation(number, provisioner)
        self._announce()
        tg = self._task_group()
        self._client, self._client_scope = await tg.start(self._serve_client, provisioner)
        # Shielded only now, by us: a start() cancelled after the task reported in cancels the
        # task and waits for it, which a shield set by the task itself would turn into a hang.
        self._client_scope.shield = True
        # Every incarnation is supervised, restarts or not: its death is always reported.
        self._supervisor_scope = await tg.start(self._supervise, self._generation)

    async def _start_hook(
        self, provisioner: KernelProvisionerBase, hook: str, *args: Any, **kwargs: Any
    ) -> Any:
        """A start hook: not shielded, so bounded by the caller's deadline (or a shutdown,
        which cancels the start), which :meth:`_undo_start` logs naming the hook. What it
        raises is the start's error, as it is; a :class:`BaseException` of its own becomes a
        :class:`ProvisionerHookError` (logged)."""
        self._in_hook = hook
        try:
            result = await getattr(provisioner, hook)(*args, **kwargs)
        except (anyio.get_cancelled_exc_class(), KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except KernelNurseryError:
            self._in_hook = None
            raise
        except Exception as exc:
            self._in_hook = None
            self.log.error(
                "Kernel %s: %s.%s() raised %r",
                self.kernel_id,
                type(provisioner).__name__,
                hook,
                exc,
            )
            raise
        except BaseException as exc:
            self._in_hook = None
            raise self._hook_error(provisioner, hook, f"raised {type(exc).__name__}") from exc
        self._in_hook = None
        return result

    def _hook_error(
        self, provisioner: KernelProvisionerBase, hook: str, what: str
    ) -> ProvisionerHookError:
        """A :class:`ProvisionerHookError` for *hook* that did *what*, logged as an error."""
        name = f"{type(provisioner).__name__}.{hook}()"
        self.log.error("Kernel %s: %s %s", self.kernel_id, name, what)
        cls = type(provisioner).__name__
        return ProvisionerHookError(
            f"kernel {self.kernel_id}: {name} {what}", provisioner=cls, hook=hook
        )

    async def _serve_client(
        self,
        provisioner: KernelProvisionerBase,
        *,
        task_status: anyio.abc.TaskStatus[tuple[KernelClient, anyio.CancelScope]],
    ) -> None:
        """The manager's own client of the current incarnation, as a task of the group.

        Its scope is shielded by :meth:`_launch` once it has started, and ended only by
        :meth:`_stop`: when the scope around the manager is cancelled, the polite shutdown that
        follows still needs this client to send its ``shutdown_request``.
        """
        incarnation = self._incarnation
        assert incarnation is not None
        with anyio.CancelScope() as scope:
            info = validate_connection_info(provisioner.connection_info)
            session = self._activity.session(info)  # it sees every status the kernel publishes
            # It follows the exit the supervisor sees, not the provisioner's wait() itself:
            # a hook that raises there is the supervisor's to log, not this task's to die of.
            client = KernelClient(info, wait_for_exit=incarnation.wait, session=session)
            async with client:
                task_status.started((client, scope))
                if self.heartbeat_interval > 0:
                    await incarnation.ready.wait()  # a kernel still starting is not hung
                    await self._watch_heartbeat(client)
                await anyio.sleep_forever()

    async def _watch_heartbeat(self, client: KernelClient) -> None:
        """Beat every :attr:`heartbeat_interval`; after :attr:`heartbeat_misses` unanswered
        beats in a row, emit ``unresponsive`` and, with :attr:`heartbeat_restart`, restart the
        kernel (from a task of the group, as the restart ends this incarnation's tasks, this
        one included). Returns once the kernel has exited, or after a restart was asked for.

        Runs in the client's task, so :meth:`_stop` ends it with the incarnation.
        """
        interval, misses = self.heartbeat_interval, 0
        while True:
            try:
                echoed = await client.heartbeat(timeout=interval)
            except KernelNurseryError:
                return  # the kernel exited: the supervisor reports it
            if echoed:
                misses = 0
                # The heartbeat protocol's own rhythm, not a poll of our state.
                await anyio.sleep(interval)
                continue
            misses += 1
            if misses < self.heartbeat_misses:
                continue
            self.log.warning(
                "Kernel %s missed %d heartbeats in a row", self.kernel_id, self.heartbeat_misses
            )
            self._emit("unresponsive")
            misses = 0
            if self.heartbeat_restart:
                self._task_group().start_soon(self._restart_unresponsive, self._generation)
                return

    async def _restart_unresponsive(self, generation: int) -> None:
        """Restart a kernel reported unresponsive, unless another operation came first."""
        if generation != self._generation or self._closed:
            return
        try:
            await self.restart_kernel(now=True)
        except Exception as exc:  # a plug-in's own error too: this task must not end the group
            self.log.error("Kernel %s could not be restarted: %r", self.kernel_id, exc)

    # ------------------------------------------------------------------ supervision

    async def _supervise(
        self, generation: int, *, task_status: anyio.abc.TaskStatus[anyio.CancelScope]
    ) -> None:
        """Await the current process's exit; if nobody asked for it, restart or declare dead."""
        provisioner = self.provisioner
        assert provisioner is not None
        incarnation = self._incarnation
        with anyio.CancelScope() as scope:
            task_status.started(scope)
            # A watch, as long as the kernel runs: no deadline, but a failure of the hook is
            # logged and noted, and ends the watch (the manager can no longer see the exit).
            status = await self._hook(provisioner, "wait", math.inf, check=is_status)
        if scope.cancel_called or status is FAILED:
            return
        if incarnation is not None:
            incarnation.exit(status)
        async with self._lock:
            if generation != self._generation or self.provisioner is not provisioner:
                return  # a shutdown or restart took over meanwhile
            await self._on_unexpected_exit(status)

    async def _on_unexpected_exit(self, status: int | None) -> None:
        """The kernel died without being asked to: restart it (and wait until it answers),
        or report it dead. Must hold the lock."""
        provisioner = self.provisioner
        assert provisioner is not None
        uptime = anyio.current_time() - self._started_at
        why = _why(provisioner)  # read now: the provisioner forgets it at the next launch
        self.log.warning(
            "Kernel %s died (status %s%s) after %.3g s",
            self.kernel_id,
            status,
            f": {why[0]}" if why[0] else "",
            uptime,
        )
        if not self.autorestart:
            await self._declare_dead(status, why)
            return
        stable = sync_hook(
            provisioner,
            "get_stable_start_time",
            self.stable_start_time,
            errors=self._hook_errors,
            log=self.log,
        )
        self._rapid_deaths = self._rapid_deaths + 1 if uptime < stable else 0
        while True:
            if self._rapid_deaths > self.restart_limit:
                self.log.error(
                    "Kernel %s died %d times in a row soon after starting; giving up",
                    self.kernel_id,
                    self._rapid_deaths,
                )
                await self._declare_dead(status, why)
                return
            self._emit("restarting", status, why=why)
            await self._stop(now=True, restart=True)
            try:
                await self._start_guarded("restarting")
            except KernelStateError:
                return  # shut down meanwhile: the shutdown reports it
            except KernelDiedError as exc:
                self.log.warning(
                    "Kernel %s died again (status %s) before it was ready",
                    self.kernel_id,
                    exc.exit_status,
                )
                status = exc.exit_status
                why = _why(self.provisioner)
                self._rapid_deaths += 1
                continue
            except Exception as exc:  # a plug-in's own error too: the supervisor must not die of it
                self.log.error("Kernel %s could not be restarted: %r", self.kernel_id, exc)
                await self._declare_dead(status, why)
                return
            self._emit("restarted")
            return

    async def _declare_dead(self, status: int | None, why: _Why) -> None:
        with anyio.CancelScope(shield=True):  # bounded: _stop is (stop_bound)
            await self._stop(now=True, restart=False)
        self._dead = True
        self._end()
        self._emit("dead", status, why=why)

    # ------------------------------------------------------------------ stopping

    async def _hook(
        self, provisioner: KernelProvisionerBase, hook: str, seconds: float, *args: Any, **kw: Any
    ) -> Any:
        """A call into *provisioner*'s *hook*, bounded by *seconds*, a failure logged and noted
        (see :func:`~kernel_nursery.provisioning._hooks.call_hook`): its result or ``FAILED``."""
        return await call_hook(
            provisioner, hook, seconds, *args, errors=self._hook_errors, log=self.log, **kw
        )

    def _wait_time(self, provisioner: KernelProvisionerBase, *, note: bool = True) -> float:
        """The provisioner's shutdown wait time; the manager's when it cannot say (logged, and
        noted for the next shutdown to raise when *note*)."""
        return sync_hook(
            provisioner,
            "get_shutdown_wait_time",
            self.shutdown_wait_time,
            errors=self._hook_errors if note else None,
            log=self.log,
        )

    def stop_bound(self, *, now: bool = False) -> float:
        """The longest a shutdown of this manager's kernel can take, in seconds, once it has
        the kernel to itself, even when every hook of the provisioner hangs (each is abandoned
        at its budget): ``4 * W + 8 * K`` (``W + 7 * K`` with *now*), where ``W`` is the
        provisioner's shutdown wait time (by default :attr:`shutdown_wait_time`) and ``K``
        :attr:`kill_wait_time`. See :doc:`/manager`.

        .. versionadded:: 0.1
        """
        wait, kill = self.shutdown_wait_time, self.kill_wait_time
        if self.provisioner is not None:
            wait = self._wait_time(self.provisioner, note=False)
        # The request (W), shutdown_requested (K), the wait it was granted (W), SIGTERM's (W).
        polite = 0.0 if now else 3 * wait + kill
        # Three polls, the kill and its wait, the process group's wait, cleanup (W + 2K).
        return polite + 5 * kill + (wait + 2 * kill)

    async def _stop(self, *, now: bool, restart: bool) -> int | None:
        """End the current incarnation: supervisor, polite request (unless *now*), escalation,
        the manager's client, ``cleanup(restart)``; must hold the lock. Shielded, and bounded
        by :meth:`stop_bound`: every call into the provisioner has a budget; one that fails is
        logged and noted (the next :meth:`shutdown_kernel` raises it), and the stop goes on."""
        provisioner = self.provisioner
        if provisioner is None:
            return None
        self._generation += 1  # a supervisor that already saw the exit stands down
        if self._supervisor_scope is not None:
            self._supervisor_scope.cancel()
            self._supervisor_scope = None
        # Shielded, and bounded: every await below is a hook call or a wait with a deadline.
        with anyio.CancelScope(shield=True):
            status: int | None = None
            try:
                if provisioner.has_process:
                    status = await self._end_process(provisioner, now=now, restart=restart)
            finally:
                # Even when a provisioner's hook raised: the client's tasks end (or the
                # manager's close would wait for them forever) and cleanup kills and releases.
                if self._incarnation is not None:
                    self._incarnation.exit(status)
                if self._client_scope is not None:
                    self._client_scope.cancel()
                self._client = self._client_scope = None
                wait_time = self._wait_time(provisioner)
                budget = wait_time + 2 * self.kill_wait_time
                if await self._hook(provisioner, "cleanup", budget, restart=restart) is FAILED:
                    await kill_group(provisioner, 0.0)  # what it left, if it can be reached
        return status

    async def _end_process(
        self, provisioner: KernelProvisionerBase, *, now: bool, restart: bool
    ) -> int | None:
        """Ask the kernel to exit (unless *now*), then escalate
        (:func:`shutdown_kernel_process`)."""
        kill_wait = self.kill_wait_time
        status = await self._hook(provisioner, "poll", kill_wait, check=is_status)
        if status is not None and status is not FAILED:
            return cast(int, status)
        wait_time = self._wait_time(provisioner)
        requested = False
        if not now:
            requested = await self._request_shutdown(provisioner, restart, wait_time)
            await self._hook(provisioner, "shutdown_requested", kill_wait, restart=restart)
        return await shutdown_kernel_process(
            provisioner,
            restart=restart,
            wait_time=wait_time,
            shutdown_requested=requested,
            now=now,
            kill_wait=kill_wait,
            errors=self._hook_errors,
            log=self.log,
        )

    async def _request_shutdown(
        self, provisioner: KernelProvisionerBase, restart: bool, wait_time: float
    ) -> bool:
        """Send ``shutdown_request`` on control; whether the kernel acknowledged it. All
        within *wait_time*.

        A kernel that is busy (or whose state the manager does not know) is interrupted first,
        as its spec says (:meth:`interrupt_kernel`): a kernel runs a shutdown request only once
        the code it runs is over, and would otherwise hold the shutdown for the whole wait."""
        if self._client is None:
            return False
        deadline = anyio.current_time() + wait_time
        if self._activity.state != "idle":
            self.log.debug(
                "Kernel %s is %s: interrupted first", self.kernel_id, self.execution_state
            )
            await self._interrupt(provisioner, min(self.kill_wait_time, wait_time), quiet=True)
        try:
            left = max(deadline - anyio.current_time(), 0.0)
            await self._client.shutdown(restart=restart, timeout=left)
        except KernelNurseryError as exc:
            self.log.info(
                "Kernel %s did not acknowledge the shutdown request: %s", self.kernel_id, exc
            )
            return False
        return True

    async def _interrupt(
        self, provisioner: KernelProvisionerBase, seconds: float, *, quiet: bool = False
    ) -> None:
        """Interrupt the kernel as its spec asks, within *seconds*; a failure of the
        provisioner's ``send_signal`` is logged and noted, an unanswered ``interrupt_request``
        raises (unless *quiet*: logged)."""
        spec = self._kernel_spec  # known: it was needed to start the kernel
        if spec is None or spec.interrupt_mode != "message":
            await self._hook(provisioner, "send_signal", seconds, signal.SIGINT)
            return
        if self._client is None:
            raise KernelStateError("the kernel is not running")
        try:
            await self._client.interrupt(timeout=seconds)
        except KernelNurseryError as exc:
            if not quiet:
                raise
            self.log.info("Kernel %s did not answer the interrupt: %s", self.kernel_id, exc)

    def _raise_hook_errors(self, since: int = 0) -> None:
        """Raise the first failure of a provisioner's hook noted from index *since* on (each
        was logged when it happened), and forget those."""
        errors = self._hook_errors[since:]
        del self._hook_errors[since:]
        if errors:
            raise errors[0]

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        """Shut the kernel down: ask it politely (unless *now*; a busy kernel is interrupted
        first), give it :attr:`shutdown_wait_time`, then SIGTERM, then SIGKILL to its process
        group; then clean up. Does nothing when no kernel runs.

        With *restart*, the ports, key and connection file are kept, and the next
        :meth:`start_kernel` starts the kernel on them; the end of the manager's block releases
        them if none follows.

        A start or restart in progress (waiting for its kernel to answer) is cancelled first:
        its caller gets :class:`~kernel_nursery.KernelStateError`, and nothing of that kernel is
        left.

        Cancellation: waiting for another operation of this manager to finish can be cancelled
        (the kernel is then left as that operation leaves it); it is bounded by
        :meth:`stop_bound` all the same. Once the shutdown has begun it is shielded and
        completes, within :meth:`stop_bound`: a cancelled caller still leaves the kernel
        stopped.

        Raises:
            ProvisionerHookError: a hook of the provisioner failed (raised, answered garbage,
                or hung and was abandoned), now or since the last shutdown; raised once the
                kernel is stopped as far as the manager could. Every failure was logged.
        """
        self._stopping += 1
        try:
            cancelled_start = self._start_scope is not None
            if self._start_scope is not None:
                self._start_scope.cancel()
            await self._shutdown_locked(now=now, restart=restart, cancelled_start=cancelled_start)
        finally:
            self._stopping -= 1
        self._raise_hook_errors()

    async def _shutdown_locked(self, *, now: bool, restart: bool, cancelled_start: bool) -> None:
        """:meth:`shutdown_kernel`'s work under the lock."""
        if not await self._acquire_for_shutdown():
            return
        try:
            with anyio.CancelScope(shield=True):  # bounded: _stop is (see stop_bound)
                provisioner = self.provisioner
                if provisioner is None:
                    if cancelled_start:
                        self._emit("shutdown")
                    return
                had_process = provisioner.has_process
                status = None
                try:
                    status = await self._stop(now=now, restart=restart)
                finally:
                    if not restart:
                        self.provisioner = None
                        self._end()
                    if had_process:
                        self._emit("shutdown", status)
        finally:
            self._lock.release()

    async def _acquire_for_shutdown(self) -> bool:
        """Take the lock, waiting at most :meth:`stop_bound` for the operation that holds it
        (whose own stop is bounded so, and whose start :meth:`shutdown_kernel` cancelled).
        Whether it was taken: if not, that operation is stuck in a provisioner's hook that
        ignores cancellation, and the manager kills what it can reach by itself (logged)."""
        try:
            self._lock.acquire_nowait()  # no checkpoint: a cancelled caller still stops it
            return True
        except anyio.WouldBlock:
            pass
        bound = self.stop_bound()
        with anyio.move_on_after(bound):
            await self._lock.acquire()
            return True
        hook = self._in_hook or "a hook"
        self.log.error(
            "Kernel %s: another operation held it for more than %.3g s (stuck in %s of %s, "
            "which ignores cancellation); killing its process group where it can be reached",
            self.kernel_id,
            bound,
            hook,
            type(self.provisioner).__name__,
        )
        if self.provisioner is not None:
            await kill_group(self.provisioner, self.kill_wait_time)
        return False

    async def restart_kernel(
        self, now: bool = False, newports: bool = False, **kwargs: Any
    ) -> None:
        """Restart the kernel: shut it down (as :meth:`shutdown_kernel` with ``restart=True``),
        start it again with the same id, and wait until it answers.

        The ports and key are kept unless *newports*, in which case new ones are reserved and
        the old ones released (a new provisioner is created, as the old one was cleaned up for
        good). A kernel reported dead restarts on new ports too. *kwargs* update the launch
        keywords given to :meth:`start_kernel`. The new start raises as :meth:`start_kernel`
        does, and leaves nothing running when it fails.

        Raises:
            KernelStateError: no kernel was started, or it was shut down meanwhile.
        """
        self._task_group()
        async with self._lock:
            provisioner = self.provisioner
            if provisioner is None:
                raise KernelStateError("there is no kernel to restart; start one first")
            self._emit("restarting")
            await self._stop(now=now, restart=not (newports or self._dead))
            if newports or self._dead:
                # cleanup(restart=False) ended that provisioner's life; the kernel gets a new one.
                self.provisioner = None
            self._launch_kwargs.update(kwargs)
            self._rapid_deaths = 0
            self._dead = False
            try:
                await self._start_guarded("restarting")
            except BaseException as exc:
                self._start_failed(exc)
                raise
            self._emit("restarted")

    # ------------------------------------------------------------------ while running

    async def interrupt_kernel(self) -> None:
        """Interrupt the kernel as its spec asks: SIGINT (``interrupt_mode: signal``) or an
        ``interrupt_request`` on the control channel (``message``), within
        :attr:`shutdown_wait_time`.

        Raises:
            KernelStateError: no kernel is running.
            ProvisionerHookError: the provisioner's ``send_signal`` failed or hung (logged).
        """
        since = len(self._hook_errors)
        await self._interrupt(self._running(), self.shutdown_wait_time)
        self._raise_hook_errors(since)

    async def signal_kernel(self, signum: int) -> None:
        """Send *signum* to the kernel's process group.

        Raises:
            KernelStateError: no kernel is running.
            ProvisionerHookError: the provisioner's ``send_signal`` failed, or did not return
                within :attr:`kill_wait_time` (logged).
        """
        since = len(self._hook_errors)
        await self._hook(self._running(), "send_signal", self.kill_wait_time, signum)
        self._raise_hook_errors(since)

    async def wait_for_ready(self, timeout: float | None = None) -> None:
        """Wait until the kernel answers ``kernel_info`` (default :attr:`ready_timeout`).

        Raises:
            KernelTimeoutError, KernelDiedError: as :meth:`KernelClient.wait_for_ready`.
        """
        self._running()
        if self._client is None:
            raise KernelStateError("the kernel is not running")
        await self._client.wait_for_ready(
            timeout=self.ready_timeout if timeout is None else timeout
        )

    def client(self, **kwargs: Any) -> KernelClient:
        """A new :class:`~kernel_nursery.KernelClient` for this kernel (use it with
        ``async with``).

        The client follows the kernel across restarts (automatic ones, :meth:`restart_kernel`,
        and ``shutdown_kernel(restart=True)`` then :meth:`start_kernel`), on the same ports or on
        new ones: requests waiting when the kernel dies fail with
        :class:`~kernel_nursery.KernelDiedError`, requests made while no kernel runs fail with
        it at once, and requests made once the new kernel runs work. After the kernel is shut
        down for good (or reported dead), its requests fail with ``KernelDiedError``.

        While open, the client counts in :attr:`connections`, and its requests and the
        kernel's answers in :attr:`last_activity` (unless it is given a ``session`` of its own).
        """
        self._running()
        incarnation = self._incarnation
        assert incarnation is not None
        number, ends = incarnation.number, self._ends

        async def wait_for_restart() -> tuple[ConnectionInfo, WaitForExit] | None:
            nonlocal number
            successor = await self._successor(number, ends)
            if successor is not None and self._incarnation is not None:
                number = self._incarnation.number
            return successor

        kwargs.setdefault("session", self._activity.session(incarnation.info))
        # A kernel that greeted our own client's iopub subscription greets the new client's
        # too: its first execute then waits for that, not for a kernel_info round trip.
        own = self._client
        kwargs.setdefault("expect_welcome", own is not None and own.iopub_welcomed)
        return TrackedClient(
            incarnation.info,
            activity=self._activity,
            wait_for_exit=incarnation.wait,
            wait_for_restart=wait_for_restart,
            **kwargs,
        )

    def _running(self) -> KernelProvisionerBase:
        if self.provisioner is None or not self.provisioner.has_process:
            raise KernelStateError("no kernel is running in this manager")
        return self.provisioner


@asynccontextmanager
async def start_kernel(kernel_name: str = "python3", **kwargs: Any) -> AsyncIterator[KernelManager]:
    """Start a kernel and yield its ready :class:`KernelManager`; shut it down on exit.

    Keywords that name :class:`KernelManager` settings (``shutdown_wait_time``,
    ``kernel_spec``, ``config``...) configure the manager; the others (``env``, ``cwd``,
    ``extra_arguments``...) go to :meth:`KernelManager.start_kernel`.

    .. code-block:: python

        async with start_kernel("python3", cwd="/tmp") as km:
            ...
    """
    manager_kw, launch_kw = split_manager_kwargs(kwargs)
    async with KernelManager(kernel_name=kernel_name, **manager_kw) as km:
        await km.start_kernel(**launch_kw)
        yield km


def split_manager_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keywords into :class:`KernelManager` settings (its traits, ``kernel_spec``,
    ``config``, ``log``) and launch keywords for :meth:`KernelManager.start_kernel`."""
    manager_keys = set(KernelManager.class_trait_names()) | {"kernel_spec", "config", "log"}
    manager_kw = {k: v for k, v in kwargs.items() if k in manager_keys}
    launch_kw = {k: v for k, v in kwargs.items() if k not in manager_keys}
    return manager_kw, launch_kw
