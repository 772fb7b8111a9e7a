"""Tests for kernel_nursery.manager._manager: heartbeat supervision of a running kernel (off by
default; a hung kernel is reported, and restarted if configured)."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import pytest
from traitlets import TraitError

from kernel_nursery import KernelManager, KernelSpec

from ..helpers.kernels import pid_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

SpecFactory = Callable[..., KernelSpec]


async def test_off_by_default_and_checked() -> None:
    """Heartbeat supervision is off unless asked for; a negative interval or fewer than one
    miss is refused."""
    km = KernelManager()
    assert km.heartbeat_interval == 0 and not km.heartbeat_restart
    with pytest.raises(TraitError, match="heartbeat_interval"):
        KernelManager(heartbeat_interval=-1)
    with pytest.raises(TraitError, match="heartbeat_misses"):
        KernelManager(heartbeat_misses=0)


async def test_a_hung_kernel_is_reported_then_answers_again(fake_spec: SpecFactory) -> None:
    """A stopped kernel misses its beats: one 'unresponsive' event, no restart unless asked;
    once it runs again, the same process goes on."""
    spec = fake_spec()
    async with KernelManager(kernel_spec=spec, heartbeat_interval=0.1, heartbeat_misses=2) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with km.events() as events:
            assert km.provisioner is not None
            await km.provisioner.send_signal(signal.SIGSTOP)
            try:
                with anyio.fail_after(10):
                    assert (await events.receive()).kind == "unresponsive"
            finally:
                await km.provisioner.send_signal(signal.SIGCONT)
        assert await pid_of(km) == pid and await km.is_alive()


async def test_a_hung_kernel_is_restarted_when_configured(fake_spec: SpecFactory) -> None:
    """With heartbeat_restart, a kernel reported unresponsive is killed and started again."""
    async with KernelManager(
        kernel_spec=fake_spec(),
        heartbeat_interval=0.1,
        heartbeat_misses=2,
        heartbeat_restart=True,
        shutdown_wait_time=0.2,
    ) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with km.events() as events:
            assert km.provisioner is not None
            await km.provisioner.send_signal(signal.SIGSTOP)
            with anyio.fail_after(20):
                kinds = [(await events.receive()).kind]
                while kinds[-1] != "restarted":
                    kinds.append((await events.receive()).kind)
        assert kinds[:2] == ["unresponsive", "restarting"] and kinds[-1] == "restarted"
        assert await pid_of(km) != pid and await km.is_alive()
