"""A provisioner that cancels a scope at the N-th call into its hooks: cancellation points that
do not depend on timing.

A test arms :data:`POINT` with a cancel scope and a call number, runs an operation inside that
scope, and disarms it; :class:`CountingProvisioner` (a :class:`LocalProvisioner`) counts every
call into its async hooks, from any task (the manager's supervisor and clients call ``wait``
and ``poll`` too), and cancels the scope at the armed call, just before the real hook runs or
just after it returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import anyio

from kernel_nursery import ConnectionInfo, LocalProvisioner

P = ParamSpec("P")
T = TypeVar("T")


class CancelPoint:
    """Which call cancels which scope, and the names of the calls counted since arming."""

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.at = 0
        self.after = False
        self.calls: list[str] = []

    def arm(self, scope: anyio.CancelScope | None, at: int = 0, *, after: bool = False) -> None:
        """Count calls from now on; cancel *scope* at call number *at* (1-based), before the
        real hook runs, or after it returns when *after*. No scope: only count."""
        self.scope, self.at, self.after = scope, at, after
        self.calls = []

    def disarm(self) -> list[str]:
        """Stop cancelling; return the calls counted since :meth:`arm`."""
        self.scope = None
        return list(self.calls)

    async def step(
        self, name: str, hook: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        self.calls.append(name)
        # The scope armed now: a hook that returns later (wait) must not cancel a scope armed
        # for another operation meanwhile.
        scope = self.scope if len(self.calls) == self.at else None
        if scope is not None and not self.after:
            scope.cancel()
        result = await hook(*args, **kwargs)
        if scope is not None and self.after:
            scope.cancel()
        return result


#: The slot a test fills (one test at a time runs in a process).
POINT = CancelPoint()


class CountingProvisioner(LocalProvisioner):
    """:class:`LocalProvisioner` whose async hooks go through :data:`POINT`."""

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        return await POINT.step("pre_launch", super().pre_launch, **kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        return await POINT.step("launch_kernel", super().launch_kernel, cmd, **kwargs)

    async def post_launch(self, **kwargs: Any) -> None:
        await POINT.step("post_launch", super().post_launch, **kwargs)

    async def poll(self) -> int | None:
        return await POINT.step("poll", super().poll)

    async def wait(self) -> int | None:
        return await POINT.step("wait", super().wait)

    async def send_signal(self, signum: int) -> None:
        await POINT.step("send_signal", super().send_signal, signum)

    async def terminate(self, restart: bool = False) -> None:
        await POINT.step("terminate", super().terminate, restart)

    async def kill(self, restart: bool = False) -> None:
        await POINT.step("kill", super().kill, restart)

    async def shutdown_requested(self, restart: bool = False) -> None:
        await POINT.step("shutdown_requested", super().shutdown_requested, restart)

    async def cleanup(self, restart: bool = False) -> None:
        await POINT.step("cleanup", super().cleanup, restart)
