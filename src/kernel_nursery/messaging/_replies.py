"""Typed replies: the content of each shell reply as a ``TypedDict``, and the ``Reply`` holding it.

The dictionaries are the kernel's own JSON, not copies or validated models: a type checker
follows the documented fields, and a kernel that leaves one out (an older protocol version)
breaks nothing until that field is read. Every reply may instead be an error (``status:
"error"`` with ``ename``, ``evalue`` and ``traceback``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, cast

from .._errors import KernelReplyError
from ..wire import Message

__all__ = [
    "CommInfoReply",
    "CompleteReply",
    "HistoryReply",
    "InspectReply",
    "IsCompleteReply",
    "KernelInfoReply",
    "LanguageInfo",
    "Reply",
]


class _ErrorFields(TypedDict, total=False):
    ename: str
    evalue: str
    traceback: list[str]


class LanguageInfo(TypedDict, total=False):
    """The ``language_info`` of a ``kernel_info_reply``.

    .. versionadded:: 0.1
    """

    name: str
    version: str
    mimetype: str
    file_extension: str
    pygments_lexer: str
    codemirror_mode: str | dict[str, Any]
    nbconvert_exporter: str


class KernelInfoReply(_ErrorFields):
    """Content of a ``kernel_info_reply``.

    .. versionadded:: 0.1
    """

    status: str
    protocol_version: str
    implementation: str
    implementation_version: str
    language_info: LanguageInfo
    banner: str
    debugger: NotRequired[bool]
    help_links: NotRequired[list[dict[str, str]]]
    supported_features: NotRequired[list[str]]


class CompleteReply(_ErrorFields):
    """Content of a ``complete_reply``: replace ``code[cursor_start:cursor_end]`` by a match.

    .. versionadded:: 0.1
    """

    status: str
    matches: list[str]
    cursor_start: int
    cursor_end: int
    metadata: dict[str, Any]


class InspectReply(_ErrorFields):
    """Content of an ``inspect_reply``: help on the object at the cursor, if ``found``.

    .. versionadded:: 0.1
    """

    status: str
    found: bool
    data: dict[str, Any]
    metadata: dict[str, Any]


class HistoryReply(_ErrorFields):
    """Content of a ``history_reply``: ``(session, line_number, input)`` entries, or
    ``(session, line_number, (input, output))`` when output was asked for.

    .. versionadded:: 0.1
    """

    status: str
    history: list[list[Any]]


class IsCompleteReply(_ErrorFields):
    """Content of an ``is_complete_reply``; ``status`` is ``"complete"``, ``"incomplete"``
    (then ``indent`` says how to indent the next line), ``"invalid"``, ``"unknown"``, or
    ``"error"``.

    .. versionadded:: 0.1
    """

    status: str
    indent: NotRequired[str]


class CommInfoReply(_ErrorFields):
    """Content of a ``comm_info_reply``: comm id -> ``{"target_name": ...}``.

    .. versionadded:: 0.1
    """

    status: str
    comms: dict[str, dict[str, str]]


C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Reply(Generic[C]):
    """A kernel's reply to a request, with its content typed as ``C`` (a ``TypedDict``).

    ``reply.content`` is the kernel's content dictionary itself; :attr:`message` is the whole
    message (header, parent header, metadata, buffers).

    .. versionadded:: 0.1
    """

    message: Message

    @property
    def content(self) -> C:
        return cast(C, self.message.content)

    @property
    def status(self) -> str:
        """``"ok"`` or ``"error"`` (``is_complete`` has its own values instead of ``"ok"``)."""
        return str(self.message.content.get("status", ""))

    @property
    def header(self) -> dict[str, Any]:
        return self.message.header

    @property
    def msg_type(self) -> str:
        return self.message.msg_type

    def raise_for_status(self) -> Reply[C]:
        """Return this reply, or raise :class:`~kernel_nursery.KernelReplyError` if it is an
        error reply."""
        if self.status == "error":
            raise KernelReplyError.from_content(self.msg_type, self.message.content)
        return self
