"""Tests for kernel_nursery.messaging._execution: standard input and streamed outputs, against
real kernels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest

from kernel_nursery import ExecuteResult, KernelClient, KernelDiedError, KernelTimeoutError
from kernel_nursery.messaging import (
    ClearOutput,
    DisplayDataOutput,
    ErrorOutput,
    ExecuteResultOutput,
    StdinHandler,
    StreamOutput,
    UpdateDisplayDataOutput,
)

from ..helpers.kernels import running_kernel
from .test_client import SpecFactory, fake_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

KERNELS = ["python3", "xpython"]


@asynccontextmanager
async def ready_client(
    kernel: str = "python3", *, stdin_handler: StdinHandler | None = None
) -> AsyncIterator[KernelClient]:
    """A real kernel and a ready client of it (which sees the kernel's exit)."""
    async with (
        running_kernel(kernel) as (p, info),
        KernelClient(info, wait_for_exit=p.wait, stdin_handler=stdin_handler) as kc,
    ):
        await kc.wait_for_ready(timeout=60)
        yield kc


# ---------------------------------------------------------------- standard input


@pytest.mark.parametrize("kernel", KERNELS)
async def test_input_and_getpass_are_answered_by_the_handler(kernel: str) -> None:
    """input() and getpass() in the kernel await the handler given to execute, which sees each
    prompt and whether it is a password."""
    asked: list[tuple[str, bool]] = []

    async def answer(prompt: str, password: bool) -> str:
        asked.append((prompt, password))
        return "secret" if password else "Ada"

    code = "import getpass\nname = input('name? ')\npw = getpass.getpass('pw? ')\nprint(name, pw)"
    async with ready_client(kernel) as kc:
        result = await kc.execute(code, timeout=30, stdin_handler=answer)
    assert result.status == "ok", result.error
    assert result.stdout.splitlines()[-1] == "Ada secret"
    assert asked == [("name? ", False), ("pw? ", True)]


async def test_client_handler_serves_every_execute_and_streams() -> None:
    """A handler given to the client answers input in execute and in execute_stream."""

    async def answer(prompt: str, password: bool) -> str:
        return prompt.upper()

    async with ready_client(stdin_handler=answer) as kc:
        assert (await kc.execute("print(input('a'))", timeout=30)).stdout == "A\n"
        async with kc.execute_stream("print(input('b'))", timeout=30) as outputs:
            items = [item async for item in outputs]
    assert isinstance(items[-1], ExecuteResult) and items[-1].stdout == "B\n"


async def test_refused_wrong_and_cancelled_input_leave_a_clean_client() -> None:
    """Without a handler, input() fails in the kernel at once; a handler that returns no text
    is a TypeError; cancelling an execute whose kernel waits for input forgets the request.
    Each time an interrupt frees the kernel, and the same client runs code again."""
    asked = anyio.Event()

    async def wrong(prompt: str, password: bool) -> str:
        return 42  # type: ignore[return-value]

    async def never(prompt: str, password: bool) -> str:
        asked.set()
        await anyio.sleep_forever()
        raise AssertionError

    async with ready_client() as kc:
        refused = await kc.execute("input('x')", timeout=30)
        assert refused.error is not None and refused.error["ename"] == "StdinNotImplementedError"

        # stop_on_error=False: an interrupt's KeyboardInterrupt would otherwise make ipykernel
        # abort the requests that reach it soon after.
        with pytest.raises(TypeError, match="must return text"):
            await kc.execute("input()", timeout=30, stdin_handler=wrong, stop_on_error=False)
        await kc.interrupt(timeout=30)
        assert (await kc.execute("print('free')", timeout=30)).stdout == "free\n"

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: kc.execute("input()", stdin_handler=never, stop_on_error=False)
                )
                await asked.wait()
                tg.cancel_scope.cancel()
        assert not kc._executions and not kc._pending
        await kc.interrupt(timeout=30)
        assert (await kc.execute("print('free')", timeout=30)).stdout == "free\n"


async def test_a_hanging_handler_is_cancelled_when_the_kernel_stops_waiting() -> None:
    """A handler still awaiting its answer is cancelled when the kernel is interrupted (the
    execute ends with its KeyboardInterrupt) or dies (KernelDiedError), never left hanging."""
    asked = anyio.Event()
    cancelled: list[str] = []

    async def hang(prompt: str, password: bool) -> str:
        asked.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(prompt)
        raise AssertionError

    async def when_asked(action: Callable[[], Awaitable[object]]) -> None:
        await asked.wait()
        await action()

    async with ready_client() as kc:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(when_asked, partial(kc.interrupt, timeout=30))
                result = await kc.execute("input('a')", stdin_handler=hang, stop_on_error=False)
        assert result.error is not None and result.error["ename"] == "KeyboardInterrupt"
        assert cancelled == ["a"]
        assert (await kc.execute("print('free')", timeout=30)).stdout == "free\n"

    asked = anyio.Event()
    async with (
        running_kernel() as (p, info),
        KernelClient(info, wait_for_exit=p.wait) as kc,
    ):
        await kc.wait_for_ready(timeout=60)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(when_asked, p.kill)
                with pytest.raises(KernelDiedError):
                    await kc.execute("input('b')", stdin_handler=hang)
    assert cancelled == ["a", "b"]


async def test_a_nan_timeout_is_refused_before_anything_is_sent() -> None:
    """A NaN timeout is a ValueError raised before the request goes out: nothing is left
    pending, and no coroutine is left unawaited (a RuntimeWarning, an error here)."""
    async with ready_client() as kc:
        with pytest.raises(ValueError, match="NaN"):
            await kc.execute("1", timeout=float("nan"))
        with pytest.raises(ValueError, match="NaN"):
            kc.execute_stream("1", timeout=float("nan"))
        with pytest.raises(ValueError, match="NaN"):
            await kc.kernel_info(timeout=float("nan"))
        assert not kc._pending and not kc._executions
        assert (await kc.execute("print('fine')", timeout=30)).stdout == "fine\n"


# ---------------------------------------------------------------- outputs as they arrive

RICH = """\
from IPython.display import clear_output, display
print('out', flush=True)
h = display({'text/plain': 'first'}, raw=True, display_id=True)
h.update({'text/plain': 'second'}, raw=True)
clear_output(wait=True)
6 * 7
"""


async def test_stream_yields_typed_outputs_then_the_result() -> None:
    """execute_stream yields each output typed, in order, and ends with the ExecuteResult,
    which holds the same outputs execute collects."""
    async with ready_client() as kc:
        async with kc.execute_stream(RICH, timeout=30) as outputs:
            items = [item async for item in outputs]
        collected = await kc.execute(RICH, timeout=30)
    *outs, result = items
    assert isinstance(result, ExecuteResult) and result.status == "ok"
    assert [type(o) for o in outs] == [
        StreamOutput,
        DisplayDataOutput,
        UpdateDisplayDataOutput,
        ClearOutput,
        ExecuteResultOutput,
    ]
    stream, display, update, clear, value = outs
    assert isinstance(stream, StreamOutput) and (stream.name, stream.text) == ("stdout", "out\n")
    assert isinstance(display, DisplayDataOutput) and display.data == {"text/plain": "first"}
    assert isinstance(update, UpdateDisplayDataOutput)
    assert update.transient["display_id"] == display.transient["display_id"]
    assert isinstance(clear, ClearOutput) and clear.wait
    assert isinstance(value, ExecuteResultOutput) and value.data["text/plain"] == "42"
    assert [o.message for o in outs] == result.outputs
    assert [type(o) for o in collected.typed_outputs] == [type(o) for o in outs]


@pytest.mark.parametrize("kernel", KERNELS)
async def test_outputs_arrive_while_the_code_still_runs(kernel: str, tmp_path: Path) -> None:
    """The first output is yielded while the code still runs (it waits for a file that the
    test creates only then), and errors come typed."""
    go = tmp_path / "go"
    code = (
        f"import os, time\nprint('waiting', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n1 / 0"
    )
    async with ready_client(kernel) as kc:
        async with kc.execute_stream(code, timeout=30) as outputs:
            first = await outputs.__anext__()
            assert isinstance(first, StreamOutput) and "waiting" in first.text
            go.touch()
            rest = [item async for item in outputs]
    errors = [o for o in rest if isinstance(o, ErrorOutput)]
    assert errors and "ZeroDivisionError" in errors[0].ename  # xeus-python: "<class ...>"
    assert isinstance(rest[-1], ExecuteResult) and rest[-1].status == "error"


async def test_leaving_a_stream_early_or_at_its_timeout_forgets_the_request() -> None:
    """Breaking out of a stream after its first output, or a stream whose code outlasts its
    timeout (KernelTimeoutError), leaves nothing registered; the client goes on."""

    async def drain(kc: KernelClient) -> None:
        async with kc.execute_stream("import time; time.sleep(30)", timeout=0.5) as outputs:
            async for _ in outputs:
                pass

    async with ready_client() as kc:
        async with kc.execute_stream("print(1)\nprint(2, flush=True)", timeout=30) as outputs:
            async for _ in outputs:
                break
        assert not kc._executions and not kc._pending
        assert (await kc.execute("print(3)", timeout=30)).stdout == "3\n"

        with anyio.fail_after(30), pytest.raises(KernelTimeoutError, match="execute_request"):
            await drain(kc)
        assert not kc._executions and not kc._pending
        await kc.interrupt(timeout=30)


async def test_two_tasks_iterating_one_stream_share_its_outputs() -> None:
    """Two tasks taking from one stream are both woken as outputs arrive; between them they
    get each output once, and one of them the result."""
    code = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.05)"
    taken: list[object] = []
    async with ready_client() as kc, kc.execute_stream(code, timeout=30) as outputs:

        async def take() -> None:
            async for item in outputs:
                taken.append(item)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(take)
                tg.start_soon(take)
    texts = "".join(o.text for o in taken if isinstance(o, StreamOutput))
    assert texts == "0\n1\n2\n3\n"
    assert sum(isinstance(o, ExecuteResult) for o in taken) == 1


async def test_executions_cancelled_anywhere_leave_a_clean_client(fake_spec: SpecFactory) -> None:
    """Collecting or streaming executions cut off after any delay leave nothing registered,
    and the client runs the next one (the fake kernel answers any request at once)."""
    async with fake_client(fake_spec()) as (_, kc):
        for i in range(40):
            with anyio.move_on_after(i * 0.0005):
                if i % 2:
                    await kc.execute("x")
                else:
                    async with kc.execute_stream("x") as outputs:
                        async for _ in outputs:
                            pass
            assert not kc._executions and not kc._pending
        assert (await kc.execute("x", timeout=10)).status == "ok"


async def test_an_output_hook_that_raises_fails_its_execute_only() -> None:
    """An exception in output_hook is raised by that execute, not in the client's receive
    loop: the client serves the next request."""

    def broken(msg: object) -> None:
        raise ZeroDivisionError

    async with ready_client() as kc:
        with pytest.raises(ZeroDivisionError):
            await kc.execute("print(1)", timeout=30, output_hook=broken)
        assert (await kc.execute("print(2)", timeout=30)).stdout == "2\n"
