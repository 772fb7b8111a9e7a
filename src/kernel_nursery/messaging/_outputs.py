"""What an execution produces: typed outputs as they arrive, and the collected result."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..wire import Message

__all__ = [
    "OUTPUT_TYPES",
    "ClearOutput",
    "DisplayDataOutput",
    "ErrorOutput",
    "ExecuteResult",
    "ExecuteResultOutput",
    "Output",
    "StreamOutput",
    "UpdateDisplayDataOutput",
    "typed_output",
]

#: iopub message types that carry the outputs of an execution.
OUTPUT_TYPES = frozenset(
    {"stream", "display_data", "execute_result", "error", "update_display_data", "clear_output"}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamOutput:
    """Text the code wrote to ``stdout`` or ``stderr`` (a ``stream`` message).

    .. versionadded:: 0.1
    """

    #: ``"stdout"`` or ``"stderr"``.
    name: str
    text: str
    message: Message


@dataclass(frozen=True, kw_only=True, slots=True)
class DisplayDataOutput:
    """A rich value shown by ``display()`` (a ``display_data`` message).

    .. versionadded:: 0.1
    """

    #: Mime type -> value (``"text/plain"``, ``"image/png"``...).
    data: dict[str, Any]
    metadata: dict[str, Any]
    #: Not to be stored (``display_id`` lives here).
    transient: dict[str, Any]
    message: Message


# Twin of DisplayDataOutput: the same fields, kept a type of its own (not a subclass) so
# that a match on the output's type tells a new display from an update.
@dataclass(frozen=True, kw_only=True, slots=True)
class UpdateDisplayDataOutput:
    """A new value for an earlier display with the same ``transient["display_id"]``.

    .. versionadded:: 0.1
    """

    data: dict[str, Any]
    metadata: dict[str, Any]
    transient: dict[str, Any]
    message: Message


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecuteResultOutput:
    """The value of the cell's last expression (an ``execute_result`` message).

    .. versionadded:: 0.1
    """

    execution_count: int | None
    data: dict[str, Any]
    metadata: dict[str, Any]
    message: Message


#: The keys under which an :class:`ErrorOutput` can also be read as a mapping.
_ERROR_KEYS = ("ename", "evalue", "traceback")


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorOutput(Mapping[str, Any]):
    """An exception the code raised (an ``error`` message, or the error reply that
    :attr:`ExecuteResult.error` reads).

    Its fields read as attributes (``err.ename``) and, as the protocol's own keys, as a
    read-only mapping (``err["ename"]``, ``dict(err)``: ``ename``, ``evalue``, ``traceback``).

    .. versionadded:: 0.1
    """

    #: The exception's class name (``"ZeroDivisionError"``).
    ename: str
    #: Its message (``"division by zero"``).
    evalue: str
    #: The formatted traceback, a line per item (with the kernel's terminal colours).
    traceback: list[str]
    message: Message

    def __getitem__(self, key: str) -> Any:
        if key not in _ERROR_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_ERROR_KEYS)

    def __len__(self) -> int:
        return len(_ERROR_KEYS)


@dataclass(frozen=True, kw_only=True, slots=True)
class ClearOutput:
    """Clear the outputs shown so far; with ``wait``, only when the next one arrives.

    .. versionadded:: 0.1
    """

    wait: bool
    message: Message


#: One output of an execution, as :meth:`KernelClient.execute_stream` yields it.
Output = (
    StreamOutput
    | DisplayDataOutput
    | UpdateDisplayDataOutput
    | ExecuteResultOutput
    | ErrorOutput
    | ClearOutput
)


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def typed_output(msg: Message) -> Output:
    """The typed form of an output message (one of :data:`OUTPUT_TYPES`).

    Fields a kernel left out take empty values, so an old or sloppy kernel never breaks a
    consumer; the message itself stays available as ``.message``.
    """
    c = msg.content
    kind = msg.msg_type
    if kind == "stream":
        return StreamOutput(name=str(c.get("name", "")), text=str(c.get("text", "")), message=msg)
    if kind == "execute_result":
        count = c.get("execution_count")
        return ExecuteResultOutput(
            execution_count=count if isinstance(count, int) else None,
            data=_dict(c.get("data")),
            metadata=_dict(c.get("metadata")),
            message=msg,
        )
    if kind in ("display_data", "update_display_data"):
        cls = DisplayDataOutput if kind == "display_data" else UpdateDisplayDataOutput
        return cls(
            data=_dict(c.get("data")),
            metadata=_dict(c.get("metadata")),
            transient=_dict(c.get("transient")),
            message=msg,
        )
    if kind == "error":
        return _error_output(msg)
    if kind == "clear_output":
        return ClearOutput(wait=bool(c.get("wait", False)), message=msg)
    raise ValueError(f"{kind!r} is not an output message type")


def _error_output(msg: Message) -> ErrorOutput:
    """The error that *msg* (an ``error`` output or an error reply) describes."""
    c = msg.content
    tb = c.get("traceback")
    return ErrorOutput(
        ename=str(c.get("ename", "")),
        evalue=str(c.get("evalue", "")),
        traceback=[str(line) for line in tb] if isinstance(tb, list) else [],
        message=msg,
    )


@dataclass(kw_only=True)
class ExecuteResult:
    """What one ``execute_request`` produced: the shell reply and the iopub outputs.

    .. versionadded:: 0.1
    """

    reply: Message
    #: stream, display_data, execute_result, error, update_display_data and clear_output
    #: messages published for this request, in the order they arrived.
    outputs: list[Message] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"ok"``, ``"error"`` or ``"aborted"``, from the reply."""
        return str(self.reply.content.get("status", ""))

    @property
    def execution_count(self) -> int | None:
        count = self.reply.content.get("execution_count")
        return count if isinstance(count, int) else None

    def _stream(self, name: str) -> str:
        return "".join(
            str(m.content.get("text", ""))
            for m in self.outputs
            if m.msg_type == "stream" and m.content.get("name") == name
        )

    @property
    def stdout(self) -> str:
        """Everything the code printed to standard output."""
        return self._stream("stdout")

    @property
    def stderr(self) -> str:
        """Everything the code printed to standard error."""
        return self._stream("stderr")

    @property
    def error(self) -> ErrorOutput | None:
        """What the code raised, as the reply says, else ``None``: an :class:`ErrorOutput`,
        the shape of the streamed error outputs (``.ename``, ``.evalue``, ``.traceback``),
        which reads as a read-only mapping too (``error["ename"]``).
        """
        if self.status != "error":
            return None
        return _error_output(self.reply)

    @property
    def results(self) -> list[dict[str, Any]]:
        """The data bundles (mime type → value) of execute_result and display_data outputs."""
        return [
            dict(m.content.get("data", {}))
            for m in self.outputs
            if m.msg_type in ("execute_result", "display_data")
        ]

    @property
    def typed_outputs(self) -> list[Output]:
        """The outputs in their typed form (see :meth:`KernelClient.execute_stream`)."""
        return [typed_output(m) for m in self.outputs]
