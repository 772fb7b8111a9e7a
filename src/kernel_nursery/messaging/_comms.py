"""Comms: two-way message channels between a client and objects in the kernel (widgets...).

A comm is opened by either side with ``comm_open`` naming a *target*; both sides then send
``comm_msg`` and either ends it with ``comm_close``. The client sends on shell; the kernel
publishes on iopub, where the client's receive loop routes each message to its :class:`Comm`
by ``comm_id`` (see :class:`CommRouter`), synchronously and through a bounded buffer, as for
any subscriber (:mod:`._fanout`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import anyio

from .._errors import ChannelClosedError, KernelNurseryError, KernelStateError
from ..wire import Message
from ._fanout import Subscription, check_max_buffer

__all__ = ["Comm", "CommRouter"]

#: Sends a message on shell without waiting for a reply: msg_type, content, metadata, buffers.
Post = Callable[[str, dict[str, Any], Mapping[str, Any] | None, Sequence[bytes]], Awaitable[None]]
#: data, metadata and buffers of a comm_open.
_OpenArgs = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None, Sequence[bytes]]
#: How long closing a comm when its block ends may take (one send on shell, rarely waiting).
_CLOSE_BOUND = 5.0


class Comm:
    """One comm, opened by this client (:meth:`KernelClient.open_comm`) or by the kernel
    (:meth:`KernelClient.accept_comms`).

    Receive the kernel's ``comm_msg`` messages with :meth:`receive` or ``async for``
    (``msg.content["data"]`` and ``msg.buffers``); iteration ends when the kernel closes the
    comm, when the kernel exits (its end of the comm is gone, even if a new kernel replaces it),
    or when the client closes. Use it as an async context manager to have it closed when the
    block ends; the ``comm_close`` is then sent shielded, bounded to a few seconds.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        router: CommRouter,
        comm_id: str,
        target_name: str,
        open_message: Message | None,
        max_buffer: float,
        open_args: _OpenArgs = (None, None, ()),
    ) -> None:
        self._router = router
        self._open_args = open_args
        self.comm_id = comm_id
        self.target_name = target_name
        #: The kernel's ``comm_open`` message, for a comm the kernel opened (else ``None``).
        self.open_message = open_message
        #: The kernel's ``comm_close`` message, once the kernel has closed the comm.
        self.close_message: Message | None = None
        self._messages: Subscription[Message] = Subscription(max_buffer, self._detached)
        self._opened = open_message is not None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether either side closed the comm (or the client closed)."""
        return self._closed

    @property
    def open_data(self) -> dict[str, Any]:
        """The ``data`` of the kernel's ``comm_open``, for a comm the kernel opened."""
        return dict(self.open_message.content.get("data") or {}) if self.open_message else {}

    def _detached(self, _: Subscription[Message]) -> None:
        self._router._comms.pop(self.comm_id, None)

    async def open(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
    ) -> Self:
        """Send ``comm_open`` to the comm's target (done by ``async with`` for a comm made
        by :meth:`KernelClient.open_comm`). Messages the kernel sends at once are kept.

        Cancelled before the message went out, the comm is not opened (and not registered).
        """
        if self._opened:
            raise KernelStateError(f"comm {self.comm_id} is already open")
        self._router._register(self)
        content = {
            "comm_id": self.comm_id,
            "target_name": self.target_name,
            "data": dict(data or {}),
        }
        try:
            await self._router._post("comm_open", content, metadata, buffers)
        except BaseException:
            self._router._comms.pop(self.comm_id, None)
            raise
        self._opened = True
        return self

    async def send(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
    ) -> None:
        """Send a ``comm_msg`` to the kernel's side of the comm.

        Raises:
            ChannelClosedError: the comm (or the client) is closed, or was never opened.
        """
        self._check_usable()
        content = {"comm_id": self.comm_id, "data": dict(data or {})}
        await self._router._post("comm_msg", content, metadata, buffers)

    async def close(
        self, data: Mapping[str, Any] | None = None, *, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Close the comm: send ``comm_close`` unless it is closed already. Idempotent.

        The comm counts as closed at once, even if cancelled while sending.
        """
        if self._closed or not self._opened:
            self._closed = True
            return
        self._end()
        content = {"comm_id": self.comm_id, "data": dict(data or {})}
        await self._router._post("comm_close", content, metadata, ())

    def _check_usable(self) -> None:
        if not self._opened:
            raise ChannelClosedError(f"comm {self.comm_id} is not open: open it first")
        if self._closed:
            raise ChannelClosedError(f"comm {self.comm_id} to {self.target_name!r} is closed")

    def _end(self) -> None:
        self._closed = True
        self._messages._end()

    async def receive(self) -> Message:
        """The next ``comm_msg`` from the kernel.

        Raises:
            anyio.EndOfStream: the comm was closed (by either side) or the client closed.
            SubscriptionOverflowError: more than *max_buffer* messages were left unread.
        """
        return await self._messages.receive()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._messages.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        if not self._opened:
            data, metadata, buffers = self._open_args
            await self.open(data, metadata=metadata, buffers=buffers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.move_on_after(_CLOSE_BOUND, shield=True):
            try:
                await self.close()
            except KernelNurseryError:
                # The client closed, or the kernel died: nothing can be sent, and nothing is
                # left to close; the block's own exception, if any, must propagate as it is.
                pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._opened else "new"
        return f"<Comm {self.comm_id} target={self.target_name!r} {state}>"


class CommRouter:
    """The client's comms and comm targets; fed by the iopub receive loop."""

    def __init__(self, post: Post) -> None:
        self._post = post
        self._comms: dict[str, Comm] = {}
        self._targets: dict[str, Subscription[Comm]] = {}

    def new(self, target_name: str, open_args: _OpenArgs, *, max_buffer: float) -> Comm:
        """A comm to *target_name*, opened with *open_args* when its block begins."""
        return Comm(
            router=self,
            comm_id=uuid.uuid4().hex,
            target_name=target_name,
            open_message=None,
            max_buffer=check_max_buffer(max_buffer),
            open_args=open_args,
        )

    def _register(self, comm: Comm) -> None:
        self._comms[comm.comm_id] = comm

    def accept(self, target_name: str, *, max_buffer: float) -> Subscription[Comm]:
        if target_name in self._targets:
            raise KernelStateError(
                f"comms to target {target_name!r} are already being accepted by this client"
            )

        def detach(sub: Subscription[Comm]) -> None:
            if self._targets.get(target_name) is sub:
                del self._targets[target_name]

        self._targets[target_name] = sub = Subscription[Comm](max_buffer, detach)
        return sub

    def dispatch(self, msg: Message) -> None:
        """Route one comm message from iopub (``comm_open``, ``comm_msg``, ``comm_close``)."""
        content = msg.content
        comm_id = content.get("comm_id")
        if not isinstance(comm_id, str):
            return
        kind = msg.msg_type
        if kind == "comm_msg":
            comm = self._comms.get(comm_id)
            if comm is not None:
                comm._messages._offer(msg)
        elif kind == "comm_close":
            comm = self._comms.pop(comm_id, None)
            if comm is not None:
                comm.close_message = msg
                comm._end()
        elif kind == "comm_open":
            target = str(content.get("target_name", ""))
            acceptor = self._targets.get(target)
            if acceptor is None or comm_id in self._comms:
                return  # another client's business (or a duplicate)
            comm = Comm(
                router=self,
                comm_id=comm_id,
                target_name=target,
                open_message=msg,
                max_buffer=acceptor.max_buffer,
            )
            self._comms[comm_id] = comm
            acceptor._offer(comm)

    def end_comms(self) -> None:
        """The kernel exited: every comm ends (its iteration stops); acceptors stay."""
        for comm in list(self._comms.values()):
            comm._end()
        self._comms.clear()

    def close_all(self) -> None:
        """The client closes: every comm and acceptor ends."""
        for comm in list(self._comms.values()):
            comm._end()
        for acceptor in list(self._targets.values()):
            acceptor._end()
        self._comms.clear()
        self._targets.clear()
