"""Trio-only checks of LocalProvisioner, with trio's own testing tools (pytest-trio)."""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing

from kernel_nursery import LocalProvisioner

from ...helpers.kernels import SpecFactory
from ...helpers.notify import notifier


@pytest.mark.trio
async def test_poll_never_yields_and_wait_is_a_checkpoint(
    toy_spec: SpecFactory,
) -> None:
    """poll() answers without a checkpoint (it cannot block); wait() is a real checkpoint."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            await n.ready()
            with trio.testing.assert_no_checkpoints():
                assert await p.poll() is None
            await p.send_signal(signal.SIGTERM)
            with trio.testing.assert_checkpoints():
                assert await p.wait() == -signal.SIGTERM
            with trio.testing.assert_no_checkpoints():
                assert await p.poll() == -signal.SIGTERM
