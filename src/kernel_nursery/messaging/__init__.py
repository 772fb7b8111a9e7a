"""The Jupyter messaging protocol on anyio: messages, signing, sockets and a kernel client.

:class:`Session` builds, signs and checks messages in Jupyter's wire format (protocol 5.x,
HMAC-SHA256); :class:`KernelClient` talks to a running kernel over its channels, under trio or
asyncio, through a thin awaitable layer on pyzmq.
"""

from __future__ import annotations

from ._client import ExecuteResult, KernelClient
from ._wire import DELIMITER, PROTOCOL_VERSION, Message, Session

__all__ = ["DELIMITER", "PROTOCOL_VERSION", "ExecuteResult", "KernelClient", "Message", "Session"]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
