"""A request waiting for its reply: what a client and its executions share.

A module of its own so that :mod:`._execution` and :mod:`._client` both use it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ..wire import Message

__all__ = ["ErrorFactory", "Pending"]

#: Makes the exception that requests fail with while the client cannot serve them. A new one
#: each time: an exception object raised twice carries both tracebacks, and waiters would share.
ErrorFactory = Callable[[], Exception]


class Pending:
    """A request waiting for its reply."""

    def __init__(
        self, done: anyio.Event | None = None, notify: Callable[[], None] | None = None
    ) -> None:
        # Several requests may share one event: the first of them answered wakes the waiter.
        self.done = anyio.Event() if done is None else done
        self.reply: Message | None = None
        self.failure: ErrorFactory | None = None
        self._notify = notify

    @property
    def settled(self) -> bool:
        return self.reply is not None or self.failure is not None

    def resolve(self, reply: Message) -> None:
        if not self.settled:
            self.reply = reply
            self.done.set()
            if self._notify is not None:
                self._notify()

    def fail(self, failure: ErrorFactory) -> None:
        if not self.settled:
            self.failure = failure
            self.done.set()
            if self._notify is not None:
                self._notify()

    async def wait(self) -> Message:
        """The reply; or a new exception from the failure factory, if the request failed."""
        await self.done.wait()
        return self.result()

    def result(self) -> Message:
        if self.failure is not None:
            raise self.failure()
        assert self.reply is not None
        return self.reply
