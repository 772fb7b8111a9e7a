"""Fan-out of received messages to subscribers, without letting a slow one hold anyone up.

The client's receive loops hand each message to every interested subscriber *synchronously*
(appended to a bounded queue), so a receive loop never waits for a consumer:
a consumer that does not keep up would otherwise stall the kernel's replies for everyone.
A subscriber whose buffer is full is cut off instead (its stream is closed, and its next
receive after the buffered messages raises :class:`~kernel_nursery.SubscriptionOverflowError`):
each subscriber gets every message in order, or learns that it did not; none is lost silently,
and memory stays bounded by ``max_buffer`` per subscriber.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Self, TypeVar

import anyio

from .._errors import SubscriptionOverflowError

__all__ = ["DEFAULT_MAX_BUFFER", "Subscription", "check_max_buffer"]

T = TypeVar("T")

#: Messages a subscriber may fall behind by before it is cut off (see the module docstring).
DEFAULT_MAX_BUFFER = 10_000


def check_max_buffer(max_buffer: float) -> float:
    """*max_buffer*, if it is a whole number ≥ 1 or ``math.inf``; else ValueError."""
    if max_buffer != math.inf and (max_buffer < 1 or max_buffer != int(max_buffer)):
        raise ValueError(f"max_buffer must be a whole number >= 1 or math.inf, not {max_buffer!r}")
    return max_buffer


class Subscription(Generic[T]):
    """A stream of the messages a client receives for one subscriber, in order.

    Iterate it (``async for``) or call :meth:`receive`. Iteration ends when the source ends
    (the client closes, or a comm is closed); if the subscriber fell more than its buffer
    behind, it ends with :class:`~kernel_nursery.SubscriptionOverflowError` after the
    messages that were buffered. Leaving its ``with`` block unsubscribes.

    .. versionadded:: 0.1
    """

    def __init__(self, max_buffer: float, detach: Callable[[Subscription[T]], None]) -> None:
        self.max_buffer = check_max_buffer(max_buffer)
        self._detach = detach
        self._queue: deque[T] = deque()
        self._wake: anyio.Event | None = None
        self._ended = False  # the source ends: no more items
        self._closed = False  # the subscriber closed it
        #: Whether the subscriber fell too far behind and was cut off.
        self.overflowed = False

    # ------------------------------------------------------------ the source's side

    def _offer(self, item: T) -> None:
        """Queue *item* without waiting; cut the subscriber off if its buffer is full."""
        if self._ended:
            return
        if len(self._queue) >= self.max_buffer:
            self.overflowed = True
            self._end()
            return
        self._queue.append(item)
        if self._wake is not None:
            self._wake.set()

    def _end(self) -> None:
        """No more items: the subscriber's iteration ends once it has taken what is queued."""
        self._ended = True
        self._detach(self)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------ the subscriber's side

    async def receive(self) -> T:
        """The next message, waiting for it.

        Raises:
            anyio.EndOfStream: the source ended (the client closed, the comm was closed).
            SubscriptionOverflowError: the subscriber was cut off for falling behind.
            anyio.ClosedResourceError: the subscription was closed (its block has ended).
        """
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._queue:
                return self._queue.popleft()
            if self._ended:
                if self.overflowed:
                    raise SubscriptionOverflowError(
                        f"the subscriber fell more than {self.max_buffer} messages behind and "
                        "was cut off; subscribe again, with a larger max_buffer or a faster "
                        "consumer"
                    )
                raise anyio.EndOfStream
            if self._wake is None or self._wake.is_set():
                self._wake = anyio.Event()
            await self._wake.wait()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; queued messages are dropped. Idempotent."""
        self._closed = True
        self._queue.clear()
        self._end()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
