"""``KernelPool``: kernels started before they are asked for, each handed to one taker."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream
from traitlets import Bool, Integer, TraitError, Unicode, observe, validate
from traitlets.config import LoggingConfigurable

from .._errors import KernelStateError
from .._taskgroup import OwnedTaskGroup
from ._events import Hub, KernelEvent, PoolEvent, PoolEventKind, PoolStatus
from ._manager import KernelManager
from ._nursery import KernelNursery

__all__ = ["KernelPool"]

#: KernelNursery settings a pool passes on to the nursery that holds its kernels.
_NURSERY_KEYS = frozenset({"cull_idle_timeout", "cull_busy", "cull_connected"})


class _Warm:
    """A warm kernel: its manager, and the subscription to its events that tells whether
    anything happened to it since it became ready."""

    def __init__(
        self,
        km: KernelManager,
        events: MemoryObjectReceiveStream[KernelEvent],
        incarnation: object,
    ) -> None:
        self.km = km
        self.events = events
        self.incarnation = incarnation
        self.scope = anyio.CancelScope()
        self.taken = False
        self.discarded = False

    def clean(self) -> bool:
        """Nothing happened to it since it was ready: no event (a death, a restart, a
        shutdown), no operation under way (a restart holds the manager's lock), the same
        process as when it was ready, no sign of an exit."""
        km = self.km
        return (
            not self.discarded
            and self.events.statistics().current_buffer_used == 0
            and not km._lock.locked()
            and km._incarnation is self.incarnation
            and self.km.has_kernel
            and not self.km.dead
        )


class _Ask:
    """A start made by a take that found no warm kernel: whether the take still waits,
    whether the start is over, and its error if it failed while the take waited."""

    def __init__(self) -> None:
        self.waiting = True
        self.done = False
        self.error: Exception | None = None


class KernelPool(LoggingConfigurable):
    """Keeps :attr:`size` kernels of one spec started and ready, and hands each to one taker.

    .. code-block:: python

        async with KernelPool("python3", size=4) as pool:
            async with pool.take() as km:       # at once, when a kernel is warm
                async with km.client() as kc:
                    print((await kc.execute("1 + 1")).results)
            # that kernel has been shut down here; the pool is refilling in the background

    The pool is an async context manager and owns everything it starts: its kernels live in
    a :class:`KernelNursery` of its own and its refilling runs in its task group, so when its
    block ends (normally, by an exception, by cancellation) the starts in flight are
    cancelled and every kernel it holds is shut down, concurrently and shielded, taken ones
    included (a taker still using one sees it die).

    A kernel taken is its taker's alone: it is never handed to anyone else, never given back
    to the pool, and it is shut down when the taker's ``async with pool.take()`` block ends.
    A warm kernel that dies, restarts or is shut down before it is taken is discarded, never
    handed out, and replaced (see :attr:`replace_dead`).

    Keywords that name the pool's settings (:attr:`size`, :attr:`refill_concurrency`,
    :attr:`replace_dead`, ``config``...) configure the pool; :class:`KernelNursery`'s culling
    settings (``cull_idle_timeout``, ``cull_busy``, ``cull_connected``) apply to taken kernels
    (warm kernels are never culled); the rest are for the kernels, split as for
    :func:`~kernel_nursery.start_kernel` (manager settings such as ``kernel_spec`` or
    ``shutdown_wait_time``, and launch keywords such as ``cwd`` or ``env``).

    Raises:
        TraitError: a setting has a bad value (a negative size, no concurrency).
        TypeError: ``kernel_id`` was given (every kernel of a pool gets its own).

    .. versionadded:: 0.1
    """

    kernel_name = Unicode("python3", config=True, help="The kernel spec of the pool's kernels.")
    size = Integer(
        2,
        config=True,
        help="How many started, ready kernels the pool keeps waiting to be taken.",
    )
    refill_concurrency = Integer(
        2,
        config=True,
        help="At most this many kernels start at once to refill the pool. A take that finds "
        "no warm kernel starts one beyond this limit.",
    )
    replace_dead = Bool(
        True,
        config=True,
        help="Start a new kernel at once in the place of a warm kernel that died (it is "
        "discarded either way, never handed out). Off, the pool refills after the next take, "
        "so kernels that keep dying do not keep being started.",
    )

    @validate("size")
    def _check_size(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 0:
            raise TraitError(f"KernelPool.size must be 0 or more, not {value}")
        return value

    @validate("refill_concurrency")
    def _check_concurrency(self, proposal: Any) -> int:
        value = int(proposal["value"])
        if value < 1:
            raise TraitError(f"KernelPool.refill_concurrency must be 1 or more, not {value}")
        return value

    @observe("size", "refill_concurrency")
    def _settings_changed(self, change: Any) -> None:
        # A larger size (or more concurrency) starts refills at once; with a smaller size,
        # warm kernels beyond it stay until they are taken.
        need = getattr(self, "_need", None)  # None while __init__ sets the traits
        if need is not None:
            need.set()

    def __init__(self, kernel_name: str = "python3", **kwargs: Any) -> None:
        own = set(type(self).class_trait_names()) | {"config", "parent", "log"}
        pool_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        self._nursery_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _NURSERY_KEYS}
        if "kernel_id" in kwargs:
            raise TypeError("KernelPool() takes no kernel_id: each of its kernels gets its own")
        super().__init__(kernel_name=kernel_name, **pool_kw)
        self._kernel_kw = kwargs
        self._warm: deque[_Warm] = deque()
        self._taken: set[KernelManager] = set()
        self._starting = 0  # refills in flight
        self._asked = 0  # starts in flight made by takes that found no warm kernel
        self._waiting = 0  # takes waiting for a kernel to be warm
        self._paused = False  # after a failed refill, until a start succeeds
        self._need = anyio.Event()
        self._group = OwnedTaskGroup()
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._nursery: KernelNursery | None = None
        self._closing = False
        self._events: Hub[PoolEvent] = Hub()
        self._changed = anyio.Event()  # set (then replaced) at each event
        self._counts = {
            "takes": 0,
            "cold_takes": 0,
            "discarded": 0,
            "failed_starts": 0,
        }

    # ------------------------------------------------------------------ scope

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            raise KernelStateError("this KernelPool is already open")
        if self._closing:
            raise KernelStateError("this KernelPool has been closed; make a new one")
        async with AsyncExitStack() as stack:
            nursery = KernelNursery(parent=self, **self._nursery_kw)
            nursery._cull_filter = self._taken.__contains__
            self._nursery = await stack.enter_async_context(nursery)
            tg = await self._group.open(self._stop)
            stack.push_async_callback(self._group.close)
            tg.start_soon(self._refill, name="kernel-pool refill")
            if nursery.cull_idle_timeout > 0:
                tg.start_soon(self._relay_culls, nursery, name="kernel-pool culls")
            self._tg = tg
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            try:
                # The pool's tasks end first (starts in flight are cancelled, leaving
                # nothing); then its nursery shuts every kernel down, shielded.
                await stack.__aexit__(None, None, None)
            finally:
                self._events.close()

    def _stop(self) -> None:
        """The pool's block is ending: refuse takes, end the refilling and the watchers
        (starts in flight are cancelled and leave nothing)."""
        self._closing = True
        self._warm.clear()  # the nursery shuts them down next
        self._changed.set()  # wait_warm() sees the pool closed
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._tg = None

    def _task_group(self) -> anyio.abc.TaskGroup:
        if self._closing:
            raise KernelStateError("the pool is closed; it hands out no more kernels")
        if self._tg is None or self._nursery is None:
            raise KernelStateError("use the pool as 'async with KernelPool(...) as pool:' first")
        return self._tg

    # ------------------------------------------------------------------ status and events

    @property
    def status(self) -> PoolStatus:
        """The pool's counts now."""
        return PoolStatus(
            size=self.size,
            warm=len(self._warm),
            starting=self._starting + self._asked,
            taken=len(self._taken),
            culled=self._nursery.culled if self._nursery is not None else 0,
            **self._counts,
        )

    def events(self) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[PoolEvent]]:
        """Subscribe to the pool's events: an async context manager giving a stream of
        :class:`PoolEvent`, used as :meth:`KernelManager.events`; it ends when the pool closes.
        """
        return self._events.subscribe()

    def _emit(self, kind: PoolEventKind, kernel_id: str | None, **fields: Any) -> None:
        self._events.emit(PoolEvent(kind=kind, kernel_id=kernel_id, status=self.status, **fields))
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_warm(self, count: int | None = None) -> None:
        """Wait until at least *count* kernels (default: :attr:`size`) are warm: a service
        ready to hand kernels out at once. Returns at once if they are.

        Cancellation leaves the pool as it was.

        Raises:
            KernelStateError: the pool is not open, or closed meanwhile; or refilling has
                stopped after a failed start (a take starts its own kernel, and shows why).
            ValueError: *count* is more than :attr:`size` (it would never happen).
        """
        count = self.size if count is None else count
        if count > self.size:
            raise ValueError(f"a pool of size {self.size} never has {count} warm kernels")
        while len(self._warm) < count:
            self._task_group()
            if self._paused:
                raise KernelStateError(
                    "the pool stopped refilling after a failed start; take a kernel to see why"
                )
            await self._changed.wait()

    async def _relay_culls(self, nursery: KernelNursery) -> None:
        async with nursery.events() as events:
            async for event in events:
                if event.kind == "culling":
                    self._emit("culling", event.kernel_id)

    # ------------------------------------------------------------------ taking

    def take(self) -> AbstractAsyncContextManager[KernelManager]:
        """Take a ready kernel: an async context manager giving its :class:`KernelManager`,
        the taker's alone until the block ends, when the kernel is shut down (shielded,
        bounded by the manager's ``shutdown_wait_time``).

        A warm kernel is handed over at once (the pool then starts another in the background).
        When none is warm, the take starts one (in the pool's task group, beyond
        :attr:`refill_concurrency`) and hands over whichever kernel is ready first, that one
        or a refill already in flight; the other becomes warm. If the start it made fails
        while it waits, the take raises that error (as :meth:`KernelManager.start_kernel`
        raises it).

        Cancellation: a take cancelled before it hands a kernel over takes nothing: a warm
        kernel it was checking stays warm, and a start it made goes on as a refill (its kernel
        becomes warm). If the pool closes while a take waits, the take raises
        :class:`KernelStateError`; the starts in flight are cancelled and leave nothing.

        Raises:
            KernelStateError: the pool is not open, or it closed while the take waited.
        """
        return self._take()

    @asynccontextmanager
    async def _take(self) -> AsyncIterator[KernelManager]:
        km = await self._acquire()
        try:
            yield km
        finally:
            await self._release(km)

    async def _acquire(self) -> KernelManager:
        self._task_group()
        await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled taker takes nothing
        began = anyio.current_time()
        ask: _Ask | None = None
        try:
            while (km := await self._take_warm()) is None:
                if ask is not None and ask.error is not None:
                    error, ask.error = ask.error, None
                    raise error
                if ask is None or ask.done:
                    # None warm: start one, in the pool's task group, and take whichever
                    # kernel is ready first, this one or a refill already in flight; the
                    # other becomes warm. Any event wakes us to look again. Whenever our
                    # start is over and its kernel went to another take, we make another:
                    # a waiting take always has a start of its own in flight.
                    if ask is not None:
                        ask.waiting = False
                    ask = _Ask()
                    self._asked += 1
                    self._emit("starting", None)
                    self._task_group().start_soon(self._start_one, self._task_group(), ask)
                self._waiting += 1
                try:
                    await self._changed.wait()
                finally:
                    self._waiting -= 1
                if self._closing:
                    raise KernelStateError("the pool closed while the take waited")
        finally:
            if ask is not None:
                ask.waiting = False  # from now on its start is a refill like any other
        cold = ask is not None
        self._taken.add(km)
        km._activity.touch()  # taken now: its idle time (for culling) starts here
        self._counts["takes"] += 1
        self._counts["cold_takes"] += cold
        self._need.set()
        if self._nursery is not None:
            self._nursery._wake_culler()
        took = anyio.current_time() - began
        self._emit("taken", km.kernel_id, take_time=took, cold=cold)
        return km

    async def _take_warm(self) -> KernelManager | None:
        """The first warm kernel that is still clean and alive, or ``None``."""
        while self._warm:
            entry = self._warm.popleft()
            try:
                alive = entry.clean() and await entry.km.is_alive()
            except BaseException:
                if entry.clean():
                    self._warm.appendleft(entry)  # a cancelled take leaves it warm
                raise
            if alive and entry.clean():
                entry.taken = True
                entry.scope.cancel()  # its watcher stands down
                return entry.km
            # Not clean: its watcher has an event to act on, or will have one soon (the
            # process has exited and its supervisor is about to say so); it discards it.
        return None

    async def _release(self, km: KernelManager) -> None:
        try:
            if self._nursery is not None:
                # Shielded, and bounded: by the manager's stop_bound().
                with anyio.CancelScope(shield=True):
                    await self._nursery._shutdown(km, now=False)
        finally:
            self._taken.discard(km)
            self._emit("released", km.kernel_id)

    # ------------------------------------------------------------------ refilling

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._need.set()

    async def _refill(self) -> None:
        """Keep :attr:`size` kernels warm or starting, at most :attr:`refill_concurrency`
        starting at once; woken by what changes the count, never on a timer."""
        while not self._closing:
            self._need = anyio.Event()
            tg = self._tg
            while (
                tg is not None
                and not self._paused
                # Starts made by takes count towards the size (their kernels become warm when
                # their takes get another), not towards the concurrency.
                and len(self._warm) + self._starting + self._asked < self.size
                and self._starting < self.refill_concurrency
            ):
                self._starting += 1
                self._emit("starting", None)
                tg.start_soon(self._start_one, tg)
            await self._need.wait()

    def _count_down(self, ask: _Ask | None) -> None:
        """A start is over: it counts no more as starting, and the refill looks again."""
        if ask is None:
            self._starting -= 1
        else:
            self._asked -= 1
        self._need.set()

    async def _start_one(self, tg: anyio.abc.TaskGroup, ask: _Ask | None = None) -> None:
        nursery = self._nursery
        assert nursery is not None
        try:
            km = await nursery.start_kernel(self.kernel_name, **self._kernel_kw)
        except Exception as exc:
            self._count_down(ask)
            if self._closing:
                return
            if ask is not None:
                ask.done = True
            if ask is not None and ask.waiting:
                # The take that made this start waits for it: the error is that take's.
                ask.error = exc
                self._emit("start_failed", None, error=f"{type(exc).__name__}: {exc}")
                return
            # Not retried at once: refilling waits for a start to succeed (a take that finds
            # no warm kernel makes one, and sees its error itself), so a kernel that cannot
            # start is not started again and again.
            self._paused = True
            self._counts["failed_starts"] += 1
            self.log.error("Kernel pool: a refill failed to start: %s", exc)
            self._emit("start_failed", None, error=f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            self._count_down(ask)
            raise
        incarnation = km._incarnation  # the process that answered: no await since
        self._resume()
        settled = False

        def settle() -> None:
            # Counted as starting until it is warm (or discarded), once.
            nonlocal settled
            if not settled:
                settled = True
                self._count_down(ask)
                if ask is not None:
                    ask.done = True  # before the "warm" event that wakes its take

        try:
            await tg.start(self._hold_warm, km, incarnation, settle)
        finally:
            settle()

    async def _hold_warm(
        self,
        km: KernelManager,
        incarnation: object,
        settle: Callable[[], None],
        *,
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        """Keep *km* warm until it is taken; discard it if anything happens to it first."""
        async with km.events() as events:
            entry = _Warm(km, events, incarnation)
            settle()
            with entry.scope:
                if entry.clean():
                    self._warm.append(entry)
                    self._emit("warm", km.kernel_id)
                    task_status.started()
                    async for _ in events:
                        break  # a death, a restart, a shutdown, a cull: not warm any more
                else:
                    task_status.started()
        if entry.taken or self._closing:
            return  # taken: the taker's now; closing: the nursery shuts it down
        entry.discarded = True
        if entry in self._warm:
            self._warm.remove(entry)
        self._counts["discarded"] += 1
        self.log.warning("Kernel pool: warm kernel %s died; discarding it", km.kernel_id)
        self._emit("discarded", km.kernel_id)
        if self._nursery is not None:
            await self._nursery._shutdown_quietly(km, now=True)
        if self.replace_dead:
            self._need.set()
        else:
            self._paused = True
