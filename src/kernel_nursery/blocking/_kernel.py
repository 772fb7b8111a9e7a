"""A kernel for synchronous code: the async API run on an event loop in a thread of its own."""

from __future__ import annotations

import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._errors import KernelStateError
from ..manager import KernelManager
from ..manager import start_kernel as _async_start_kernel
from ..messaging import (
    CompleteReply,
    ExecuteResult,
    InspectReply,
    IsCompleteReply,
    KernelClient,
    KernelInfoReply,
    OutputHook,
    Reply,
)

__all__ = ["BlockingKernel", "start_kernel"]

T = TypeVar("T")
#: A synchronous stdin handler: ``(prompt, password) -> text`` (``input`` fits, with a lambda).
SyncStdinHandler = Callable[[str, bool], str]


class BlockingKernel:
    """A running kernel and a client of it, driven from synchronous code.

    Made by :func:`start_kernel`, valid inside its ``with`` block. Each method runs the
    matching coroutine of :class:`~kernel_nursery.KernelManager` or
    :class:`~kernel_nursery.KernelClient` on the block's event loop (in its own thread) and
    waits for it. If the wait is interrupted (``KeyboardInterrupt``, or any exception raised
    in the waiting thread), the coroutine is cancelled before the exception propagates. The
    requests take the async client's options: an error reply is returned as it is unless
    ``raise_on_error=True`` asks for :class:`~kernel_nursery.KernelReplyError`.

    Use it from any thread (each call is its own task), but not from the event loop's own
    (an ``output_hook``, say) and not after the block: both raise
    :class:`~kernel_nursery.KernelStateError`.

    .. versionadded:: 0.1
    """

    def __init__(self, portal: BlockingPortal, manager: KernelManager, client: KernelClient):
        self._portal = portal
        #: The async manager (to be used only through :attr:`portal`).
        self.manager = manager
        #: The async client (to be used only through :attr:`portal`).
        self.client = client

    @property
    def portal(self) -> BlockingPortal:
        """The portal to the block's event loop, to run any other coroutine on it."""
        return self._portal

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return _wait(self._start(func, *args, **kwargs))

    def _start(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> Future[T]:
        async def run() -> T:
            return await func(*args, **kwargs)

        try:
            future = self._portal.start_task_soon(run)
        except RuntimeError as exc:
            # The portal has stopped (the block ended), or this is its own thread.
            raise KernelStateError(
                f"this kernel cannot be used here: {exc} (use it inside its 'with' block, "
                "from any thread but the one its event loop runs in)"
            ) from None
        return future

    # ------------------------------------------------------------ running code

    # Twin of messaging/_client.py KernelClient.execute (and below, of its requests): the sync
    # face repeats the async signatures, since a blocking method cannot reuse an async def's.
    def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        stop_on_error: bool = True,
        output_hook: OutputHook | None = None,
        stdin_handler: SyncStdinHandler | None = None,
    ) -> ExecuteResult:
        """Run *code*; return the reply and its outputs (:meth:`KernelClient.execute`).

        *output_hook* is called in the event loop's thread, as each output arrives: keep it
        short. *stdin_handler* is an ordinary function ``(prompt, password) -> text``, called
        in the thread that called ``execute`` (which waits anyway), so it may block
        (``lambda prompt, _: input(prompt)``), and Ctrl-C interrupts it there as it would
        any ``input()``: the ``KeyboardInterrupt`` propagates, the execute is cancelled.
        """
        handler = None
        calls: queue.SimpleQueue[_InputCall | None] | None = None
        if stdin_handler is not None:
            calls = queue.SimpleQueue()

            async def handler(prompt: str, password: bool) -> str:
                assert calls is not None
                call = _InputCall(prompt, password)
                calls.put(call)
                try:
                    await call.answered.wait()
                finally:
                    call.moot = not call.answered.is_set()
                return call.answer

        future = self._start(
            self.client.execute,
            code,
            timeout=timeout,
            silent=silent,
            store_history=store_history,
            user_expressions=user_expressions,
            stop_on_error=stop_on_error,
            output_hook=output_hook,
            stdin_handler=handler,
        )
        if calls is None or stdin_handler is None:
            return _wait(future)
        future.add_done_callback(lambda _: calls.put(None))
        try:
            while (call := calls.get()) is not None:
                if call.moot:
                    continue  # the kernel stopped waiting before this thread got to it
                call.answer = stdin_handler(call.prompt, call.password)
                # Harmless if the kernel stopped waiting meanwhile (nobody awaits it then).
                self._portal.call(call.answered.set)
        except BaseException:
            future.cancel()
            raise
        return _wait(future)

    def kernel_info(
        self, *, timeout: float | None = None, raise_on_error: bool = False
    ) -> Reply[KernelInfoReply]:
        """The kernel's ``kernel_info_reply`` (:meth:`KernelClient.kernel_info`)."""
        return self._call(self.client.kernel_info, timeout=timeout, raise_on_error=raise_on_error)

    def complete(
        self,
        code: str,
        cursor_pos: int | None = None,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[CompleteReply]:
        """Completions at *cursor_pos* (:meth:`KernelClient.complete`)."""
        return self._call(
            self.client.complete, code, cursor_pos, timeout=timeout, raise_on_error=raise_on_error
        )

    def inspect(
        self,
        code: str,
        cursor_pos: int | None = None,
        detail_level: int = 0,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[InspectReply]:
        """Help on the object at *cursor_pos* (:meth:`KernelClient.inspect`)."""
        return self._call(
            self.client.inspect,
            code,
            cursor_pos,
            detail_level,
            timeout=timeout,
            raise_on_error=raise_on_error,
        )

    def is_complete(
        self, code: str, *, timeout: float | None = None, raise_on_error: bool = False
    ) -> Reply[IsCompleteReply]:
        """Whether *code* is complete (:meth:`KernelClient.is_complete`)."""
        return self._call(
            self.client.is_complete, code, timeout=timeout, raise_on_error=raise_on_error
        )

    # ------------------------------------------------------------ the kernel's life

    def interrupt(self) -> None:
        """Interrupt the kernel as its spec asks (:meth:`KernelManager.interrupt_kernel`)."""
        self._call(self.manager.interrupt_kernel)

    def restart(self, *, now: bool = False) -> None:
        """Restart the kernel and wait until it is ready (:meth:`KernelManager.restart_kernel`);
        the client follows it."""
        self._call(self.manager.restart_kernel, now=now)

    def shutdown(self, *, now: bool = False) -> None:
        """Shut the kernel down (:meth:`KernelManager.shutdown_kernel`); the block's end does
        this anyway."""
        self._call(self.manager.shutdown_kernel, now=now)

    def is_alive(self) -> bool:
        """Whether the kernel process is running."""
        return self._call(self.manager.is_alive)


class _InputCall:
    """An input request handed from the event loop to the thread that waits for the execute."""

    def __init__(self, prompt: str, password: bool) -> None:
        self.prompt = prompt
        self.password = password
        self.answer = ""
        self.answered = anyio.Event()
        self.moot = False


def _wait(future: Future[T]) -> T:
    """The future's result; if the wait is interrupted, cancel the task before re-raising."""
    try:
        return future.result()
    except BaseException:
        future.cancel()  # cancels the task's scope on the event loop (anyio's portal does)
        raise


def _wait_uninterrupted(future: Future[T]) -> T:
    """The future's result, waiting through KeyboardInterrupt (re-raised once it is done).

    For cleanup that must finish, and is bounded by its own timeouts (a kernel's shutdown
    escalates to SIGKILL within its ``shutdown_wait_time`` steps).
    """
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            result = future.result()
        except KeyboardInterrupt as exc:
            interrupted = exc
            continue
        if interrupted is not None:
            raise interrupted
        return result


async def _hold(
    kernel_name: str,
    kwargs: dict[str, Any],
    *,
    task_status: anyio.abc.TaskStatus[tuple[KernelManager, KernelClient, _Release]],
) -> None:
    """Start the kernel and a ready client; hold them until released, then shut down.

    The client's own wait for readiness has the manager's ``ready_timeout`` too (the kernel
    has answered the manager by then: it is quick). Cancelled (the portal stopping after an
    interrupted start), the manager's exit still shuts the kernel down, shielded and bounded.
    """
    async with _async_start_kernel(kernel_name, **kwargs) as km, km.client() as kc:
        await kc.wait_for_ready(timeout=km.ready_timeout)
        release = _Release()
        task_status.started((km, kc, release))
        await release.event.wait()
        await km.shutdown_kernel(now=release.now)


class _Release:
    """Set when the block ends; *now* when the kernel is to be stopped without a shutdown
    request (the block ended by an exception, and the caller asked for that)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.now = False

    async def __call__(self, now: bool) -> None:
        self.now = now
        self.event.set()


@contextmanager
def _portal(backend: str, backend_options: dict[str, Any] | None) -> Iterator[BlockingPortal]:
    """anyio's ``start_blocking_portal``, safe from a ``KeyboardInterrupt`` while its loop
    starts: anyio's, interrupted then, waits forever for a loop thread nobody stops.

    The portal is entered in a thread of its own (a ``KeyboardInterrupt`` is raised only in
    the main thread); an interrupt meanwhile is held until the loop runs (a bounded wait),
    then raised inside the portal's block, which stops the loop.
    """
    portal_cm = start_blocking_portal(backend, backend_options, name="kernel-nursery")
    entered: Future[BlockingPortal] = Future()

    def enter() -> None:
        try:
            entered.set_result(portal_cm.__enter__())
        except BaseException as exc:  # the loop could not start: raised by the waiter
            entered.set_exception(exc)

    threading.Thread(target=enter, name="kernel-nursery portal start", daemon=True).start()
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            portal = entered.result()
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    with ExitStack() as stack:
        stack.push(portal_cm.__exit__)
        if interrupted is not None:
            raise interrupted
        yield portal


@contextmanager
def start_kernel(
    kernel_name: str = "python3",
    *,
    backend: Literal["asyncio", "trio"] = "asyncio",
    backend_options: dict[str, Any] | None = None,
    ready_timeout: float | None = None,
    shutdown_now_on_error: bool = False,
    **kwargs: Any,
) -> Iterator[BlockingKernel]:
    """Start a kernel for synchronous code; shut it down and stop everything when the block
    ends.

    .. code-block:: python

        from kernel_nursery.blocking import start_kernel

        with start_kernel("python3") as kernel:
            print(kernel.execute("6 * 7").results)

    The async API runs on an event loop of *backend* in a thread of its own (anyio's blocking
    portal), which works from plain scripts and from code already running inside an event
    loop (a notebook cell). Keywords are those of :func:`kernel_nursery.start_kernel`
    (manager settings and launch options). *ready_timeout* is the manager's
    :attr:`~kernel_nursery.KernelManager.ready_timeout` (its default when ``None``): the
    seconds the kernel gets to answer, at the start and at each restart.

    However the block ends, the kernel is shut down and the thread is stopped before the
    block's exception (if any) propagates, politely (a shutdown request, then the manager's
    bounded escalation) as by the async face; after an exception (``KeyboardInterrupt``
    included) at once (SIGTERM, then SIGKILL) if *shutdown_now_on_error*. A second
    ``KeyboardInterrupt`` during that bounded shutdown is held until it is done, then raised.
    Interrupted while starting, the start is cancelled, and what it had started is stopped.

    Raises:
        NoSuchKernelSpecError, LaunchError, KernelTimeoutError...: as the async
            :func:`kernel_nursery.start_kernel`.

    .. versionadded:: 0.1
    """
    if ready_timeout is not None:
        kwargs["ready_timeout"] = ready_timeout
    with _portal(backend, backend_options) as portal:
        held, (km, kc, release) = portal.start_task(_hold, kernel_name, kwargs)
        now = shutdown_now_on_error
        try:
            yield BlockingKernel(portal, km, kc)
            now = False
        finally:
            _wait_uninterrupted(portal.start_task_soon(release, now))
            _wait_uninterrupted(held)
