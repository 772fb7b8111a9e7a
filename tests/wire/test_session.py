"""Tests for kernel_nursery.wire._session: the message format and its signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from jupyter_client.session import Session as JupyterSession

from kernel_nursery.messaging import DELIMITER, PROTOCOL_VERSION, Session
from kernel_nursery.wire import InvalidSignatureError, MessageError

KEY = "a" * 64
#: JSON nested 3,000 levels deep, beyond Python's recursion limit.
# Deeper than the JSON decoder of every supported Python goes: 3.11 stops at its recursion
# limit (1,000), 3.12 and 3.13 at their C recursion limits (3.13: about 10,000).
DEEP = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NON_ASCII_KEY = "clé-ключ-🔑"


def signed(session: Session, parts: list[bytes]) -> list[bytes]:
    """Frames carrying *parts* as they are, with a valid signature (a forger who has the key)."""
    return [DELIMITER, session.sign(parts), *parts]


def test_header_fields() -> None:
    """A new message has Jupyter's header: ids, session, user, UTC date with Z, type, version."""
    s = Session(key=KEY, username="me")
    msg = s.new_message("kernel_info_request")
    assert set(msg.header) == {"msg_id", "session", "username", "date", "msg_type", "version"}
    assert msg.header["session"] == s.session_id and msg.header["username"] == "me"
    assert msg.header["version"] == PROTOCOL_VERSION
    assert msg.header["date"].endswith("Z")
    assert msg.date is not None and msg.date.tzinfo is not None
    reply = s.new_message("kernel_info_reply", parent=msg)
    assert reply.parent_id == msg.msg_id


def test_round_trip_with_identities_and_buffers() -> None:
    """serialize then deserialize gives the same message back."""
    s = Session(key=KEY)
    msg = s.new_message(
        "comm_msg", {"data": {"x": [1, 2]}}, metadata={"m": 1}, buffers=[b"\x00\x01"]
    )
    msg.identities = [b"id-1"]
    frames = s.serialize(msg)
    assert frames[0] == b"id-1" and frames[1] == DELIMITER
    back = s.deserialize(frames)
    assert back == msg


def test_signature_is_hmac_sha256_of_the_four_parts() -> None:
    """The signature is the hex HMAC-SHA256 of header, parent, metadata and content."""
    s = Session(key=KEY)
    frames = s.serialize(s.new_message("x"))
    expected = hmac.new(KEY.encode(), b"".join(frames[2:6]), hashlib.sha256).hexdigest()
    assert frames[1].decode() == expected


def test_dates_in_content_are_written_as_jupyter_does() -> None:
    """datetimes in content become ISO 8601 with Z; naive ones are taken as UTC."""
    s = Session(key=KEY)
    msg = s.new_message(
        "x", {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "naive": datetime(2026, 1, 2)}
    )
    content = json.loads(s.serialize(msg)[5])
    assert content == {"when": "2026-01-02T03:04:05Z", "naive": "2026-01-02T00:00:00Z"}


def test_bytes_in_content_are_refused() -> None:
    """Binary data belongs in buffers."""
    s = Session(key=KEY)
    with pytest.raises(TypeError, match="buffers"):
        s.serialize(s.new_message("x", {"b": b"raw"}))


@pytest.mark.parametrize("part", [2, 3, 4, 5])
def test_tampered_part_is_rejected(part: int) -> None:
    """Changing any signed part makes the message invalid."""
    s = Session(key=KEY)
    frames = s.serialize(s.new_message("x", {"a": 1}))
    frames[part] = frames[part].replace(b"}", b" }", 1)
    with pytest.raises(InvalidSignatureError, match="does not match"):
        Session(key=KEY).deserialize(frames)


def test_wrong_key_is_rejected() -> None:
    """A message signed with another key is refused."""
    frames = Session(key="b" * 64).serialize(Session(key="b" * 64).new_message("x"))
    with pytest.raises(InvalidSignatureError):
        Session(key=KEY).deserialize(frames)


def test_replay_is_rejected() -> None:
    """The same signed message received twice is refused the second time."""
    s = Session(key=KEY)
    frames = s.serialize(s.new_message("x"))
    receiver = Session(key=KEY)
    receiver.deserialize(frames)
    with pytest.raises(InvalidSignatureError, match="replayed"):
        receiver.deserialize(frames)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"a", b"b"], "delimiter"),
        ([DELIMITER, b"", b"{}", b"{}"], "5 frames"),
        ([DELIMITER, b"", b"{", b"{}", b"{}", b"{}"], "not valid JSON"),
        ([DELIMITER, b"", b"[]", b"{}", b"{}", b"{}"], "header is not a JSON object"),
        ([DELIMITER, b"", b"{}", b"[]", b"{}", b"{}"], "parent_header is not a JSON object"),
        ([DELIMITER, b"", b"{}", b"{}", b"{}", b"\xff"], "not valid JSON"),
        ([DELIMITER, b"", b"{}", b"{}", b"{}", DEEP], "nested too deeply"),
    ],
)
def test_garbage_frames(frames: list[bytes], message: str) -> None:
    """Frames that are not a message raise MessageError (with signing off, to reach parsing)."""
    with pytest.raises(MessageError, match=message):
        Session(key="").deserialize(frames)


def test_unsigned_sessions_neither_sign_nor_check() -> None:
    """An empty key means no signature, as Jupyter allows."""
    s = Session(key="")
    frames = s.serialize(s.new_message("x"))
    assert frames[1] == b""
    assert s.deserialize(frames).msg_type == "x"


def test_unsupported_scheme() -> None:
    """Only hmac-<hashlib algorithm> schemes are accepted."""
    with pytest.raises(ValueError, match="rot13"):
        Session(key=KEY, signature_scheme="rot13")


def test_jupyter_client_reads_ours_and_we_read_theirs() -> None:
    """On the wire we are interchangeable with jupyter_client's Session."""
    ours = Session(key=KEY)
    theirs = JupyterSession(key=KEY.encode(), signature_scheme="hmac-sha256")
    msg = ours.new_message("execute_request", {"code": "1+1"})
    _idents, frames = theirs.feed_identities(ours.serialize(msg))
    decoded = theirs.deserialize(frames)
    assert decoded["content"] == {"code": "1+1"}
    assert decoded["header"]["msg_id"] == msg.msg_id

    reply = theirs.msg("execute_reply", {"status": "ok"}, parent=decoded)
    back = ours.deserialize(theirs.serialize(reply))
    assert back.parent_id == msg.msg_id and back.content == {"status": "ok"}


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_validly_signed_deep_json_is_a_message_error(index: int) -> None:
    """JSON nested too deeply in any part of a correctly signed message is a MessageError,
    never a RecursionError."""
    s = Session(key=KEY)
    parts = [b"{}", b"{}", b"{}", b"{}"]
    parts[index] = DEEP
    with pytest.raises(MessageError, match="nested too deeply"):
        s.deserialize(signed(s, parts))


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError], ids=lambda e: e.__name__
)
def test_errors_that_are_not_about_the_message_propagate(
    monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    """Only the decoder's errors about bad input become MessageError; an interrupt, an exit
    or memory exhaustion while decoding propagates unchanged."""
    from types import SimpleNamespace

    from kernel_nursery.wire import _session as _wire

    s = Session(key=KEY)
    frames = s.serialize(s.new_message("x"))

    def loads(_: bytes) -> object:
        raise error

    monkeypatch.setattr(_wire, "json", SimpleNamespace(loads=loads))
    with pytest.raises(error):
        Session(key=KEY).deserialize(frames)


def test_non_ascii_key_signs_as_utf8() -> None:
    """A non-ASCII key signs with its UTF-8 encoding, as jupyter_client does, and round-trips."""
    s = Session(key=NON_ASCII_KEY)
    frames = s.serialize(s.new_message("x", {"a": 1}))
    expected = hmac.new(NON_ASCII_KEY.encode("utf-8"), b"".join(frames[2:6]), hashlib.sha256)
    assert frames[1].decode() == expected.hexdigest()
    assert Session(key=NON_ASCII_KEY).deserialize(frames).content == {"a": 1}
    assert Session(key=NON_ASCII_KEY.encode("utf-8")).deserialize(frames).content == {"a": 1}


def test_non_ascii_key_interoperates_with_jupyter_client() -> None:
    """With a non-ASCII key, jupyter_client reads our messages and we read theirs."""
    ours = Session(key=NON_ASCII_KEY)
    theirs = JupyterSession(key=NON_ASCII_KEY.encode("utf-8"), signature_scheme="hmac-sha256")
    msg = ours.new_message("execute_request", {"code": "1+1"})
    _idents, frames = theirs.feed_identities(ours.serialize(msg))
    decoded = theirs.deserialize(frames)
    assert decoded["content"] == {"code": "1+1"}
    reply = theirs.msg("execute_reply", {"status": "ok"}, parent=decoded)
    assert ours.deserialize(theirs.serialize(reply)).parent_id == msg.msg_id


def test_key_without_utf8_is_refused_unquoted() -> None:
    """A key UTF-8 cannot encode (a lone surrogate) is refused, without showing the key."""
    with pytest.raises(ValueError, match="UTF-8") as info:
        Session(key="secret\udc80")
    assert "secret" not in str(info.value)
