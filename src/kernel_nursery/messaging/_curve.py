"""CurveZMQ on the client's side: the socket options, and telling a kernel that ignored them.

A connection file with ``curve_publickey``/``curve_secretkey`` describes a kernel whose five
sockets are CURVE servers. Our sockets connect to it as CURVE clients: they know the kernel's
public key (so they talk to that kernel and no impostor on its port), and every byte is
encrypted. As jupyter_client does, the client reuses the connection file's pair as its own
(the kernel authenticates nobody: whoever has the file may connect, as with the HMAC key).

A kernel that does not implement CurveZMQ ignores the keys and binds its sockets in clear.
zmq then refuses the encrypted handshake: no message ever passes, and readiness would wait for
its whole timeout. :func:`wait_for_ready_encrypted` watches the shell connection's handshake
and fails at once, with a :class:`~kernel_nursery.TransportEncryptionError`, when the kernel
answers it in clear. A kernel that serves with another key than the connection info's (a stale
or rewritten connection file) fails every handshake without saying why: readiness then times
out with an :class:`~kernel_nursery.EncryptedHandshakeError`, which names the likely cause.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import anyio
import zmq
from zmq.utils.monitor import parse_monitor_message

from .._errors import EncryptedHandshakeError, KernelTimeoutError, TransportEncryptionError
from ..connection import ConnectionInfo
from ..wire import AsyncSocket, is_encrypted, set_curve_client_options

__all__ = ["wait_for_ready_encrypted"]

#: What zmq reports when the two ends of a connection speak different security mechanisms.
_MECHANISM_MISMATCH = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH


def _shell_url(info: ConnectionInfo) -> str:
    if info["transport"] == "ipc":
        return f"ipc://{info['ip']}-{info['shell_port']}"
    ip = f"[{info['ip']}]" if ":" in info["ip"] else info["ip"]
    return f"tcp://{ip}:{info['shell_port']}"


class _Handshakes:
    """What :func:`_kernel_speaks_curve` saw: encrypted handshakes that failed (the server
    closed the connection during the handshake, as a CURVE server does when the client's
    idea of its key is wrong)."""

    def __init__(self) -> None:
        self.failed = 0


async def _kernel_speaks_curve(info: ConnectionInfo, seen: _Handshakes) -> bool:
    """Connect one CURVE socket to the kernel's shell port and return how its handshake
    ends: ``True`` when one succeeds, ``False`` when the other end uses no encryption.

    Other failures (nothing listening yet, another program briefly on the port, a server
    refusing our handshake) are left to zmq's reconnection, and the wait goes on; failed
    handshakes are counted in *seen*. The caller bounds it. Cancelled, it closes its sockets
    and leaves nothing.
    """
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    monitor: AsyncSocket | None = None
    try:
        sock.linger = 0
        sock.setsockopt(zmq.RECONNECT_IVL, 10)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if ":" in info["ip"]:
            sock.ipv6 = True
        set_curve_client_options(sock, info)
        monitor = AsyncSocket(
            sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            )
        )
        sock.connect(_shell_url(info))
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and (
                event["value"] == _MECHANISM_MISMATCH
            ):
                return False
            seen.failed += 1
    finally:
        if monitor is not None:
            sock.disable_monitor()
            monitor.close()
        sock.close(linger=0)


_Reply_co = TypeVar("_Reply_co", covariant=True)


class _ReadinessClient(Protocol[_Reply_co]):
    """What :func:`wait_for_ready_encrypted` needs of a :class:`KernelClient` (a protocol, so
    that this module, which the client imports, does not import the client)."""

    @property
    def connection_info(self) -> ConnectionInfo: ...

    async def wait_for_ready(self, timeout: float | None = ...) -> _Reply_co: ...  # noqa: ASYNC109


async def wait_for_ready_encrypted(
    client: _ReadinessClient[_Reply_co],
    *,
    timeout: float | None,  # noqa: ASYNC109 (the same timeout as KernelClient.wait_for_ready)
) -> _Reply_co:
    """``client.wait_for_ready(timeout)``, failing fast when the kernel ignored its Curve keys.

    For a kernel reached in clear it is just :meth:`KernelClient.wait_for_ready`. For an
    encrypted one, the first handshake on the shell port is watched alongside: if the kernel
    answers it in clear (it does not implement CurveZMQ), the wait ends at once.

    Raises:
        TransportEncryptionError: the kernel (or, in a rare port race, another program on its
            shell port) does not speak CurveZMQ.
        EncryptedHandshakeError: the kernel did not answer within *timeout*, and every
            encrypted handshake with it failed (a key mismatch, most likely). A
            :class:`KernelTimeoutError` too.
        KernelTimeoutError, KernelDiedError: as :meth:`KernelClient.wait_for_ready`.
    """
    info = client.connection_info
    if not is_encrypted(info):
        return await client.wait_for_ready(timeout)
    seen = _Handshakes()
    reply, failure, clear, succeeded = await _wait_watching_handshakes(client, info, seen, timeout)
    if isinstance(failure, KernelTimeoutError) and seen.failed and not succeeded:
        raise EncryptedHandshakeError(
            f"{failure} over an encrypted connection: all {seen.failed} CurveZMQ handshake(s) "
            "with it failed, most likely because the connection info's curve_publickey is not "
            "the kernel's key (a stale or rewritten connection file)"
        ) from failure
    if failure is not None:
        raise failure
    if clear:
        raise TransportEncryptionError(
            "the kernel answered an encrypted connection in clear: it does not support "
            "CurveZMQ (its connection file's curve_* keys were ignored); start it with "
            "transport_encryption='disabled', or use a kernel whose spec declares "
            "metadata.supported_encryption ['curve']"
        )
    assert reply is not None
    return reply


async def _wait_watching_handshakes(
    client: _ReadinessClient[_Reply_co],
    info: ConnectionInfo,
    seen: _Handshakes,
    timeout: float | None,  # noqa: ASYNC109 (passed on to the client's own wait)
) -> tuple[_Reply_co | None, Exception | None, bool, bool]:
    """Wait for *client* to be ready while a handshake of our own on the shell port tells
    whether the kernel speaks CurveZMQ; a kernel answering in clear ends the wait at once.

    Returns:
        The reply (``None`` if the wait failed or was ended), the exception the wait raised (to
        be raised by the caller, unwrapped), whether the kernel answered in clear, and whether
        an encrypted handshake with it succeeded.
    """
    clear = succeeded = False
    reply: _Reply_co | None = None
    failure: Exception | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal clear, succeeded
        if await _kernel_speaks_curve(info, seen):
            succeeded = True
        else:
            clear = True
            scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            reply = await client.wait_for_ready(timeout)
        except Exception as exc:
            # Raised by the caller, by itself: a task group would wrap it in an ExceptionGroup.
            failure = exc
        tg.cancel_scope.cancel()
    return reply, failure, clear, succeeded
