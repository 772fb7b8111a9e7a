"""``KernelNursery``: many kernels in one scope."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream
from traitlets import Bool, Float, TraitError, observe, validate
from traitlets.config import LoggingConfigurable

from .._errors import KernelNurseryError, KernelStateError, UnknownKernelIdError
from .._taskgroup import OwnedTaskGroup
from ._events import EventHub, KernelEvent
from ._manager import KernelManager, split_manager_kwargs

__all__ = ["KernelNursery"]


class KernelNursery(LoggingConfigurable):
    """Runs any number of kernels, each in its own :class:`KernelManager`, inside one scope.

    .. code-block:: python

        async with KernelNursery() as nursery:
            py = await nursery.start_kernel("python3")
            other = await nursery.start_kernel("python3", cwd="/tmp")
            ...
        # every kernel has been shut down here, concurrently

    Each kernel's manager lives in a task of the nursery's task group, so kernels start and
    stop concurrently when called from several tasks, and leaving the block (however it is
    left) shuts all of them down, concurrently and shielded.

    With :attr:`cull_idle_timeout` set, the nursery shuts down kernels that showed no activity
    for that long (see :doc:`/pool`): judged from what each manager observes (messages from the
    kernel, its busy/idle status, requests from the manager's clients), with one timer for the
    whole nursery, set on the next deadline.

    .. versionadded:: 0.1
    """

    cull_idle_timeout = Float(
        0.0,
        config=True,
        help="Shut a kernel down once it has shown no activity (no message from it, no request "
        "from a client made by its manager) for this many seconds; 0 turns culling off.",
    )
    cull_busy = Bool(
        False,
        config=True,
        help="Cull kernels whose last status is busy too (their idle time counts from their "
        "last message); by default a busy kernel is spared until it is idle again.",
    )
    cull_connected = Bool(
        False,
        config=True,
        help="Cull kernels that have open clients (made by their manager's client()) too; by "
        "default they are spared until their last client closes.",
    )

    @validate("cull_idle_timeout")
    def _check_cull_idle_timeout(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if not value >= 0:  # NaN too
            raise TraitError(f"cull_idle_timeout must be 0 (off) or more seconds, not {value!r}")
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._managers: dict[str, KernelManager] = {}  # ready kernels, in start order
        self._starting: set[KernelManager] = set()
        self._release: dict[str, anyio.Event] = {}
        self._group = OwnedTaskGroup()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = False
        self._close_error: KernelNurseryError | None = None
        self._events = EventHub()
        # Culling: one timer for the nursery (the culler task's wait), woken early by _wake.
        self._wake = anyio.Event()
        self._cull_deadline = math.inf  # when the culler's timer is set to go off
        self._culling: set[KernelManager] = set()
        #: Which ready kernels may be culled at all (a pool spares its warm kernels).
        self._cull_filter: Callable[[KernelManager], bool] = lambda km: True
        #: How many kernels were culled.
        self.culled = 0
        self._cull_wakeups = 0  # how many times the culler looked (for tests)

    async def __aenter__(self) -> Self:
        if self._group.is_open:
            raise KernelStateError("this KernelNursery is already open")
        self._closing = False
        self._events = EventHub()  # a nursery opened again has new subscribers
        self._wake, self._cull_deadline = anyio.Event(), math.inf
        self._tg = await self._group.open(self._close)
        if self.cull_idle_timeout > 0:
            self._tg.start_soon(self._cull, name="kernel-nursery culler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Twin of manager/_manager.py KernelManager.__aexit__: each owns its group and its
        # close error; a shared base for three lines would hide more than it saves.
        await self._group.close()
        error, self._close_error = self._close_error, None
        if error is not None and exc is None:
            raise error  # the shutdown's own failure, when the block had none of its own

    async def _close(self) -> None:
        # From here on new kernels are refused, and starts in progress are cancelled (their
        # managers' shutdown does it): nothing can keep the block from ending.
        self._closing = True
        self._wake.set()  # the culler sees _closing and ends
        try:
            # Shielded, and bounded: each manager's shutdown is (KernelManager.stop_bound),
            # and they run at once.
            with anyio.CancelScope(shield=True):
                await self._shutdown_many([*self._starting, *self._managers.values()], now=False)
        except KernelNurseryError as exc:
            # Raised from __aexit__ unless the block raised; each failure was logged.
            self._close_error = exc
        finally:
            self._events.close()
            self._tg = None

    async def start_kernel(self, kernel_name: str = "python3", **kwargs: Any) -> KernelManager:
        """Start a kernel in the nursery and return its ready manager.

        Keywords are split as for :func:`~kernel_nursery.start_kernel`: manager settings
        configure the :class:`KernelManager`, the rest go to its ``start_kernel``. A failed start
        raises as :meth:`KernelManager.start_kernel` does, and leaves nothing running.

        May be called from any task, inside the nursery's block or not. If the block ends while
        the kernel is starting, the start is cancelled and raises :class:`KernelStateError`;
        cancelling the caller cancels the start (nothing is left).

        Raises:
            KernelStateError: the nursery is not open, or is closing.
        """
        if self._tg is None:
            raise KernelStateError("use the nursery as 'async with KernelNursery() as n:' first")
        if self._closing:
            raise KernelStateError("the nursery is closing; it starts no more kernels")
        try:
            manager: KernelManager = await self._tg.start(self._host, kernel_name, kwargs)
        except RuntimeError as exc:
            # The host task was cancelled with the nursery's scope before the kernel was ready
            # (anyio then says "child exited without calling task_status.started()").
            if type(exc) is RuntimeError and self._closing:
                raise self._closed_while_starting() from None
            raise
        return manager

    def _closed_while_starting(self) -> KernelStateError:
        return KernelStateError("the nursery closed while the kernel was starting")

    async def _host(
        self,
        kernel_name: str,
        kwargs: dict[str, Any],
        *,
        task_status: anyio.abc.TaskStatus[KernelManager],
    ) -> None:
        """One kernel's life: its manager's scope, held open until the kernel is shut down."""
        manager_kw, launch_kw = split_manager_kwargs(kwargs)
        km = KernelManager(kernel_name=kernel_name, parent=self, **manager_kw)
        if km.kernel_id in self._managers or any(
            other.kernel_id == km.kernel_id for other in self._starting
        ):
            raise KernelStateError(f"the nursery already has a kernel with id {km.kernel_id!r}")
        self._starting.add(km)
        try:
            async with km:
                try:
                    if self._closing:
                        raise self._closed_while_starting()
                    await km.start_kernel(**launch_kw)
                except KernelStateError:
                    if self._closing:  # the nursery's close shut the kernel down
                        raise self._closed_while_starting() from None
                    raise
                finally:
                    self._starting.discard(km)
                if self._closing:
                    raise self._closed_while_starting()  # leaving `async with km` stops it
                release = anyio.Event()
                self._managers[km.kernel_id] = km
                self._release[km.kernel_id] = release
                km._activity.listeners.add(self._wake_culler)
                self._wake_culler()
                task_status.started(km)
                await release.wait()
        finally:
            km._activity.listeners.discard(self._wake_culler)
            self._culling.discard(km)
            self._starting.discard(km)
            self._managers.pop(km.kernel_id, None)
            self._release.pop(km.kernel_id, None)

    def list_kernels(self) -> list[KernelManager]:
        """The managers of the kernels in the nursery that are ready (started and not shut
        down), in the order they started."""
        return list(self._managers.values())

    def get(self, kernel_id: str) -> KernelManager:
        """The manager of kernel *kernel_id*.

        Raises:
            UnknownKernelIdError: no such kernel in this nursery.
        """
        try:
            return self._managers[kernel_id]
        except KeyError:
            raise UnknownKernelIdError(kernel_id, list(self._managers)) from None

    async def shutdown_kernel(self, kernel_id: str, now: bool = False) -> None:
        """Shut kernel *kernel_id* down and remove it from the nursery.

        Cancellation is as for :meth:`KernelManager.shutdown_kernel`.

        Raises:
            UnknownKernelIdError: no such kernel in this nursery.
        """
        await self._shutdown(self.get(kernel_id), now)

    async def shutdown_all(self, now: bool = False) -> None:
        """Shut every kernel down, concurrently, including kernels still starting (their
        starts raise :class:`KernelStateError`). Kernels that are already shutting down (from
        another task, or because their own scope ended) are simply waited for.

        Raises:
            ProvisionerHookError: a provisioner's hook failed while its kernel was stopped
                (as :meth:`KernelManager.shutdown_kernel`); every kernel is stopped all the
                same, and each failure was logged. When several kernels' provisioners
                failed, the first failure is raised.
        """
        await self._shutdown_many([*self._starting, *self._managers.values()], now=now)

    async def _shutdown_many(self, managers: list[KernelManager], now: bool) -> None:
        """Shut *managers* down at once; the first error (each is logged) raised after all."""
        errors: list[KernelNurseryError] = []

        async def shutdown(km: KernelManager) -> None:
            try:
                await self._shutdown(km, now)
            except KernelNurseryError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for km in managers:
                tg.start_soon(shutdown, km)
        if errors:
            raise errors[0]

    async def _shutdown(self, km: KernelManager, now: bool) -> None:
        try:
            await km.shutdown_kernel(now=now)
        finally:
            # Gone from the nursery when this returns (or raises: the kernel is stopped all
            # the same); its host task then leaves the manager's scope.
            if self._managers.get(km.kernel_id) is km:
                del self._managers[km.kernel_id]
            release = self._release.pop(km.kernel_id, None)
            if release is not None:
                release.set()

    async def _shutdown_quietly(self, km: KernelManager, now: bool) -> None:
        """:meth:`_shutdown` from a task of the nursery (culling, a pool's discard): an
        error there, already logged, would end the whole nursery, so it is dropped."""
        try:
            await self._shutdown(km, now)
        except KernelNurseryError as exc:
            self.log.debug("Kernel %s: shutdown failed (logged): %s", km.kernel_id, exc)

    # ------------------------------------------------------------------ culling and events

    def events(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[KernelEvent]]:
        """Subscribe to the nursery's own events: ``culling``, emitted just before an idle
        kernel is shut down (with ``idle_time``). Used as :meth:`KernelManager.events`; the
        stream ends when the nursery closes.

        .. versionadded:: 0.1
        """
        return self._events.subscribe()

    def _wake_culler(self) -> None:
        """A kernel may have become cullable (it is new, it went idle, its last client
        closed, it was taken from a pool). Its deadline is its last activity, which is now,
        plus the timeout: no earlier than the timer's, unless no timer is set; only then does
        the culler need to look again before its timer goes off."""
        if self._cull_deadline == math.inf:
            self._wake.set()

    @observe("cull_idle_timeout", "cull_busy", "cull_connected")
    def _cull_settings_changed(self, change: Any) -> None:
        wake = getattr(self, "_wake", None)  # None while __init__ sets the traits
        if wake is not None:
            wake.set()  # which kernels may be culled, and when, is to be worked out again

    def _cullable(self, km: KernelManager) -> bool:
        return (
            km not in self._culling
            and (self.cull_busy or km.execution_state != "busy")
            and (self.cull_connected or km.connections == 0)
            and self._cull_filter(km)
        )

    async def _cull(self) -> None:
        """Shut down kernels idle for :attr:`cull_idle_timeout`, for as long as the nursery
        is open.

        One timer for the whole nursery: the wait below ends at the earliest deadline of the
        cullable kernels (their last activity plus the timeout), or never when there is none.
        Activity only moves a kernel's deadline later, so the timer is woken early only when
        a kernel becomes cullable (:meth:`_wake_culler`); at each wake-up the deadlines are
        worked out again from what the managers observed, without asking the kernels anything.
        """
        while not self._closing:
            self._wake = anyio.Event()
            self._cull_wakeups += 1
            timeout = self.cull_idle_timeout
            now = anyio.current_time()
            deadline = math.inf
            for km in list(self._managers.values()):
                if not self._cullable(km):
                    continue
                due = km.last_activity + timeout
                if due > now:
                    deadline = min(deadline, due)
                    continue
                self._culling.add(km)
                self.culled += 1
                idle = now - km.last_activity
                self.log.warning("Culling kernel %s: idle for %.3g s", km.kernel_id, idle)
                event = KernelEvent(kind="culling", kernel_id=km.kernel_id, idle_time=idle)
                km._events.emit(event)
                self._events.emit(event)
                if self._tg is not None:
                    self._tg.start_soon(self._shutdown_quietly, km, False)
            self._cull_deadline = deadline
            with anyio.CancelScope(deadline=deadline):
                await self._wake.wait()
