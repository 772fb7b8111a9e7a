"""One ``execute_request`` in flight: its outputs as they arrive, its input requests, its end.

The receive loops feed an :class:`ExecuteStream` synchronously (``_feed_iopub``,
``_feed_stdin``, and the reply through its pending request); the caller's task drives it: it
waits for the next thing to happen, answers input requests with the stdin handler in its own
task (no task is started for them), and ends with the reply once the kernel is idle again.
Collecting (:meth:`KernelClient.execute`) and streaming run this same code; collecting only
asks not to be woken for each output.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Literal, Protocol, Self

import anyio

from .._errors import KernelTimeoutError
from ..wire import AsyncSocket, Message, Session
from ._outputs import OUTPUT_TYPES, ExecuteResult, Output, typed_output
from ._pending import ErrorFactory, Pending


class _Client(Protocol):
    """What an execution uses of its :class:`KernelClient` (a protocol, so that this module,
    which the client imports, does not import the client)."""

    session: Session
    _iopub_seen: anyio.Event
    _executions: dict[str, ExecuteStream]
    _pending: dict[str, Pending]
    _failure: ErrorFactory | None

    async def _wait_for_iopub(self) -> None: ...

    async def _send(
        self,
        channel: Literal["shell", "control"],
        msg: Message,
        done: anyio.Event | None = None,
        notify: Callable[[], None] | None = None,
    ) -> Pending: ...

    def _socket(self, name: str) -> AsyncSocket: ...


__all__ = ["ExecuteStream", "OutputHook", "StdinHandler"]

#: Called with each output message as it arrives (synchronously, in the receive loop).
OutputHook = Callable[[Message], None]
#: Answers the kernel's ``input()`` and ``getpass()``: ``(prompt, password) -> text``.
StdinHandler = Callable[[str, bool], Awaitable[str]]


class ExecuteStream:
    """The outputs of one execution as they arrive, ending with its :class:`ExecuteResult`.

    Made by :meth:`KernelClient.execute_stream`; entering its ``async with`` block sends the
    request, and iterating it yields each output in its typed form (:class:`StreamOutput`,
    :class:`DisplayDataOutput`, :class:`UpdateDisplayDataOutput`, :class:`ExecuteResultOutput`,
    :class:`ErrorOutput`, :class:`ClearOutput`), then, last, the :class:`ExecuteResult` (the
    reply and every output), once the kernel has replied and is idle again.

    Leaving the block early stops listening, not the code: the kernel runs it to its end
    (interrupt it to stop it). Outputs wait in the stream until taken: an execution's outputs
    are what the code produces, so they are not bounded (as when collecting them).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: _Client,
        msg: Message,
        *,
        timeout: float | None,
        output_hook: OutputHook | None,
        stdin_handler: StdinHandler | None,
        want_outputs: bool = True,
    ) -> None:
        self._client = client
        self.request = msg
        self._timeout = timeout
        self._deadline = anyio.current_time() + timeout if timeout is not None else None
        self._output_hook = output_hook
        self._stdin_handler = stdin_handler
        self._want_outputs = want_outputs
        self._outputs: list[Message] = []
        self._taken = 0
        self._inputs: deque[Message] = deque()
        self._idle = False
        self._pending: Pending | None = None
        self._wake: anyio.Event | None = None
        self._entered = False
        self._finished = False
        self._hook_error: Exception | None = None
        self._answering: anyio.CancelScope | None = None

    # ------------------------------------------------------------ fed by the receive loops

    def _feed_iopub(self, msg: Message) -> None:
        kind = msg.msg_type
        if kind in OUTPUT_TYPES:
            self._outputs.append(msg)
            if self._output_hook is not None and self._hook_error is None:
                try:
                    self._output_hook(msg)
                except Exception as exc:
                    # Raised to the caller (by _next), not in the receive loop, which serves
                    # every request of the client.
                    self._hook_error = exc
                    self._poke()
            if self._want_outputs:
                self._poke()
        elif kind == "status" and msg.content.get("execution_state") == "idle":
            self._idle = True
            self._poke()

    def _feed_stdin(self, msg: Message) -> None:
        if msg.msg_type == "input_request":
            self._inputs.append(msg)
            self._poke()

    def _poke(self) -> None:
        if self._answering is not None and self._input_moot():
            # The kernel replied (interrupted while it waited for input) or died: nobody
            # waits for the handler's answer any more.
            self._answering.cancel()
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------ the caller's side

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("an ExecuteStream can be entered once")
        self._entered = True
        client = self._client
        with self._bounded():
            if not client._iopub_seen.is_set():
                # A new client's iopub subscription may not have reached the kernel yet, and
                # what the kernel publishes before it does is lost: this request's outputs and
                # its idle status. Make sure iopub is connected first (once per kernel).
                await client._wait_for_iopub()
            client._executions[self.request.msg_id] = self
            try:
                self._pending = await client._send("shell", self.request, notify=self._poke)
            except BaseException:
                del client._executions[self.request.msg_id]
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finished = True
        self._client._executions.pop(self.request.msg_id, None)
        self._client._pending.pop(self.request.msg_id, None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Output | ExecuteResult:
        if self._finished:
            raise StopAsyncIteration
        item = await self._next()
        if isinstance(item, ExecuteResult):
            if self._finished:
                raise StopAsyncIteration  # another task took the result
            self._finished = True
        return item

    async def collect(self) -> ExecuteResult:
        """Wait for the end; the result holds every output (those not yet taken included)."""
        self._want_outputs = False
        while True:
            item = await self._next()
            if isinstance(item, ExecuteResult):
                self._finished = True
                return item

    async def _next(self) -> Output | ExecuteResult:
        """Answer input requests until an output (if wanted) or the result is there."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("use the ExecuteStream in 'async with' before iterating it")
        while True:
            if self._hook_error is not None:
                error, self._hook_error = self._hook_error, None
                raise error
            if self._inputs:
                await self._answer(self._inputs.popleft())
                continue
            if self._want_outputs and self._taken < len(self._outputs):
                self._taken += 1
                return typed_output(self._outputs[self._taken - 1])
            if pending.failure is not None or (pending.reply is not None and self._idle):
                return ExecuteResult(reply=pending.result(), outputs=self._outputs)
            failure = self._client._failure
            if failure is not None:
                # Replied, but the kernel died (or the client closed) before it was idle.
                raise failure()
            # Tasks iterating one stream together share the event, so each is woken.
            if self._wake is None:
                self._wake = anyio.Event()
            wake = self._wake
            try:
                with self._bounded():
                    await wake.wait()
            finally:
                if self._wake is wake:
                    self._wake = None

    def _input_moot(self) -> bool:
        """Whether the kernel no longer waits for an answer: it replied, or it is gone."""
        pending = self._pending
        if pending is not None and (pending.reply is not None or pending.failure is not None):
            return True
        return self._client._failure is not None

    def _bounded(self) -> AbstractContextManager[None]:
        """A scope that ends at the deadline, where a KernelTimeoutError is raised."""
        return _deadline(self._deadline, self._timeout)

    async def _answer(self, request: Message) -> None:
        handler = self._stdin_handler
        if handler is None:
            return  # the kernel was told stdin is not allowed; it should not have asked
        if self._input_moot():
            return
        content = request.content
        with anyio.CancelScope() as answering:
            self._answering = answering
            try:
                value = await handler(str(content.get("prompt", "")), bool(content.get("password")))
            finally:
                self._answering = None
        if answering.cancel_called:
            return  # the kernel stopped waiting (see _poke): its reply or failure comes next
        if not isinstance(value, str):
            raise TypeError(f"the stdin handler must return text, not {type(value).__name__}")
        session = self._client.session
        reply = session.new_message("input_reply", {"value": value}, parent=request)
        await self._client._socket("stdin").send_multipart(session.serialize(reply))


@contextmanager
def _deadline(deadline: float | None, timeout: float | None) -> Iterator[None]:
    """``move_on_at(deadline)``, raising KernelTimeoutError when the deadline passed."""
    if deadline is None:
        yield
        return
    with anyio.CancelScope(deadline=deadline) as scope:
        yield
    if scope.cancelled_caught:
        raise KernelTimeoutError(f"the kernel did not answer execute_request within {timeout:g} s")
