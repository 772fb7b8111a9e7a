"""A provisioner that misbehaves on purpose, as a careless or hostile plug-in would.

:class:`HostileProvisioner` is a :class:`~kernel_nursery.LocalProvisioner` whose hook named by
its ``hook`` trait does its real work first, then misbehaves as its ``behaviour`` trait says:
``hang`` (never returns, though it can be cancelled), ``raise`` (a ``RuntimeError``), ``base``
(a :class:`BaseException` of its own, neither an ``Exception`` nor a cancellation) or
``garbage`` (returns what it must not). Every kernel it launches is noted in :data:`LAUNCHED`,
so that a test can check that none is left.
"""

from __future__ import annotations

from typing import Any

import anyio
from traitlets import Integer, Unicode

from kernel_nursery import LocalProvisioner
from kernel_nursery.connection import ConnectionInfo

#: The pids of the kernels launched by every HostileProvisioner of this process.
LAUNCHED: list[int] = []

#: What each hook returns when told to return garbage.
GARBAGE: dict[str, object] = {
    "poll": "running",
    "wait": "done",
    "pre_launch": None,
    "get_shutdown_wait_time": "soon",
    "get_stable_start_time": float("nan"),
    "get_provisioner_info": None,
}


class HostileBaseError(BaseException):
    """Raised by a hook told to raise a BaseException of its own."""


class HostileProvisioner(LocalProvisioner):
    """A LocalProvisioner whose hook :attr:`hook` misbehaves as :attr:`behaviour` says."""

    hook = Unicode("", config=True, help="The hook that misbehaves.")
    behaviour = Unicode("", config=True, help="hang, raise, base or garbage.")
    spare = Integer(0, config=True, help="How many calls of the hook behave before it does not.")

    def _misbehave_now(self, name: str) -> bool:
        if name != self.hook:
            return False
        if self.spare > 0:
            self.spare -= 1
            return False
        if self.behaviour == "raise":
            raise RuntimeError(f"hostile {name}")
        if self.behaviour == "base":
            raise HostileBaseError(f"hostile {name}")
        return True

    async def _after(self, name: str, result: Any) -> Any:
        """What hook *name* returns, having done its work and got *result*."""
        misbehave = self._misbehave_now(name)
        if misbehave and self.behaviour == "hang":
            await anyio.sleep_forever()
        return GARBAGE[name] if misbehave and self.behaviour == "garbage" else result

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        return await self._after("pre_launch", await super().pre_launch(**kwargs))  # type: ignore[no-any-return]

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        info = await super().launch_kernel(cmd, **kwargs)
        if self.pid is not None:
            LAUNCHED.append(self.pid)
        return await self._after("launch_kernel", info)  # type: ignore[no-any-return]

    async def post_launch(self, **kwargs: Any) -> None:
        await self._after("post_launch", await super().post_launch(**kwargs))

    async def poll(self) -> int | None:
        return await self._after("poll", await super().poll())  # type: ignore[no-any-return]

    async def wait(self) -> int | None:
        return await self._after("wait", await super().wait())  # type: ignore[no-any-return]

    async def send_signal(self, signum: int) -> None:
        await self._after("send_signal", await super().send_signal(signum))

    async def terminate(self, restart: bool = False) -> None:
        await self._after("terminate", await super().terminate(restart))

    async def kill(self, restart: bool = False) -> None:
        await self._after("kill", await super().kill(restart))

    async def shutdown_requested(self, restart: bool = False) -> None:
        await self._after("shutdown_requested", await super().shutdown_requested(restart))

    async def cleanup(self, restart: bool = False) -> None:
        await self._after("cleanup", await super().cleanup(restart))

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        return await self._after("get_provisioner_info", info)  # type: ignore[no-any-return]

    def _answer(self, name: str, value: float) -> Any:
        """What the plain hook *name* answers, having worked out *value*."""
        misbehave = self._misbehave_now(name)
        return GARBAGE[name] if misbehave and self.behaviour == "garbage" else value

    def get_shutdown_wait_time(self, recommended: float | None = None) -> float:
        return self._answer("get_shutdown_wait_time", super().get_shutdown_wait_time(recommended))  # type: ignore[no-any-return]

    def get_stable_start_time(self, recommended: float | None = None) -> float:
        return self._answer("get_stable_start_time", super().get_stable_start_time(recommended))  # type: ignore[no-any-return]
