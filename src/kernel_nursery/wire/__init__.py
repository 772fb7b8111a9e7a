"""The Jupyter wire: the message format and its signing, and awaitable zmq sockets under anyio.

The bottom layer of everything that talks to a kernel. :class:`Session` builds, signs and checks
messages in Jupyter's wire format (protocol 5.x, HMAC-SHA256); :class:`AsyncSocket` is a thin
awaitable layer over a pyzmq socket, with no background task; :func:`set_curve_client_options`
makes a socket a CurveZMQ client of a kernel. The kernel client (:mod:`kernel_nursery.messaging`)
and the start handshake that provisioners run (:mod:`kernel_nursery.provisioning`) both stand on
it; it knows nothing of either. :class:`MessageError` and :class:`InvalidSignatureError` are
what :meth:`Session.deserialize` raises for a malformed or wrongly signed message.
"""

from __future__ import annotations

from .._errors import InvalidSignatureError, MessageError
from ._curve import is_encrypted, set_curve_client_options
from ._session import DELIMITER, PROTOCOL_VERSION, Message, Session, json_dumps, utcnow_iso
from ._socket import AsyncSocket

__all__ = [
    "DELIMITER",
    "PROTOCOL_VERSION",
    "AsyncSocket",
    "InvalidSignatureError",
    "Message",
    "MessageError",
    "Session",
    "is_encrypted",
    "json_dumps",
    "set_curve_client_options",
    "utcnow_iso",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
