"""What a manager sees of its kernel's activity: the last message in or out, the kernel's
busy/idle status, and how many of the manager's clients are open. What culling judges by.

Nothing here polls: the clients the manager makes sign and check every message with a
:class:`Session`, and the one given to them here notes each message as it passes, in the task
that sends or receives it. The manager's own client drops its iopub subscription once the kernel
is ready (it would decode every message the kernel publishes), so busy/idle statuses are seen
through the clients of :meth:`KernelManager.client`: work given to the kernel by a client made
otherwise (from the connection file) is not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Self

import anyio

from ..connection import ConnectionInfo
from ..messaging import KernelClient, Message, Session

__all__ = ["Activity"]


class Activity:
    """A kernel's activity, as its manager observes it.

    ``last`` is on the event loop's clock (:func:`anyio.current_time`); ``state`` is the last
    ``execution_state`` the kernel published (``starting``, ``busy``, ``idle``), or ``unknown``.
    Listeners are called (synchronously) when the kernel may have become cullable: it went
    idle, or its last open client closed.
    """

    def __init__(self) -> None:
        self.last = 0.0
        self.state = "unknown"
        self.connections = 0
        self.listeners: set[Callable[[], None]] = set()

    def touch(self) -> None:
        self.last = anyio.current_time()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def saw(self, msg: Message) -> None:
        self.touch()
        if msg.msg_type == "status":
            state = msg.content.get("execution_state")
            if isinstance(state, str) and state != self.state:
                self.state = state
                if state == "idle":
                    self._notify()

    def answered(self) -> None:
        """The kernel has just answered the manager (it is ready): it is idle, whatever status
        was seen last (the ``idle`` after a request may arrive after the subscription ends)."""
        self.touch()
        if self.state != "idle":
            self.state = "idle"
            self._notify()

    def session(self, info: ConnectionInfo) -> Session:
        """A session for a client of the kernel at *info* that reports to this activity."""
        return _WatchingSession(self, key=info["key"], signature_scheme=info["signature_scheme"])

    def opened(self) -> None:
        self.connections += 1
        self.touch()

    def closed(self) -> None:
        self.connections -= 1
        self.touch()  # a client leaving counts as activity: its user was just there
        if self.connections == 0:
            self._notify()


class _WatchingSession(Session):
    """A :class:`Session` that tells an :class:`Activity` of every message it signs or checks."""

    def __init__(self, activity: Activity, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._activity = activity

    def serialize(self, msg: Message) -> list[bytes]:
        self._activity.touch()
        return super().serialize(msg)

    def deserialize(self, frames: Sequence[bytes]) -> Message:
        msg = super().deserialize(frames)
        self._activity.saw(msg)
        return msg


class TrackedClient(KernelClient):
    """A :class:`KernelClient` made by a manager: counted as connected while it is open."""

    def __init__(self, *args: Any, activity: Activity, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._activity = activity
        self._counted = False

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._counted = True
        self._activity.opened()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._counted:
            self._counted = False
            self._activity.closed()
        await super().__aexit__(exc_type, exc, tb)
