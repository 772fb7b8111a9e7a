"""The Jupyter message format: building, signing, serialising and checking messages."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from .._errors import InvalidSignatureError, MessageError

__all__ = ["DELIMITER", "PROTOCOL_VERSION", "Message", "Session", "json_dumps", "utcnow_iso"]

#: The version of the messaging protocol kernel-nursery speaks (Jupyter's, as jupyter_client).
PROTOCOL_VERSION = "5.4"
#: Separates the routing identities from the message proper.
DELIMITER = b"<IDS|MSG>"
#: How many recent signatures are remembered to refuse replayed messages.
_REPLAY_MEMORY = 65536


def utcnow_iso() -> str:
    """The current time as Jupyter writes it in headers: ISO 8601, UTC, with ``Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _json_default(obj: object) -> object:
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=UTC)  # Jupyter treats naive datetimes as UTC
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        raise TypeError("bytes in message content must go in buffers, not JSON")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def json_dumps(obj: object) -> bytes:
    """JSON as it goes on the wire: UTF-8, compact, dates as ISO 8601 strings."""
    return json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


@dataclass(kw_only=True)
class Message:
    """One Jupyter message.

    The five parts of the protocol (``header``, ``parent_header``, ``metadata``, ``content``,
    ``buffers``) as plain data; ``identities`` are the routing prefix it came with (empty for
    messages to and from a client's DEALER sockets).

    .. versionadded:: 0.1
    """

    header: dict[str, Any]
    parent_header: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    content: dict[str, Any] = field(default_factory=dict)
    buffers: list[bytes] = field(default_factory=list)
    identities: list[bytes] = field(default_factory=list)

    @property
    def msg_id(self) -> str:
        return str(self.header.get("msg_id", ""))

    @property
    def msg_type(self) -> str:
        return str(self.header.get("msg_type", ""))

    @property
    def parent_id(self) -> str:
        """The ``msg_id`` of the request this message answers, or ``""``."""
        return str(self.parent_header.get("msg_id", ""))

    @property
    def date(self) -> datetime | None:
        """The header's timestamp, parsed (``None`` when absent or unreadable)."""
        value = self.header.get("date")
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return None


class Session:
    """Builds, signs and checks messages for one client session.

    Args:
        key: The connection's signing key (the text in the connection file; text is used as
            its UTF-8 encoding, as Jupyter does); an empty key disables signing, as Jupyter
            allows, and is then not checked either.
        signature_scheme: ``hmac-`` followed by a :mod:`hashlib` algorithm (``hmac-sha256``).
        session_id: This session's id (a new UUID by default).
        username: Recorded in headers (the current user by default).

    Received messages are checked before anything in them is trusted: the signature is compared
    in constant time, and a signature already seen (a replayed message) is refused.

    Raises:
        ValueError: the signature scheme is not supported, or *key* is text that UTF-8 cannot
            encode (a lone surrogate).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        *,
        key: str | bytes,
        signature_scheme: str = "hmac-sha256",
        session_id: str | None = None,
        username: str | None = None,
    ) -> None:
        if isinstance(key, str):
            try:
                # UTF-8, as jupyter_client encodes keys, so that any key it accepts works.
                key = key.encode("utf-8")
            except UnicodeEncodeError:
                # Never quote the key: it is secret.
                raise ValueError("the key must be text that UTF-8 can encode") from None
        self.key = bytes(key)
        scheme, _, algorithm = signature_scheme.partition("-")
        if scheme != "hmac" or algorithm not in hashlib.algorithms_available:
            raise ValueError(f"unsupported signature scheme {signature_scheme!r}")
        self._digest = algorithm
        self.session_id = session_id or str(uuid.uuid4())
        self.username = username if username is not None else _username()
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()

    # ------------------------------------------------------------------ building

    def new_message(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        parent: Message | None = None,
        metadata: Mapping[str, Any] | None = None,
        buffers: Sequence[bytes] = (),
    ) -> Message:
        """A new message of *msg_type* from this session, answering *parent* if given."""
        header = {
            "msg_id": uuid.uuid4().hex,
            "session": self.session_id,
            "username": self.username,
            "date": utcnow_iso(),
            "msg_type": msg_type,
            "version": PROTOCOL_VERSION,
        }
        return Message(
            header=header,
            parent_header=dict(parent.header) if parent is not None else {},
            metadata=dict(metadata or {}),
            content=dict(content or {}),
            buffers=list(buffers),
        )

    # ------------------------------------------------------------------ the wire

    def sign(self, parts: Sequence[bytes]) -> bytes:
        """The hex HMAC of the four JSON parts, or ``b""`` when signing is off."""
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=self._digest)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode("ascii")

    def serialize(self, msg: Message) -> list[bytes]:
        """The frames of *msg*: identities, delimiter, signature, the four JSON parts, buffers."""
        parts = [
            json_dumps(msg.header),
            json_dumps(msg.parent_header),
            json_dumps(msg.metadata),
            json_dumps(msg.content),
        ]
        return [*msg.identities, DELIMITER, self.sign(parts), *parts, *msg.buffers]

    def deserialize(self, frames: Sequence[bytes]) -> Message:
        """Check and decode a received multipart message.

        Raises:
            InvalidSignatureError: the signature is wrong or was seen before (a replay).
            MessageError: the frames do not form a message (no delimiter, too few parts,
                JSON that does not decode, or not to objects); whatever the frames hold, no
                other error comes from them.
        """
        try:
            split = list(frames).index(DELIMITER)
        except ValueError:
            raise MessageError("no <IDS|MSG> delimiter in the frames") from None
        identities = list(frames[:split])
        rest = frames[split + 1 :]
        if len(rest) < 5:
            raise MessageError(f"a message needs 5 frames after the delimiter, got {len(rest)}")
        signature, parts, buffers = bytes(rest[0]), [bytes(p) for p in rest[1:5]], rest[5:]
        if self.key:
            expected = self.sign(parts)
            if not hmac.compare_digest(signature, expected):
                raise InvalidSignatureError("message signature does not match its content")
            if signature in self._seen:
                raise InvalidSignatureError("message signature seen before: a replayed message")
            self._remember(signature)
        # What the JSON decoder raises on bad input: ValueError (its JSONDecodeError, and
        # UnicodeDecodeError for bytes that are no text) and RecursionError (nesting deeper
        # than the recursion limit). Anything else (MemoryError, cancellation...) is not about
        # this message, and propagates.
        try:
            header, parent, metadata, content = (json.loads(p) for p in parts)
        except ValueError as exc:
            raise MessageError(f"message part is not valid JSON: {exc}") from exc
        except RecursionError:
            # The decoder recurses once per level; the traceback would be all noise.
            raise MessageError(
                "message part is JSON nested too deeply (deeper than Python's recursion limit)"
            ) from None
        for name, part in (
            ("header", header),
            ("parent_header", parent),
            ("metadata", metadata),
            ("content", content),
        ):
            if not isinstance(part, dict):
                raise MessageError(f"message {name} is not a JSON object")
        return Message(
            header=header,
            parent_header=parent,
            metadata=metadata,
            content=content,
            buffers=[bytes(b) for b in buffers],
            identities=identities,
        )

    def _remember(self, signature: bytes) -> None:
        self._seen.add(signature)
        self._seen_order.append(signature)
        if len(self._seen_order) > _REPLAY_MEMORY:
            self._seen.discard(self._seen_order.popleft())


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user database entry, as in some containers
        return "kernel-nursery"
