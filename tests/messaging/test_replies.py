"""Tests for kernel_nursery.messaging._replies: typed requests against real kernels, and error
replies returned or raised."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from kernel_nursery import KernelClient, KernelReplyError, Reply
from kernel_nursery.connection import new_connection_info, release_connection_info
from kernel_nursery.wire import Session

from ..helpers.kernels import running_kernel
from .test_client import fake_kernel_sockets

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.mark.parametrize("kernel", ["python3", "xpython"])
async def test_typed_requests_against_a_real_kernel(kernel: str) -> None:
    """kernel_info, complete, inspect, is_complete, history and comm_info get their replies,
    with the fields their types name."""
    async with running_kernel(kernel) as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        ready = await kc.wait_for_ready(timeout=60)
        assert ready.content["language_info"]["name"] == "python"
        kernel_info = await kc.kernel_info(timeout=30)
        assert kernel_info.status == "ok" and kernel_info.msg_type == "kernel_info_reply"
        assert kernel_info.content["protocol_version"].startswith("5.")

        setup = "alpha_beta = 1"
        if kernel == "python3":
            setup += "\nget_ipython().Completer.use_jedi = False  # jedi's first load is slow"
        await kc.execute(setup, timeout=30)
        completed = await kc.complete("alpha_b", timeout=30)
        assert "alpha_beta" in completed.content["matches"]
        assert (completed.content["cursor_start"], completed.content["cursor_end"]) == (0, 7)
        mid = await kc.complete("alpha_b + 1", 7, timeout=30)
        assert "alpha_beta" in mid.content["matches"]

        inspected = await kc.inspect("len", timeout=30)
        assert inspected.content["found"]
        assert "text/plain" in inspected.content["data"]

        assert (await kc.is_complete("x = 1", timeout=30)).status == "complete"
        incomplete = await kc.is_complete("for i in range(3):", timeout=30)
        assert incomplete.status == "incomplete"

        assert (await kc.comm_info(timeout=30)).content["comms"] == {}
        history = await kc.history(hist_access_type="tail", n=5, timeout=30)
        assert history.status == "ok" and isinstance(history.content["history"], list)
        if kernel == "python3":
            assert history.content["history"][-1][2].startswith("alpha_beta = 1")


async def test_error_replies_are_returned_or_raised_on_request() -> None:
    """A reply with status error is returned as it is; with raise_on_error it raises
    KernelReplyError naming the exception."""
    info = new_connection_info()
    try:
        kernel = Session(key=info["key"])
        error = {"status": "error", "ename": "ValueError", "evalue": "no", "traceback": ["tb"]}
        async with fake_kernel_sockets(info) as (shell, _), KernelClient(info) as kc:

            async def answer_one() -> None:
                request = kernel.deserialize(await shell.recv_multipart())
                reply = kernel.new_message("complete_reply", error, parent=request)
                reply.identities = request.identities
                await shell.send_multipart(kernel.serialize(reply))

            results: list[Reply[Any]] = []
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(answer_one)
                    results.append(await kc.complete("x"))
                assert results[0].status == "error" and results[0].content["ename"] == "ValueError"
                async with anyio.create_task_group() as tg:
                    tg.start_soon(answer_one)
                    with pytest.raises(KernelReplyError, match="ValueError: no") as raised:
                        await kc.complete("x", raise_on_error=True)
        assert raised.value.msg_type == "complete_reply"
        assert (raised.value.ename, raised.value.evalue, raised.value.traceback) == (
            "ValueError",
            "no",
            ["tb"],
        )
    finally:
        release_connection_info(info)
