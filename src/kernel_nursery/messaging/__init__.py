"""The Jupyter messaging protocol on anyio: messages, signing, sockets and a kernel client.

:class:`Session` builds, signs and checks messages in Jupyter's wire format (protocol 5.x,
HMAC-SHA256); :class:`KernelClient` talks to a running kernel over its channels, under trio or
asyncio, through a thin awaitable layer on pyzmq: requests with typed replies, executions
collected or streamed (with standard input), every iopub message to subscribers, and comms.
"""

from __future__ import annotations

from ..wire import DELIMITER, PROTOCOL_VERSION, Message, Session
from ._client import KernelClient
from ._comms import Comm
from ._execution import ExecuteStream, OutputHook, StdinHandler
from ._fanout import Subscription
from ._outputs import (
    ClearOutput,
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResult,
    ExecuteResultOutput,
    Output,
    StreamOutput,
    UpdateDisplayDataOutput,
)
from ._replies import (
    CommInfoReply,
    CompleteReply,
    HistoryReply,
    InspectReply,
    IsCompleteReply,
    KernelInfoReply,
    LanguageInfo,
    Reply,
)

__all__ = [
    "DELIMITER",
    "PROTOCOL_VERSION",
    "ClearOutput",
    "Comm",
    "CommInfoReply",
    "CompleteReply",
    "DisplayDataOutput",
    "ErrorOutput",
    "ExecuteResult",
    "ExecuteResultOutput",
    "ExecuteStream",
    "HistoryReply",
    "InspectReply",
    "IsCompleteReply",
    "KernelClient",
    "KernelInfoReply",
    "LanguageInfo",
    "Message",
    "Output",
    "OutputHook",
    "Reply",
    "Session",
    "StdinHandler",
    "StreamOutput",
    "Subscription",
    "UpdateDisplayDataOutput",
]

from .._util import fixup_module_metadata

fixup_module_metadata(__name__, globals())
del fixup_module_metadata
