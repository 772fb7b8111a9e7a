"""The launcher's side of the kernel start handshake (JEP 66): a registration socket.

Instead of ports chosen by the launcher (which another program may take before the kernel
binds them), the kernel gets a connection file holding ``registration_port`` (with the
transport, ip, key and signature scheme, and Curve keys if any) and no channel ports. It binds
its five sockets on ports of its own choosing, connects to the registration socket and sends a
signed ``handshake_request`` whose content names them (``shell_port``, ``iopub_port``,
``stdin_port``, ``control_port``, ``hb_port``); the launcher answers ``handshake_reply``
(``{"status": "ok"}``) and, from then on, the kernel is reached as usual. This is the form
Posit's kernel supervisor uses; JEP 66 fixes the pattern, not the message names.

The registration socket is bound by this process (a ROUTER on a port zmq picks), so no port is
ever chosen by one process and bound by another. Messages that are not signed with the
kernel's key, or not a well-formed request, are dropped with a warning: only the kernel we
launched can register.

This module imports the wire format and the awaitable socket from ``messaging``: the
handshake is a message exchange, and writing a second signer here would be the worse duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import zmq

from .._errors import MessageError
from .._taskgroup import one_error
from ..connection import PORT_NAMES
from ..wire import AsyncSocket, Session

__all__ = ["Registration", "race_exit"]

_log = logging.getLogger("kernel_nursery.provisioning")

#: The largest message part the registration socket takes (a handshake_request is < 1 KiB).
MAX_REGISTRATION_SIZE = 64 * 1024


class Registration:
    """One registration socket, open from :meth:`open` until :meth:`close` (idempotent).

    Attributes:
        port: The registration port to write in the kernel's connection file.
    """

    def __init__(self, sock: zmq.Socket[bytes], port: int, session: Session) -> None:
        self._socket = AsyncSocket(sock)
        self.port = port
        self._session = session

    @classmethod
    def open(cls, *, ip: str, session: Session) -> Registration:
        """Bind a registration socket on *ip* (tcp), on a port zmq chooses and binds at once.

        *session* checks the requests: give the same one to every registration of a kernel
        (its restarts keep the key), so that a request captured at one start and replayed at
        the next is refused as a replay.

        Raises:
            zmq.ZMQError: the address cannot be bound.
        """
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        try:
            sock.linger = 0
            # Whoever reaches the port may send to it: zmq drops (and disconnects) a message
            # larger than any handshake_request, before it is buffered whole in our memory.
            sock.maxmsgsize = MAX_REGISTRATION_SIZE
            if ":" in ip:
                sock.ipv6 = True
            host = f"[{ip}]" if ":" in ip else ip
            port = sock.bind_to_random_port(f"tcp://{host}")
        except BaseException:
            sock.close(linger=0)
            raise
        return cls(sock, port, session)

    async def wait_for_ports(self) -> dict[str, int]:
        """Await the kernel's ``handshake_request``, answer it, and return its five ports.

        Unbounded: the caller bounds it (and races it with the kernel's exit). Cancelled, it
        leaves the socket open and no request half-answered.
        """
        while True:
            frames = await self._socket.recv_multipart()
            try:
                request = self._session.deserialize(frames)
            except MessageError as exc:
                _log.warning("Dropped a message on the registration socket: %s", exc)
                continue
            ports = _ports_of(request.msg_type, request.content)
            if ports is None:
                _log.warning(
                    "Dropped a %r on the registration socket: not a handshake_request with "
                    "five distinct ports",
                    request.msg_type,
                )
                continue
            reply = self._session.new_message("handshake_reply", {"status": "ok"}, parent=request)
            reply.identities = request.identities
            await self._socket.send_multipart(self._session.serialize(reply))
            return ports

    def close(self) -> None:
        """Close the socket (the kernel has registered, or the start is abandoned)."""
        self._socket.close()


def _ports_of(msg_type: str, content: dict[str, Any]) -> dict[str, int] | None:
    if msg_type != "handshake_request":
        return None
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        port = content.get(name)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            return None
        ports[name] = port
    if len(set(ports.values())) != len(ports):
        return None
    return ports


async def race_exit(
    registration: Registration, wait_for_exit: Callable[[], Awaitable[object]]
) -> dict[str, int] | None:
    """The kernel's ports, or ``None`` if the kernel exits (``await wait_for_exit()``) first.

    An error of either wait is raised as it is (not in an exception group); were both to fail
    at once, the group of the two.
    """
    result: list[dict[str, int]] = []
    with one_error():
        async with anyio.create_task_group() as tg:

            async def register() -> None:
                result.append(await registration.wait_for_ports())
                tg.cancel_scope.cancel()

            tg.start_soon(register)
            await wait_for_exit()
            tg.cancel_scope.cancel()
    return result[0] if result else None
