"""``KernelClient``: talking to a running kernel over its five channels, under anyio."""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.abc
import zmq

from .._errors import (
    ChannelClosedError,
    KernelDiedError,
    KernelTimeoutError,
    MessageError,
)
from .._limits import check_free_descriptors, limit_error
from .._taskgroup import OwnedTaskGroup
from ..connection import (
    ConnectionInfo,
    PortName,
    read_connection_file,
    validate_connection_info,
)
from ..wire import AsyncSocket, Message, Session, set_curve_client_options
from ._comms import Comm, CommRouter
from ._execution import ExecuteStream, OutputHook, StdinHandler
from ._fanout import DEFAULT_MAX_BUFFER, Subscription
from ._outputs import ExecuteResult
from ._pending import ErrorFactory as _ErrorFactory
from ._pending import Pending as _Pending
from ._replies import (
    CommInfoReply,
    CompleteReply,
    HistoryReply,
    InspectReply,
    IsCompleteReply,
    KernelInfoReply,
    Reply,
)

__all__ = ["KernelClient"]

Channel = Literal["shell", "control"]
#: Returns the exit status once the kernel process has exited (a provisioner's ``wait``).
WaitForExit = Callable[[], Awaitable[int | None]]
#: Returns ``(connection_info, wait_for_exit)`` of the kernel that replaced a dead one, or
#: ``None`` when none will.
WaitForRestart = Callable[[], Awaitable[tuple[ConnectionInfo, WaitForExit] | None]]

#: The client's sockets: channel, zmq socket type, connection-info key of its port.
_CHANNELS: tuple[tuple[str, int, PortName], ...] = (
    ("shell", zmq.DEALER, "shell_port"),
    ("control", zmq.DEALER, "control_port"),
    ("iopub", zmq.SUB, "iopub_port"),
    ("stdin", zmq.DEALER, "stdin_port"),
    ("hb", zmq.REQ, "hb_port"),
)
#: The channels whose messages a receive loop dispatches.
_RECEIVING = ("shell", "control", "iopub", "stdin")
#: What a restarted kernel must share with the dead one for the client to keep its sockets.
_ENDPOINT_KEYS = (
    "transport",
    "ip",
    "shell_port",
    "iopub_port",
    "stdin_port",
    "control_port",
    "hb_port",
    "key",
    "signature_scheme",
    "curve_publickey",
    "curve_secretkey",
)

#: How long wait_for_ready gives iopub to show a first message after a kernel_info reply before
#: asking again: a SUB socket misses what is published before its subscription reaches the
#: kernel (the "slow joiner"), so a request's iopub traffic can be lost while it connects. The
#: wait starts short, since the subscription usually lands within milliseconds, and doubles.
_IOPUB_SETTLE_FIRST = 0.02
_IOPUB_SETTLE_MAX = 0.5
#: How long a client that expects the kernel's iopub_welcome (``expect_welcome``) waits for it
#: before its first execute asks kernel_info instead: the greeting normally comes within
#: milliseconds, from the kernel's iopub thread (even while its code runs); the bound only
#: keeps a wrong expectation (a restart into a kernel that does not greet) from costing more.
_WELCOME_WAIT = 2.0
#: How long wait_for_ready waits for a kernel_info reply before asking again (doubling each
#: time, up to the second value): asked, not polled, because a request can be lost (see there).
#: Long enough that a kernel still starting normally gets one request only: requests queued
#: during ipykernel 7's start-up are suspected of an execute that was never answered in CI.
_READY_RESEND_FIRST = 10.0
_READY_RESEND_MAX = 30.0
#: Reconnection backoff of the client's sockets, in milliseconds (see KernelClient._open). A
#: client usually connects before a starting kernel binds, and zmq retries after intervals that
#: double up to the second value: whatever the kernel is ready at, the connection follows within
#: that much. At 1 s, a kernel ready 320 ms after the client's first attempt was reached at
#: 630 ms (a Slurm kernel's start lost up to a quarter of a second so, issue 33). Each retry is
#: a refused connect while the kernel starts: 900 waiting sockets (300 kernels starting at once)
#: cost 0.03 CPU seconds a second at 1 s, 0.17 at 100 ms, 0.31 at 50 ms. 100 ms is the balance.
_RECONNECT_FIRST_MS = 10
_RECONNECT_MAX_MS = 100

_log = logging.getLogger("kernel_nursery.messaging")


class KernelClient:
    """A client of one kernel: its shell, iopub, stdin, control and heartbeat channels.

    Use it as an async context manager; inside the block its receive loops run in a task group
    of its own, and leaving the block (however it is left) stops them and closes the sockets.
    Requests made meanwhile then fail with :class:`~kernel_nursery.ChannelClosedError`.

    .. code-block:: python

        async with KernelClient.from_connection_file(path) as kc:
            await kc.wait_for_ready(timeout=30)
            result = await kc.execute("print(6 * 7)", timeout=10)
            assert result.stdout == "42\\n"

    Besides requests with typed replies (:meth:`kernel_info`, :meth:`complete`,
    :meth:`inspect`, :meth:`history`, :meth:`is_complete`, :meth:`comm_info`), it runs code
    collecting its outputs (:meth:`execute`) or streaming them (:meth:`execute_stream`),
    answers the code's ``input()`` (*stdin_handler*), hands every iopub message to subscribers
    (:meth:`subscribe_iopub`) and carries comms (:meth:`open_comm`, :meth:`accept_comms`).
    Its receive loops never wait for a consumer: see :meth:`subscribe_iopub` for how slow ones
    are bounded.

    Every received message is checked (:class:`Session`): one with a bad signature, a replayed
    one, or garbage frames are dropped with a warning in the log, never acted on.

    Args:
        connection_info: The kernel's connection info (validated here).
        session: The :class:`Session` to sign with; one is made from the key by default.
        wait_for_exit: Optional; an async callable that returns the kernel's exit status once
            the kernel process has exited (a kernel manager passes its provisioner's ``wait``).
            When it returns, requests still waiting fail with
            :class:`~kernel_nursery.KernelDiedError` (naming the exit status) instead of at
            their timeout, and new requests fail with it at once while no kernel runs.
        wait_for_restart: Optional, with *wait_for_exit*; an async callable that the client
            awaits after each exit of its kernel. It returns ``(connection_info,
            wait_for_exit)`` of the kernel that replaced the dead one (a restart), or ``None``
            when none will (the client then stays failed). The client follows the new kernel:
            it keeps its sockets when the transport, ip, ports, key and signature scheme are
            unchanged (zmq reconnects to the same ports by itself), and otherwise opens new
            ones on the new connection info (with a new :class:`Session` if the key or scheme
            changed). Requests made before the restart are lost (they failed when the kernel
            died; their error says so); requests made after it work, and the next
            :meth:`execute` waits again for the iopub subscription. The client takes the new
            kernel on in its own task as soon as *wait_for_restart* returns, so a request made
            before that task has run still fails. The wait is cancelled when the client
            closes; an exception raised by either callable propagates from the client's block.
        stdin_handler: Optional; an async callable ``(prompt, password) -> text`` that answers
            the kernel's ``input()`` and ``getpass()`` for every :meth:`execute` that gives
            none of its own. Without any, the kernel is told that stdin is not allowed (the
            code's ``input()`` raises in the kernel).
        expect_welcome: Whether the kernel is known to greet each new iopub subscription
            (protocol 5.4's ``iopub_welcome``, as ipykernel 7 does; a kernel manager passes
            what its own client saw). The first :meth:`execute` then waits for that greeting,
            which proves iopub connected, instead of a ``kernel_info`` round trip (falling
            back to one if no greeting comes within 2 s). Either way no output is lost.

    Raises:
        ValueError: *wait_for_restart* without *wait_for_exit*.
        ResourceLimitError: on entering, this process has no descriptors left for the
            client's sockets (nothing is left open).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        connection_info: ConnectionInfo | Mapping[str, Any],
        *,
        session: Session | None = None,
        wait_for_exit: WaitForExit | None = None,
        wait_for_restart: WaitForRestart | None = None,
        stdin_handler: StdinHandler | None = None,
        expect_welcome: bool = False,
    ) -> None:
        if wait_for_restart is not None and wait_for_exit is None:
            raise ValueError("wait_for_restart needs wait_for_exit: a restart follows an exit")
        self.connection_info: ConnectionInfo = validate_connection_info(connection_info)
        self.session = session or Session(
            key=self.connection_info["key"],
            signature_scheme=self.connection_info["signature_scheme"],
        )
        self._wait_for_exit = wait_for_exit
        self._wait_for_restart = wait_for_restart
        self._pending: dict[str, _Pending] = {}
        self._stdin_handler = stdin_handler
        #: Executions in flight, by request id: fed outputs, input requests and idle status.
        self._executions: dict[str, ExecuteStream] = {}
        #: Subscribers to the whole iopub stream.
        self._subscribers: set[Subscription[Message]] = set()
        self._comms = CommRouter(self._post_shell)
        #: Whether the kernel greeted our iopub subscription (protocol 5.4's iopub_welcome).
        self.iopub_welcomed = False
        self._expect_welcome = expect_welcome
        self._welcome_topic = f"kernel-nursery-welcome.{uuid.uuid4().hex}".encode()
        self._iopub_closed = False
        self._iopub_seen = anyio.Event()
        self._welcomed = anyio.Event()  # set with iopub_welcomed
        self._sockets: dict[str, AsyncSocket] = {}
        #: Channels whose sockets were released, opened again when a request needs them.
        self._on_demand: set[str] = set()
        self._reopened = ""  # the suffix of the DEALER sockets' identity (see _release_channels)
        # A REQ socket carries one beat at a time: concurrent heartbeat() calls take turns.
        self._hb_lock = anyio.Lock()
        self._group = OwnedTaskGroup()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closed = False
        #: Why requests fail at once (closed client, dead kernel); None while they can be made.
        self._failure: _ErrorFactory | None = None

    @classmethod
    def from_connection_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> KernelClient:
        """A client for the kernel described by the connection file at *path*.

        Raises:
            ConnectionFileError: the file is unreadable or invalid.
        """
        return cls(read_connection_file(path), **kwargs)

    # ------------------------------------------------------------------ lifecycle

    def _url(self, port_name: PortName) -> str:
        info = self.connection_info
        port = info[port_name]
        if info["transport"] == "ipc":
            return f"ipc://{info['ip']}-{port}"
        ip = f"[{info['ip']}]" if ":" in info["ip"] else info["ip"]
        return f"tcp://{ip}:{port}"

    def _open(self, name: str, kind: int, port_name: PortName) -> AsyncSocket:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(kind)
        sock.linger = 0
        # A client usually connects before a starting kernel has bound its ports; zmq then
        # retries after RECONNECT_IVL (100 ms by default). Retry soon, backing off to 100 ms.
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_FIRST_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, _RECONNECT_MAX_MS)
        if ":" in self.connection_info["ip"]:
            sock.ipv6 = True
        if kind == zmq.DEALER:
            # shell and stdin share an identity, so the kernel can route input requests to us.
            sock.setsockopt(zmq.IDENTITY, (self.session.session_id + self._reopened).encode())
        if kind == zmq.SUB:
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        set_curve_client_options(sock, self.connection_info)
        sock.connect(self._url(port_name))
        self._sockets[name] = wrapped = AsyncSocket(sock)
        return wrapped

    def _open_all(self) -> None:
        """Open every channel's socket on :attr:`connection_info`; none is left open on error."""
        check_free_descriptors("cannot open a kernel client", 2 * len(_CHANNELS))
        try:
            for name, kind, port_name in _CHANNELS:
                self._open(name, kind, port_name)
            # A topic of our own besides everything (b""): an XPUB passes a kernel only the
            # subscriptions it has not seen, so this one reaches the kernel even when other
            # clients subscribe to everything, and a kernel speaking protocol 5.4 answers it
            # with an iopub_welcome addressed to us (see _dispatch_iopub).
            iopub = self._sockets["iopub"].socket
            iopub.setsockopt(zmq.SUBSCRIBE, self._welcome_topic)
            if self._iopub_closed:
                self._unsubscribe(iopub)
        except BaseException as exc:
            self._close_sockets()
            error = limit_error(exc, "cannot open a kernel client's sockets")
            if error is not None:
                raise error from exc
            raise

    def _start_receiving(self, tg: anyio.abc.TaskGroup) -> None:
        for name in _RECEIVING:
            # The socket is handed over now: a block that ends at once may close the client
            # before a loop first runs.
            tg.start_soon(
                self._receive_loop, name, self._sockets[name], name=f"kernel-client {name} loop"
            )

    async def __aenter__(self) -> Self:
        if self._group.is_open:
            raise RuntimeError("this KernelClient is already open")
        self._open_all()
        tg = await self._group.open(self._stop)
        self._start_receiving(tg)
        if self._wait_for_exit is not None:
            tg.start_soon(self._follow_kernel, self._wait_for_exit, name="kernel-client watch")
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._fail_all(lambda: ChannelClosedError("the kernel client was closed"))
        for sub in list(self._subscribers):
            sub._end()
        self._comms.close_all()
        await self._group.close()

    def _stop(self) -> None:
        """End the client's tasks and close the sockets (run first when the client closes)."""
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def _fail_all(self, failure: _ErrorFactory) -> None:
        """Fail every waiting request, and every later one, with exceptions from *failure*
        (unless an earlier failure already holds)."""
        if self._failure is None:
            self._failure = failure
        for pending in self._pending.values():
            pending.fail(failure)
        for execution in self._executions.values():
            execution._poke()  # one that has its reply but not its idle status ends too

    async def _follow_kernel(self, wait_for_exit: WaitForExit) -> None:
        """Fail the requests when the kernel exits; with ``wait_for_restart``, take on each
        kernel that replaces it. Ends when no kernel will, or (cancelled) when the client
        closes. Nothing here polls: each step awaits one of the two callables."""
        while True:
            status = await wait_for_exit()
            self._kernel_exited(status)
            if self._wait_for_restart is None:
                return
            successor = await self._wait_for_restart()
            if successor is None:
                return
            info, wait_for_exit = successor
            self._take_over(validate_connection_info(info))

    def _kernel_exited(self, status: int | None) -> None:
        message = f"the kernel exited (status {status})"
        if self._wait_for_restart is not None:
            message += (
                "; if it is restarted, requests made before the restart are lost:"
                " make them again then"
            )
        self._fail_all(lambda: KernelDiedError(message, exit_status=status))
        # A comm's other end lived in that process: it is gone, restart or not. (Acceptors
        # stay: a kernel that replaces it may open comms of its own.)
        self._comms.end_comms()

    def _take_over(self, info: ConnectionInfo) -> None:
        """Serve the kernel that replaced the dead one, at *info*.

        Synchronous, so no other task sees the client half-switched.
        """
        if self._closed or self._tg is None:
            return
        old = self.connection_info
        if any(info.get(k) != old.get(k) for k in _ENDPOINT_KEYS):
            self._close_sockets()  # ends their receive loops and any beat under way
            self.connection_info = info
            if (info["key"], info["signature_scheme"]) != (old["key"], old["signature_scheme"]):
                self.session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
            self._open_all()
            self._start_receiving(self._tg)
        # The new kernel knows nothing of our iopub subscription until it reaches it.
        self._iopub_seen = anyio.Event()
        self._failure = None

    def close_iopub(self) -> None:
        """Stop receiving iopub messages, for a client that needs only replies (shell, control)
        and heartbeats: the subscription is dropped, so the kernel sends this client nothing
        more on iopub and its receive loop has nothing to wake up for. Idempotent.

        Executions, iopub subscriptions and comms need iopub: afterwards they raise
        :class:`~kernel_nursery.ChannelClosedError`, and subscriptions already open end.
        :meth:`wait_for_ready` asks the kernel on shell only.

        .. versionadded:: 0.1
        """
        if self._iopub_closed:
            return
        self._iopub_closed = True
        sock = self._sockets.get("iopub")
        if sock is not None and not sock.closed:
            self._unsubscribe(sock.socket)
        for sub in list(self._subscribers):
            sub._end()
        self._comms.close_all()

    def _release_channels(self, names: Collection[str]) -> None:
        """Close the sockets of channels *names* (shell, stdin, hb) until a request needs one:
        it is opened again on first use. A client kept for its control channel (a kernel
        manager's own) then holds only the descriptors it uses. iopub is closed here only
        once :meth:`close_iopub` has been called, and never reopened.

        Synchronous: no task sees the client half-trimmed.
        """
        # Sockets opened again get an identity of their own: the kernel's ROUTER ignores a
        # new connection under an identity it still holds, until it has seen the old one go.
        self._reopened = f".{uuid.uuid4().hex[:8]}"
        for name in names:
            if name == "iopub" and not self._iopub_closed:
                continue
            if name != "iopub":
                self._on_demand.add(name)
            sock = self._sockets.pop(name, None)
            if sock is not None:
                sock.close()  # its receive loop, if any, ends

    def _reopen(self, name: str) -> AsyncSocket:
        """Open channel *name*'s socket again (see :meth:`_release_channels`), with its
        receive loop."""
        assert self._tg is not None
        kind, port_name = next((k, p) for n, k, p in _CHANNELS if n == name)
        check_free_descriptors(f"cannot open a kernel client's {name} channel", 2)
        try:
            sock = self._open(name, kind, port_name)
        except zmq.ZMQError as exc:
            error = limit_error(exc, f"cannot open a kernel client's {name} channel")
            if error is not None:
                raise error from exc
            raise
        if name in _RECEIVING:
            self._tg.start_soon(self._receive_loop, name, sock, name=f"kernel-client {name} loop")
        return sock

    def _unsubscribe(self, sock: zmq.Socket[bytes]) -> None:
        sock.setsockopt(zmq.UNSUBSCRIBE, b"")
        sock.setsockopt(zmq.UNSUBSCRIBE, self._welcome_topic)

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self, name: str, sock: AsyncSocket) -> None:
        while True:
            try:
                frames = await sock.recv_multipart()
            except anyio.ClosedResourceError:
                return
            try:
                msg = self.session.deserialize(frames)
            except MessageError as exc:
                _log.warning("Dropped a message on the %s channel: %s", name, exc)
                continue
            if name == "iopub":
                self._dispatch_iopub(msg)
            elif name == "stdin":
                execution = self._executions.get(msg.parent_id)
                if execution is not None:
                    execution._feed_stdin(msg)
                else:
                    _log.debug("Input request %s matches no execution", msg.msg_id)
            else:
                pending = self._pending.get(msg.parent_id)
                if pending is not None:
                    pending.resolve(msg)
                else:
                    _log.debug("Reply %s on %s matches no request", msg.msg_type, name)

    def _dispatch_iopub(self, msg: Message) -> None:
        """Hand one iopub message to everyone interested, synchronously (never waiting)."""
        self._iopub_seen.set()
        if self._subscribers:
            for sub in tuple(self._subscribers):
                sub._offer(msg)
        kind = msg.msg_type
        if kind.startswith("comm_"):
            self._comms.dispatch(msg)
        elif kind == "iopub_welcome":
            # The kernel saw a subscription (protocol 5.4), maybe another client's: ours when
            # it names our own topic. Any iopub message proves that iopub is connected, which
            # is what readiness and the first execute wait for (_iopub_seen, set above); a
            # welcome proves it as soon as the subscription lands, before any request.
            if msg.content.get("subscription") == self._welcome_topic.decode():
                self.iopub_welcomed = True
                self._welcomed.set()
        execution = self._executions.get(msg.parent_id)
        if execution is not None:
            execution._feed_iopub(msg)

    # ------------------------------------------------------------------ requests

    def _socket(self, name: str) -> AsyncSocket:
        if self._failure is not None:
            raise self._failure()
        sock = self._sockets.get(name)
        if sock is None and name in self._on_demand and self._tg is not None and not self._closed:
            sock = self._reopen(name)
        if sock is None:
            raise ChannelClosedError("the kernel client is not open (use 'async with')")
        return sock

    async def _send(
        self,
        channel: Channel,
        msg: Message,
        done: anyio.Event | None = None,
        notify: Callable[[], None] | None = None,
    ) -> _Pending:
        pending = self._pending[msg.msg_id] = _Pending(done, notify)
        try:
            await self._socket(channel).send_multipart(self.session.serialize(msg))
        except BaseException:
            del self._pending[msg.msg_id]
            raise
        return pending

    async def request(
        self,
        channel: Channel,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Message:
        """Send a request on *channel* and return the kernel's reply.

        Args:
            timeout: Seconds to wait for the reply; ``None`` waits as long as the kernel lives.

        Raises:
            KernelTimeoutError: no reply within *timeout*.
            KernelDiedError: the kernel died first (when the client can see its process).
            ChannelClosedError: the client was closed first.
        """
        _check_timeout(timeout)
        msg = self.session.new_message(msg_type, content)
        pending = await self._send(channel, msg)
        try:
            return await _within(timeout, pending.wait(), f"{msg_type} on {channel}")
        finally:
            self._pending.pop(msg.msg_id, None)

    async def _post_shell(
        self,
        msg_type: str,
        content: dict[str, Any],
        metadata: Mapping[str, Any] | None,
        buffers: Sequence[bytes],
    ) -> None:
        """Send a message on shell that gets no reply (comm messages)."""
        msg = self.session.new_message(msg_type, content, metadata=metadata, buffers=buffers)
        await self._socket("shell").send_multipart(self.session.serialize(msg))

    async def _typed(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None,
        timeout: float | None,
        raise_on_error: bool,
    ) -> Reply[Any]:
        reply: Reply[Any] = Reply(await self.request("shell", msg_type, content, timeout=timeout))
        if raise_on_error:
            reply.raise_for_status()
        return reply

    async def kernel_info(
        self, *, timeout: float | None = None, raise_on_error: bool = False
    ) -> Reply[KernelInfoReply]:
        """The kernel's ``kernel_info_reply``: language, protocol version, banner...

        Like every typed request, an error reply (``status: "error"``) is returned as it is,
        unless *raise_on_error* asks for :class:`~kernel_nursery.KernelReplyError`.

        Raises:
            KernelTimeoutError, KernelDiedError, ChannelClosedError: as :meth:`request`.
            KernelReplyError: the kernel answered with an error, and *raise_on_error* is set.
        """
        return await self._typed("kernel_info_request", None, timeout, raise_on_error)

    async def complete(
        self,
        code: str,
        cursor_pos: int | None = None,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[CompleteReply]:
        """Completions for *code* at *cursor_pos* (the end of *code* by default).

        Raises: as :meth:`kernel_info`.

        .. versionadded:: 0.1
        """
        pos = len(code) if cursor_pos is None else cursor_pos
        content = {"code": code, "cursor_pos": pos}
        return await self._typed("complete_request", content, timeout, raise_on_error)

    async def inspect(
        self,
        code: str,
        cursor_pos: int | None = None,
        detail_level: int = 0,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[InspectReply]:
        """Help on the object at *cursor_pos* in *code*; *detail_level* 1 asks for more
        (the source, in ipykernel).

        Raises: as :meth:`kernel_info`.

        .. versionadded:: 0.1
        """
        pos = len(code) if cursor_pos is None else cursor_pos
        content = {"code": code, "cursor_pos": pos, "detail_level": detail_level}
        return await self._typed("inspect_request", content, timeout, raise_on_error)

    async def history(
        self,
        raw: bool = True,
        output: bool = False,
        hist_access_type: Literal["range", "tail", "search"] = "range",
        *,
        session: int | None = None,
        start: int | None = None,
        stop: int | None = None,
        n: int | None = None,
        pattern: str | None = None,
        unique: bool = False,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[HistoryReply]:
        """The kernel's input history (with outputs if *output*).

        ``"range"`` reads lines *start* to *stop* of *session* (0: the current one, negative:
        counting back); ``"tail"`` the last *n* lines; ``"search"`` the lines matching glob
        *pattern* (*unique*: without repeats). Options that do not apply are not sent.

        Raises: as :meth:`kernel_info`.

        .. versionadded:: 0.1
        """
        content: dict[str, Any] = {
            "raw": raw,
            "output": output,
            "hist_access_type": hist_access_type,
        }
        options = {"session": session, "start": start, "stop": stop, "n": n, "pattern": pattern}
        content.update({k: v for k, v in options.items() if v is not None})
        if hist_access_type == "search":
            content["unique"] = unique
        return await self._typed("history_request", content, timeout, raise_on_error)

    async def is_complete(
        self, code: str, *, timeout: float | None = None, raise_on_error: bool = False
    ) -> Reply[IsCompleteReply]:
        """Whether *code* is ready to run (``complete``) or needs more lines (``incomplete``,
        with the ``indent`` for the next), as a console decides on Enter.

        Raises: as :meth:`kernel_info`.

        .. versionadded:: 0.1
        """
        content = {"code": code}
        return await self._typed("is_complete_request", content, timeout, raise_on_error)

    async def comm_info(
        self,
        target_name: str | None = None,
        *,
        timeout: float | None = None,
        raise_on_error: bool = False,
    ) -> Reply[CommInfoReply]:
        """The comms open in the kernel (those to *target_name* only, if given).

        Raises: as :meth:`kernel_info`.

        .. versionadded:: 0.1
        """
        content = {} if target_name is None else {"target_name": target_name}
        return await self._typed("comm_info_request", content, timeout, raise_on_error)

    async def wait_for_ready(self, timeout: float | None = 60.0) -> Reply[KernelInfoReply]:
        """Wait until the kernel answers on shell and publishes on iopub; return its info.

        A kernel that is still starting is given until *timeout*. While it has not answered,
        ``kernel_info_request`` is sent again after 10 s, then at growing intervals (up to 30 s),
        and the first reply to any of them counts: a request can be lost for good, when the
        shell socket connected to another program's socket that held the kernel's port for a
        moment before the kernel bound it (zmq does not send it again). It is also sent again
        when the kernel answered but the iopub subscription had not yet taken effect.

        Raises:
            KernelTimeoutError: the kernel was not ready within *timeout* (``None``: no limit).
            KernelDiedError: the kernel died meanwhile (when the client can see its process).
        """

        async def first_reply() -> Message:
            answered = anyio.Event()
            sent: list[tuple[str, _Pending]] = []
            interval = _READY_RESEND_FIRST
            try:
                while True:
                    msg = self.session.new_message("kernel_info_request")
                    sent.append((msg.msg_id, await self._send("shell", msg, answered)))
                    with anyio.move_on_after(interval):
                        await answered.wait()
                        return next(p for _, p in sent if p.settled).result()
                    interval = min(interval * 2, _READY_RESEND_MAX)
            finally:
                for msg_id, _ in sent:
                    self._pending.pop(msg_id, None)

        async def ready() -> Message:
            settle = _IOPUB_SETTLE_FIRST
            while True:
                reply = await first_reply()
                if self._iopub_closed:
                    return reply
                with anyio.move_on_after(settle):
                    await self._iopub_seen.wait()
                    return reply
                settle = min(settle * 2, _IOPUB_SETTLE_MAX)

        return Reply(await _within(timeout, ready(), "readiness"))

    async def _wait_for_iopub(self) -> None:
        """Return once this client's iopub subscription has reached the kernel (any message
        received on iopub proves it), so that nothing published for its requests is lost.

        With ``expect_welcome`` the kernel's greeting is awaited (for at most
        :data:`_WELCOME_WAIT`); otherwise, or without a greeting, :meth:`wait_for_ready` asks.
        Cancelled, nothing is left behind (a ``kernel_info`` request in flight is forgotten).
        """
        seen = self._iopub_seen
        if seen.is_set():
            return
        if self._expect_welcome:
            with anyio.move_on_after(_WELCOME_WAIT):
                await seen.wait()
                return
        await self.wait_for_ready(timeout=None)

    def _execution(
        self,
        code: str,
        *,
        timeout: float | None,
        silent: bool,
        store_history: bool,
        user_expressions: Mapping[str, str] | None,
        stop_on_error: bool,
        output_hook: OutputHook | None,
        stdin_handler: StdinHandler | None,
        want_outputs: bool,
    ) -> ExecuteStream:
        _check_timeout(timeout)
        handler = stdin_handler if stdin_handler is not None else self._stdin_handler
        msg = self.session.new_message(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": store_history,
                "user_expressions": dict(user_expressions or {}),
                "allow_stdin": handler is not None,
                "stop_on_error": stop_on_error,
            },
        )
        return ExecuteStream(
            self,
            msg,
            timeout=timeout,
            output_hook=output_hook,
            stdin_handler=handler,
            want_outputs=want_outputs,
        )

    # Twin of blocking/_kernel.py BlockingKernel.execute (and its requests'): the sync face
    # repeats these signatures, since a blocking method cannot reuse an async def's.
    async def execute(
        self,
        code: str,
        *,
        timeout: float | None = None,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        stop_on_error: bool = True,
        output_hook: OutputHook | None = None,
        stdin_handler: StdinHandler | None = None,
    ) -> ExecuteResult:
        """Run *code* in the kernel; return the reply and the outputs it published.

        Returns once the kernel has replied *and* reported itself idle for this request on
        iopub, so every output is included. A client's first execute (and its first after a
        kernel restart) waits, within *timeout*, until its iopub channel is connected, so that
        no output is lost. *output_hook*, if given, is called with each output message as it
        arrives (or use :meth:`execute_stream`).

        *stdin_handler* (or else the client's) answers the code's ``input()`` and
        ``getpass()``: it is awaited with ``(prompt, password)`` and returns the text to send;
        without one the kernel is told stdin is not allowed. *timeout* covers the handler's
        time too. If the kernel stops waiting for the answer (it was interrupted, or it died),
        the handler is cancelled and the execution ends as the kernel says.

        Cancelled (or timed out), the client forgets the request and the kernel is not
        told: it runs the code to its end. If the code was waiting for input, it keeps
        waiting: interrupt the kernel (:meth:`interrupt`, or the manager's
        ``interrupt_kernel``) to free it.

        Raises:
            KernelTimeoutError, KernelDiedError, ChannelClosedError: as :meth:`request`.
            Whatever *stdin_handler* raises (the kernel then still waits for its input), or
            *output_hook* (which is not called again for this execution).
        """
        self._check_not_closed()
        stream = self._execution(
            code,
            timeout=timeout,
            silent=silent,
            store_history=store_history,
            user_expressions=user_expressions,
            stop_on_error=stop_on_error,
            output_hook=output_hook,
            stdin_handler=stdin_handler,
            want_outputs=False,
        )
        async with stream:
            return await stream.collect()

    def execute_stream(
        self,
        code: str,
        *,
        timeout: float | None = None,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        stop_on_error: bool = True,
        stdin_handler: StdinHandler | None = None,
    ) -> ExecuteStream:
        """Run *code*; iterate its typed outputs as they arrive, then its result.

        .. code-block:: python

            async with kc.execute_stream("print(1)") as outputs:
                async for out in outputs:
                    match out:
                        case StreamOutput(text=text):
                            print(text, end="")
                        case ExecuteResult(status=status):
                            print("done:", status)

        The request is sent when the ``async with`` block begins. Options, timeout,
        cancellation and stdin are as for :meth:`execute` (which runs the same code).

        .. versionadded:: 0.1
        """
        self._check_not_closed()
        return self._execution(
            code,
            timeout=timeout,
            silent=silent,
            store_history=store_history,
            user_expressions=user_expressions,
            stop_on_error=stop_on_error,
            output_hook=None,
            stdin_handler=stdin_handler,
            want_outputs=True,
        )

    # ------------------------------------------------------------------ iopub and comms

    def _check_not_closed(self) -> None:
        if self._closed:
            raise ChannelClosedError("the kernel client was closed")
        if self._iopub_closed:
            raise ChannelClosedError("this client's iopub channel was closed (close_iopub)")

    def subscribe_iopub(self, *, max_buffer: float = DEFAULT_MAX_BUFFER) -> Subscription[Message]:
        """Every message the kernel publishes on iopub from now on, until the client closes.

        .. code-block:: python

            with kc.subscribe_iopub() as messages:
                async for msg in messages:
                    print(msg.msg_type, msg.content)

        Every subscriber gets every message, in order: statuses, outputs of every client's
        requests, comm traffic, display updates from background threads. The client hands
        messages over without waiting, so a slow subscriber holds up neither the client nor
        other subscribers: it may fall up to *max_buffer* messages behind (``math.inf``: no
        limit, and no bound on memory), and past that its subscription ends with
        :class:`~kernel_nursery.SubscriptionOverflowError` after the buffered messages.
        Leaving the ``with`` block unsubscribes.

        Raises:
            ChannelClosedError: the client was closed.
            ValueError: *max_buffer* is not a whole number ≥ 1 (or ``math.inf``).

        .. versionadded:: 0.1
        """
        self._check_not_closed()
        sub = Subscription[Message](max_buffer, self._subscribers.discard)
        self._subscribers.add(sub)
        return sub

    def open_comm(
        self,
        target_name: str,
        data: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
        max_buffer: float = DEFAULT_MAX_BUFFER,
    ) -> Comm:
        """A comm to the kernel's target *target_name*, opened (``comm_open`` with *data*)
        when its ``async with`` block begins and closed when it ends.

        .. code-block:: python

            async with kc.open_comm("echo", {"hello": 1}) as comm:
                await comm.send({"ping": 1})
                reply = await comm.receive()

        The kernel's messages to the comm wait in a buffer of *max_buffer* (see
        :meth:`subscribe_iopub` for what happens past it). A kernel without the target closes
        the comm at once (ipykernel does): iteration then ends.

        Raises:
            ChannelClosedError: the client was closed.

        .. versionadded:: 0.1
        """
        self._check_not_closed()
        return self._comms.new(target_name, (data, metadata, buffers), max_buffer=max_buffer)

    def accept_comms(
        self, target_name: str, *, max_buffer: float = DEFAULT_MAX_BUFFER
    ) -> Subscription[Comm]:
        """The comms the kernel opens to *target_name* from now on, as :class:`Comm` objects.

        .. code-block:: python

            with kc.accept_comms("progress") as incoming:
                async with await incoming.receive() as comm:
                    print(comm.open_data)
                    async for msg in comm:
                        ...

        A comm the kernel opens to a target no one accepts is left alone (another client may
        serve it). Ends when the ``with`` block ends or the client closes.

        Raises:
            ChannelClosedError: the client was closed.
            KernelStateError: this client already accepts comms to *target_name*.

        .. versionadded:: 0.1
        """
        self._check_not_closed()
        return self._comms.accept(target_name, max_buffer=max_buffer)

    # ------------------------------------------------------------------ control

    async def interrupt(self, *, timeout: float | None = None) -> Message:
        """Interrupt the kernel with an ``interrupt_request`` on the control channel (what
        kernels whose spec says ``interrupt_mode: message`` expect)."""
        return await self.request("control", "interrupt_request", timeout=timeout)

    async def shutdown(self, restart: bool = False, *, timeout: float | None = None) -> Message:
        """Ask the kernel to shut down (``shutdown_request`` on control); returns its reply.

        The kernel exits after replying; waiting for that is the kernel manager's job.
        """
        return await self.request(
            "control", "shutdown_request", {"restart": restart}, timeout=timeout
        )

    # ------------------------------------------------------------------ heartbeat

    async def heartbeat(self, timeout: float = 1.0) -> bool:
        """Send one heartbeat; whether the kernel echoed it within *timeout* seconds.

        Beats take turns (a heartbeat socket carries one at a time): a call made while another
        beat is under way waits for it, and *timeout* counts from the call, that wait included;
        the caller's cancel scopes bound the wait as well.

        A beat that does not end with its echo (unanswered, cancelled at any point, or failed)
        leaves the socket waiting for that echo, so the socket is replaced by a fresh one
        before the call returns or raises: cancelling a beat leaves the client ready for the
        next, and the kernel is not affected.

        Raises:
            KernelDiedError: the kernel has died (when the client can see its process).
            ChannelClosedError: the client is not open, or was closed during the beat.
        """
        echoed = False
        with anyio.move_on_after(timeout):
            async with self._hb_lock:
                sock = self._socket("hb")
                ping = os.urandom(8)
                try:
                    await sock.send_multipart([ping])
                    echoed = await sock.recv_multipart() == [ping]
                except anyio.ClosedResourceError:
                    # The client closed, or moved to a restarted kernel's sockets, meanwhile.
                    self._socket("hb")  # raises if the client can no longer beat
                finally:
                    if not echoed:
                        self._replace_hb(sock)
        return echoed

    def _replace_hb(self, stale: AsyncSocket) -> None:
        """Close *stale*, and open a fresh heartbeat socket if *stale* was the client's own.

        Synchronous, so that cancellation cannot leave the client without a usable socket.
        """
        stale.close()
        if self._sockets.get("hb") is stale:
            self._open("hb", zmq.REQ, "hb_port")

    async def monitor_heartbeat(self, *, interval: float = 3.0, timeout: float = 3.0) -> None:
        """Beat every *interval* seconds; return when a beat is not echoed within *timeout*.

        Run it in a task to learn that a kernel stopped beating (hung, or its host gone):

        .. code-block:: python

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch, kc)  # awaits kc.monitor_heartbeat(), then reacts

        It may be cancelled at any point: the client stays usable (see :meth:`heartbeat`),
        and other calls of :meth:`heartbeat` may run alongside it.

        Raises:
            KernelDiedError, ChannelClosedError: as :meth:`heartbeat`.
        """
        # The sleep is the heartbeat protocol's own rhythm, not a poll of our state.
        while await self.heartbeat(timeout):  # noqa: ASYNC110
            await anyio.sleep(interval)


def _check_timeout(timeout: float | None) -> None:
    """Refuse a NaN timeout before anything is sent (a deadline scope refuses it only later,
    once the request is out)."""
    if timeout is not None and math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds, or None; not NaN")


async def _within(timeout: float | None, awaitable: Awaitable[Message], what: str) -> Message:
    if timeout is None:
        return await awaitable
    with anyio.move_on_after(timeout):
        return await awaitable
    raise KernelTimeoutError(f"the kernel did not answer {what} within {timeout:g} s")
