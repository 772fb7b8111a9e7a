"""A task group owned by an object, open from its ``__aenter__`` to its ``__aexit__``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager

import anyio
import anyio.abc

__all__ = ["OwnedTaskGroup", "one_error"]


@contextmanager
def one_error() -> Iterator[None]:
    """Around an internal task group: an exception group that holds one exception (nested
    groups flattened; cancellations do not count when there is another) is raised as that
    exception, so that a caller sees the error it can catch, not a group. A group of several
    errors is raised as it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        errors = [e for e in leaves if not isinstance(e, anyio.get_cancelled_exc_class())]
        if len(errors) == 1 or (not errors and leaves):
            error = errors[0] if errors else leaves[0]
            raise error from error.__cause__  # its own cause kept; the group not shown
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


class OwnedTaskGroup:
    """Holds a task group across an owner's ``__aenter__`` and ``__aexit__``.

    On :meth:`close`, *stop* (given to :meth:`open`) runs first, inside the group, and must end
    the owner's tasks; the group is then closed **with no exception passed in**, so the
    exception raised in the owner's ``async with`` block propagates as it is rather than
    wrapped in an ExceptionGroup. An error in one of the owner's own tasks still propagates,
    loudly, as the group's.
    """

    def __init__(self) -> None:
        self._stack: AsyncExitStack | None = None

    @property
    def is_open(self) -> bool:
        return self._stack is not None

    async def open(self, stop: Callable[[], Awaitable[None] | None]) -> anyio.abc.TaskGroup:
        """Enter a new task group; *stop* (sync or async) will end its tasks on close."""
        if self._stack is not None:
            raise RuntimeError("already open")

        async def run_stop() -> None:
            result = stop()
            if result is not None:
                await result

        async with AsyncExitStack() as stack:
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(run_stop)
            self._stack = stack.pop_all()
        return tg

    async def close(self) -> None:
        """Stop the owner's tasks and leave the group. Does nothing when not open."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(None, None, None)
