"""Tests for kernel_nursery.messaging._fanout: subscriptions to the whole iopub stream."""

from __future__ import annotations

import math

import anyio
import pytest

from kernel_nursery import (
    ChannelClosedError,
    KernelClient,
    Message,
    SubscriptionOverflowError,
)

from ..helpers.kernels import running_kernel

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_every_subscriber_gets_every_message_until_the_client_closes() -> None:
    """Two subscribers each see, in order, all that the kernel publishes, outputs of another
    client's requests included; their iteration ends when the client closes."""
    seen: dict[str, list[Message]] = {"a": [], "b": []}
    async with running_kernel() as (p, info), anyio.create_task_group() as tg:
        async with KernelClient(info, wait_for_exit=p.wait) as kc:
            await kc.wait_for_ready(timeout=60)
            # Both subscribed before any traffic (trio starts tasks in no fixed order).
            subscribed = {"a": anyio.Event(), "b": anyio.Event()}

            async def follow(name: str) -> None:
                with kc.subscribe_iopub() as messages:
                    subscribed[name].set()
                    async for msg in messages:
                        seen[name].append(msg)

            tg.start_soon(follow, "a")
            tg.start_soon(follow, "b")
            await subscribed["a"].wait()
            await subscribed["b"].wait()
            async with KernelClient(info) as other:
                result = await other.execute("print('from another client')", timeout=30)
            assert result.stdout == "from another client\n"
            # this client's own request, so we know when the other's traffic has all arrived
            await kc.execute("pass", timeout=30)
    assert seen["a"] == seen["b"]
    kinds = [(m.msg_type, m.parent_id) for m in seen["a"]]
    request_id = result.reply.parent_id
    assert ("stream", request_id) in kinds and ("execute_input", request_id) in kinds
    states = [m.content["execution_state"] for m in seen["a"] if m.msg_type == "status"]
    assert states.count("busy") >= 2 and states[-1] == "idle"


async def test_a_slow_subscriber_is_cut_off_without_holding_anyone_up() -> None:
    """A subscriber that reads nothing falls behind its buffer: the client and a fast
    subscriber go on; the slow one gets what was buffered, then SubscriptionOverflowError."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.wait_for_ready(timeout=60)
        with kc.subscribe_iopub(max_buffer=3) as slow, kc.subscribe_iopub() as fast:
            result = await kc.execute("for i in range(20): print(i, flush=True)", timeout=30)
            assert result.stdout == "".join(f"{i}\n" for i in range(20))
            taken = [await slow.receive() for _ in range(3)]
            with pytest.raises(SubscriptionOverflowError, match="more than 3 messages behind"):
                await slow.receive()
            assert slow.overflowed and slow not in kc._subscribers
            assert taken == [await fast.receive() for _ in range(3)]
            assert fast in kc._subscribers


async def test_bad_buffer_sizes_and_closed_clients_are_refused() -> None:
    """max_buffer must be a whole number >= 1 (or infinite); a closed client refuses
    subscribers; leaving the block unsubscribes."""
    async with running_kernel() as (_, info):
        async with KernelClient(info) as kc:
            for bad in (0, -1, 2.5):
                with pytest.raises(ValueError, match="max_buffer"):
                    kc.subscribe_iopub(max_buffer=bad)
            with kc.subscribe_iopub(max_buffer=math.inf) as sub:
                assert sub in kc._subscribers
            assert not kc._subscribers
        with pytest.raises(ChannelClosedError):
            kc.subscribe_iopub()
