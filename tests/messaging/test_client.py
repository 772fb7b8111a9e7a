"""Tests for kernel_nursery.messaging._client: KernelClient against real kernels."""

from __future__ import annotations

import itertools
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

import anyio
import pytest
import zmq

from kernel_nursery import (
    ChannelClosedError,
    KernelClient,
    KernelDiedError,
    KernelNurseryError,
    KernelSpec,
    KernelSpecManager,
    KernelTimeoutError,
    LocalProvisioner,
    Message,
    start_kernel,
)
from kernel_nursery.connection import (
    ConnectionInfo,
    new_connection_info,
    release_connection_info,
)
from kernel_nursery.messaging import _client as client_module
from kernel_nursery.wire import AsyncSocket, Session

from ..helpers.kernels import SpecFactory, running_kernel

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

KERNELS = ["python3", "xpython"]


@pytest.mark.parametrize("kernel", KERNELS)
async def test_ready_execute_outputs_and_errors(kernel: str) -> None:
    """A real kernel becomes ready and runs code: printed text, results and errors come back."""
    async with running_kernel(kernel) as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        reply = await kc.wait_for_ready(timeout=60)
        assert reply.content["status"] == "ok"
        assert reply.content["language_info"]["name"] == "python"

        streamed: list[str] = []
        ok = await kc.execute(
            "print(6 * 7)\n6 * 7", timeout=30, output_hook=lambda m: streamed.append(m.msg_type)
        )
        assert ok.status == "ok"
        assert ok.stdout == "42\n"
        assert ok.results == [{"text/plain": "42"}]
        assert ok.execution_count == 1
        # hooked as they came: stream output (kernels may split it), then the result
        assert streamed[-1] == "execute_result"
        assert set(streamed[:-1]) == {"stream"}

        err = await kc.execute("1 / 0", timeout=30)
        assert err.status == "error"
        assert err.error is not None and "ZeroDivisionError" in str(err.error["ename"])
        assert any(m.msg_type == "error" for m in err.outputs)

        assert await kc.heartbeat(timeout=10)


@pytest.mark.parametrize("kernel", KERNELS)
async def test_polite_shutdown(kernel: str) -> None:
    """shutdown_request on control makes the kernel exit by itself, with status 0."""
    async with running_kernel(kernel) as (p, info), KernelClient(info) as kc:
        await kc.wait_for_ready(timeout=60)
        reply = await kc.shutdown(timeout=30)
        assert reply.content == {"status": "ok", "restart": False}
        with anyio.fail_after(30):
            assert await p.wait() == 0


SLEEPER = "print('started', flush=True)\nimport time\ntime.sleep(60)"


async def run_interrupted(kc: KernelClient, interrupt: Any) -> Any:
    """Run SLEEPER; once it has printed 'started', call *interrupt*; return the result."""
    started = anyio.Event()
    results: list[Any] = []

    def hook(msg: Message) -> None:
        if msg.msg_type == "stream" and "started" in msg.content.get("text", ""):
            started.set()

    async def run() -> None:
        results.append(await kc.execute(SLEEPER, timeout=60, output_hook=hook))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(30):
            await started.wait()
        await interrupt()
    return results[0]


async def test_message_interrupt_stops_running_code() -> None:
    """interrupt_request on control interrupts a running time.sleep."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.wait_for_ready(timeout=60)
        result = await run_interrupted(kc, lambda: kc.interrupt(timeout=30))
        assert result.error["ename"] == "KeyboardInterrupt"
        assert await p.poll() is None


async def test_signal_interrupt_stops_running_code() -> None:
    """SIGINT through the provisioner (interrupt_mode signal) interrupts running code."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.wait_for_ready(timeout=60)
        result = await run_interrupted(kc, lambda: p.send_signal(signal.SIGINT))
        assert result.error["ename"] == "KeyboardInterrupt"
        assert await p.poll() is None


async def test_kernel_killed_mid_request_fails_at_once() -> None:
    """With the process in view, a kernel killed mid-request gives KernelDiedError at once."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.wait_for_ready(timeout=60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(p.kill)
            with anyio.fail_after(10), pytest.raises(KernelDiedError) as died:
                await kc.execute("import time; time.sleep(60)", timeout=60)
        assert died.value.exit_status == -signal.SIGKILL


async def test_kernel_killed_mid_request_times_out_without_process() -> None:
    """From a connection file alone, a dead kernel means KernelTimeoutError at the timeout."""
    async with running_kernel() as (p, info), KernelClient(info) as kc:
        await kc.wait_for_ready(timeout=60)
        await p.kill()
        await p.wait()
        with anyio.fail_after(10), pytest.raises(KernelTimeoutError, match="execute_request"):
            await kc.execute("1", timeout=0.5)
        assert not await kc.heartbeat(timeout=0.2)


async def test_stopped_kernel_stops_beating() -> None:
    """monitor_heartbeat returns once a (SIGSTOPped) kernel no longer echoes beats."""
    async with running_kernel() as (p, info), KernelClient(info) as kc:
        await kc.wait_for_ready(timeout=60)
        await p.send_signal(signal.SIGSTOP)
        try:
            with anyio.fail_after(10):
                await kc.monitor_heartbeat(interval=0.05, timeout=0.2)
        finally:
            await p.send_signal(signal.SIGCONT)


async def test_wrong_key_is_ignored_by_the_kernel() -> None:
    """A client signing with the wrong key gets no answer: the kernel drops its messages."""
    async with running_kernel() as (_, info):
        forged = dict(info, key="0" * 64)
        async with KernelClient(forged) as kc:
            with pytest.raises(KernelTimeoutError):
                await kc.kernel_info(timeout=3)


async def test_tampered_reply_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """A reply with a bad signature is dropped and logged; the genuine one is taken."""
    info = new_connection_info()
    try:
        ctx = zmq.Context.instance()
        shell = ctx.socket(zmq.ROUTER)
        shell.linger = 0
        shell.bind(f"tcp://127.0.0.1:{info['shell_port']}")
        kernel_session = Session(key=info["key"])
        forger = Session(key="f" * 64)
        async with KernelClient(info) as kc:
            async with anyio.create_task_group() as tg:
                replies: list[Message] = []

                async def ask() -> None:
                    replies.append(await kc.kernel_info(timeout=10))

                tg.start_soon(ask)
                from kernel_nursery.wire import AsyncSocket

                server = AsyncSocket(shell)
                frames = await server.recv_multipart()
                request = kernel_session.deserialize(frames)
                fake = forger.new_message("kernel_info_reply", {"fake": True}, parent=request)
                fake.identities = request.identities
                await server.send_multipart(forger.serialize(fake))
                real = kernel_session.new_message(
                    "kernel_info_reply", {"real": True}, parent=request
                )
                real.identities = request.identities
                await server.send_multipart(kernel_session.serialize(real))
            server.close()
        assert replies[0].content == {"real": True}
        assert "signature does not match" in caplog.text
    finally:
        release_connection_info(info)


async def test_closing_the_client_fails_pending_requests() -> None:
    """A request still waiting when its client closes gets ChannelClosedError, not a hang."""
    info = new_connection_info()  # nothing listens: the request waits forever
    try:
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            async with KernelClient(info) as kc:

                async def ask() -> None:
                    try:
                        await kc.kernel_info()
                    except ChannelClosedError as exc:
                        errors.append(exc)

                tg.start_soon(ask)
                await anyio.wait_all_tasks_blocked()
        assert len(errors) == 1
        with pytest.raises(ChannelClosedError):
            await kc.kernel_info()
    finally:
        release_connection_info(info)


async def test_exception_in_block_propagates_unwrapped() -> None:
    """An exception raised inside ``async with KernelClient`` is the one that propagates."""
    info = new_connection_info()
    try:
        with pytest.raises(KeyError, match="mine"):
            async with KernelClient(info):
                raise KeyError("mine")
    finally:
        release_connection_info(info)


async def test_fresh_clients_execute_at_once_without_losing_output() -> None:
    """A new client's first execute never loses its outputs to iopub's slow subscription
    (it used to wait forever for an idle status published before it subscribed)."""
    async with running_kernel() as (p, info):
        async with KernelClient(info, wait_for_exit=p.wait) as kc:
            await kc.wait_for_ready(timeout=60)
        for i in range(100):
            async with KernelClient(info, wait_for_exit=p.wait) as kc:
                result = await kc.execute(f"print({i})", timeout=30)
                assert result.stdout == f"{i}\n"


# ---------------------------------------------------------------- fresh exceptions


def tb_length(exc: BaseException) -> int:
    """How many frames *exc*'s traceback holds."""
    return len(traceback.extract_tb(exc.__traceback__))


async def failures(request: Callable[[], Awaitable[object]], times: int = 2) -> list[BaseException]:
    """Await *request* *times* times, one after the other; return what each raised."""
    errors: list[BaseException] = []
    for _ in range(times):
        try:
            await request()
        except KernelNurseryError as exc:
            errors.append(exc)
    assert len(errors) == times, "a request succeeded"
    return errors


def all_distinct(errors: Sequence[BaseException]) -> bool:
    """Whether no exception object appears twice in *errors*."""
    return all(a is not b for a, b in itertools.combinations(errors, 2))


async def launch(p: LocalProvisioner) -> ConnectionInfo:
    """The manager's launch sequence: pre_launch, launch_kernel, post_launch."""
    kw = await p.pre_launch()
    info = await p.launch_kernel(kw.pop("cmd"), **kw)
    await p.post_launch(**kw)
    return info


async def test_closed_client_raises_a_fresh_error_each_time() -> None:
    """Each request on a closed client raises a new ChannelClosedError whose traceback has not
    grown from earlier raises."""
    info = new_connection_info()
    try:
        async with KernelClient(info) as kc:
            pass
        first, second = await failures(kc.kernel_info)
        assert isinstance(first, ChannelClosedError) and isinstance(second, ChannelClosedError)
        assert first is not second
        assert tb_length(second) <= tb_length(first)
    finally:
        release_connection_info(info)


async def test_waiters_at_close_get_distinct_errors() -> None:
    """Requests waiting when the client closes each get their own ChannelClosedError."""
    info = new_connection_info()  # nothing listens: the requests wait until the close
    try:
        errors: list[BaseException] = []

        async def ask(kc: KernelClient) -> None:
            with pytest.raises(ChannelClosedError) as caught:
                await kc.kernel_info()
            errors.append(caught.value)

        async with anyio.create_task_group() as tg, KernelClient(info) as kc:
            for _ in range(3):
                tg.start_soon(ask, kc)
            await anyio.wait_all_tasks_blocked()
        assert len(errors) == 3 and all_distinct(errors)
        assert len({tb_length(e) for e in errors}) == 1
    finally:
        release_connection_info(info)


async def test_dead_kernel_fails_waiters_and_later_requests_with_fresh_errors(
    fake_spec: SpecFactory,
) -> None:
    """When the kernel dies, each waiting request and each later request gets its own
    KernelDiedError, none with a traceback grown by another raise."""
    async with LocalProvisioner(kernel_spec=fake_spec("--mute-control")) as p:
        info = await launch(p)
        async with KernelClient(info, wait_for_exit=p.wait) as kc:
            await kc.wait_for_ready(timeout=30)
            errors: list[BaseException] = []

            async def ask() -> None:
                with pytest.raises(KernelDiedError) as caught:
                    await kc.interrupt()  # never answered by this kernel
                errors.append(caught.value)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for _ in range(3):
                        tg.start_soon(ask)
                    await anyio.wait_all_tasks_blocked()
                    await p.kill()
            assert len(errors) == 3 and all_distinct(errors)
            assert {e.exit_status for e in errors if isinstance(e, KernelDiedError)} == {
                -signal.SIGKILL
            }
            later = await failures(kc.kernel_info)
            assert all(isinstance(e, KernelDiedError) for e in later)
            assert all_distinct(errors + later)
            assert tb_length(later[1]) <= tb_length(later[0])


# ---------------------------------------------------------------- heartbeat


@asynccontextmanager
async def stopped(p: LocalProvisioner) -> AsyncIterator[None]:
    """SIGSTOP the kernel for the block; SIGCONT it however the block ends."""
    await p.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        await p.send_signal(signal.SIGCONT)


@asynccontextmanager
async def fake_client(
    spec: KernelSpec,
) -> AsyncIterator[tuple[LocalProvisioner, KernelClient]]:
    """A fake kernel and a ready client of it."""
    async with LocalProvisioner(kernel_spec=spec) as p:
        info = await launch(p)
        async with KernelClient(info, wait_for_exit=p.wait) as kc:
            await kc.wait_for_ready(timeout=30)
            yield p, kc


async def test_beat_cancelled_at_once_leaves_heartbeat_usable(fake_spec: SpecFactory) -> None:
    """A beat cancelled by an expired scope does not break the next beats."""
    async with fake_client(fake_spec()) as (_, kc):
        for _ in range(3):
            with anyio.move_on_after(0):
                await kc.heartbeat(timeout=10)
            assert await kc.heartbeat(timeout=10)


async def test_beat_cancelled_while_awaiting_its_echo_leaves_heartbeat_usable(
    fake_spec: SpecFactory,
) -> None:
    """A beat cancelled after its ping was sent (kernel stopped) does not break the next beat."""
    async with fake_client(fake_spec()) as (p, kc):
        async with stopped(p), anyio.create_task_group() as tg:
            tg.start_soon(kc.heartbeat, 30)
            await anyio.wait_all_tasks_blocked()  # the ping is sent; the echo cannot come
            tg.cancel_scope.cancel()
        assert await kc.heartbeat(timeout=10)


async def test_concurrent_beats_all_succeed(fake_spec: SpecFactory) -> None:
    """Three heartbeat() calls at once each get their echo."""
    async with fake_client(fake_spec()) as (_, kc):
        results: list[bool] = []

        async def beat() -> None:
            results.append(await kc.heartbeat(timeout=10))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(beat)
        assert results == [True, True, True]


async def test_stopped_kernel_misses_beats_then_beats_again(fake_spec: SpecFactory) -> None:
    """A stopped kernel's beat is False within the timeout; once it runs again, True."""
    async with fake_client(fake_spec()) as (p, kc):
        async with stopped(p):
            with anyio.fail_after(5):
                assert not await kc.heartbeat(timeout=0.2)
                assert not await kc.heartbeat(timeout=0.2)
        assert await kc.heartbeat(timeout=10)


async def test_waiting_for_another_beat_is_bounded_by_the_callers_scope(
    fake_spec: SpecFactory,
) -> None:
    """A beat queued behind a hung one is ended by its caller's cancel scope."""
    async with fake_client(fake_spec()) as (p, kc):
        async with stopped(p), anyio.create_task_group() as tg:
            tg.start_soon(kc.heartbeat, 60)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(5), anyio.move_on_after(0.1) as scope:
                await kc.heartbeat(timeout=60)
            assert scope.cancelled_caught
            tg.cancel_scope.cancel()
        assert await kc.heartbeat(timeout=10)


async def test_monitor_heartbeat_cancelled_anywhere_leaves_client_usable(
    fake_spec: SpecFactory,
) -> None:
    """monitor_heartbeat cut off after any delay leaves the heartbeat working."""
    async with fake_client(fake_spec()) as (_, kc):
        for i in range(30):
            with anyio.move_on_after(i * 0.0005):
                await kc.monitor_heartbeat(interval=0.0005, timeout=10)
            assert await kc.heartbeat(timeout=10)


# ---------------------------------------------------------------- following restarts

Successor = tuple[ConnectionInfo, Callable[[], Awaitable[int | None]]] | None


class Restarts:
    """A ``wait_for_restart`` hook that the test feeds, with events saying where the client is."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Successor](1)
        #: Set when the client awaits a restart (it has seen its kernel exit).
        self.asked = anyio.Event()
        self.ended = False  # the last wait_for_restart call has ended (returned or cancelled)

    def __enter__(self) -> Restarts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._send.close()
        self._receive.close()

    async def wait_for_restart(self) -> Successor:
        """The hook given to the client."""
        self.ended = False
        self.asked.set()
        try:
            return await self._receive.receive()
        finally:
            self.ended = True

    async def restarted(
        self, info: ConnectionInfo, wait: Callable[[], Awaitable[int | None]]
    ) -> None:
        """Hand the client the kernel at *info*; return once the client follows it (awaits its
        exit)."""
        self.asked = anyio.Event()
        following = anyio.Event()

        async def wait_for_exit() -> int | None:
            following.set()
            return await wait()

        await self._send.send((info, wait_for_exit))
        await following.wait()

    async def no_restart(self) -> None:
        """Tell the client that no kernel will replace the dead one."""
        await self._send.send(None)


async def test_client_follows_a_restart_on_the_same_ports(fake_spec: SpecFactory) -> None:
    """A request in flight when the kernel dies fails with KernelDiedError, as do requests
    until the restart; then the same client, on its same sockets, talks to the new kernel."""
    with Restarts() as restarts, anyio.fail_after(60):
        async with LocalProvisioner(kernel_spec=fake_spec("--mute-control")) as p:
            info = await launch(p)
            async with KernelClient(
                info, wait_for_exit=p.wait, wait_for_restart=restarts.wait_for_restart
            ) as kc:
                await kc.wait_for_ready(timeout=30)
                sockets = dict(kc._sockets)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(p.kill)
                    with pytest.raises(KernelDiedError, match="before the restart") as died:
                        await kc.interrupt()  # never answered by this kernel
                assert died.value.exit_status == -signal.SIGKILL
                await restarts.asked.wait()
                with pytest.raises(KernelDiedError):
                    await kc.kernel_info()  # no kernel runs: fails at once

                await p.cleanup(restart=True)
                again = await launch(p)
                assert again == info
                await restarts.restarted(again, p.wait)
                assert not kc._iopub_seen.is_set()  # the next execute waits for iopub again
                reply = await kc.kernel_info(timeout=30)
                assert reply.content["implementation"] == "fake"
                assert all(kc._sockets[name] is sock for name, sock in sockets.items())
                await kc.wait_for_ready(timeout=30)
                assert await kc.heartbeat(timeout=10)


async def test_client_follows_a_restart_on_new_ports_and_key(fake_spec: SpecFactory) -> None:
    """After a restart on new ports with a new key, the client opens new sockets with a new
    session, talks to the new kernel, and follows its death too."""
    with Restarts() as restarts, anyio.fail_after(60):
        async with (
            LocalProvisioner(kernel_spec=fake_spec()) as p1,
            LocalProvisioner(kernel_spec=fake_spec()) as p2,
        ):
            info1 = await launch(p1)
            async with KernelClient(
                info1, wait_for_exit=p1.wait, wait_for_restart=restarts.wait_for_restart
            ) as kc:
                await kc.wait_for_ready(timeout=30)
                first_session, first_shell = kc.session, kc._sockets["shell"]
                await p1.kill()
                await restarts.asked.wait()

                info2 = await launch(p2)
                assert info2["shell_port"] != info1["shell_port"] and info2["key"] != info1["key"]
                await restarts.restarted(info2, p2.wait)
                assert kc.connection_info == info2
                assert kc.session is not first_session
                assert kc.session.key == info2["key"].encode()
                assert first_shell.closed and kc._sockets["shell"] is not first_shell
                reply = await kc.wait_for_ready(timeout=30)
                assert reply.content["status"] == "ok"
                assert await kc.heartbeat(timeout=10)

                await p2.kill()
                await restarts.asked.wait()
                with pytest.raises(KernelDiedError) as died:
                    await kc.kernel_info()
                assert died.value.exit_status == -signal.SIGKILL


async def test_client_stays_failed_when_no_restart_comes(fake_spec: SpecFactory) -> None:
    """When wait_for_restart returns None, the client's requests keep failing and it asks no
    more."""
    with Restarts() as restarts, anyio.fail_after(60):
        async with LocalProvisioner(kernel_spec=fake_spec()) as p:
            info = await launch(p)
            async with KernelClient(
                info, wait_for_exit=p.wait, wait_for_restart=restarts.wait_for_restart
            ) as kc:
                await kc.wait_for_ready(timeout=30)
                await p.kill()
                await restarts.asked.wait()
                restarts.asked = anyio.Event()
                await restarts.no_restart()
                await anyio.wait_all_tasks_blocked()
                assert restarts.ended and not restarts.asked.is_set()
                for _ in range(2):
                    with pytest.raises(KernelDiedError):
                        await kc.kernel_info(timeout=10)
                assert await p.poll() is not None  # the kernel is indeed gone


async def test_closing_the_client_ends_the_wait_for_a_restart(fake_spec: SpecFactory) -> None:
    """A client closed while it waits for a restart closes at once, cancelling the wait."""
    with Restarts() as restarts:
        async with LocalProvisioner(kernel_spec=fake_spec()) as p:
            info = await launch(p)
            with anyio.fail_after(30):
                async with KernelClient(
                    info, wait_for_exit=p.wait, wait_for_restart=restarts.wait_for_restart
                ) as kc:
                    await kc.wait_for_ready(timeout=30)
                    await p.kill()
                    await restarts.asked.wait()
                    assert not restarts.ended
            assert restarts.ended


async def test_wait_for_restart_needs_wait_for_exit() -> None:
    """wait_for_restart without wait_for_exit is refused: the client could never see an exit."""
    info = new_connection_info()
    try:
        with Restarts() as restarts, pytest.raises(ValueError, match="wait_for_exit"):
            KernelClient(info, wait_for_restart=restarts.wait_for_restart)
    finally:
        release_connection_info(info)


# ---------------------------------------------------------------- validly signed garbage (issue 12)

#: JSON nested 3,000 levels deep, beyond Python's recursion limit.
# Deeper than the JSON decoder of every supported Python goes: 3.11 stops at its recursion
# limit (1,000), 3.12 and 3.13 at their C recursion limits (3.13: about 10,000).
DEEP = b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def forged(session: Session, reply_to: Message, **parts: bytes) -> list[bytes]:
    """The frames (without identities) of a reply to *reply_to* whose JSON *parts* (header,
    parent_header, metadata, content) are replaced by the bytes given, correctly signed by
    *session* (a sender who has the key)."""
    genuine = session.serialize(session.new_message("kernel_info_reply", parent=reply_to))
    split = genuine.index(b"<IDS|MSG>")
    frames = dict(
        zip(("header", "parent_header", "metadata", "content"), genuine[split + 2 :], strict=True)
    )
    frames.update(parts)
    body = list(frames.values())
    return [b"<IDS|MSG>", session.sign(body), *body]


def dropped(caplog: pytest.LogCaptureFixture, channel: str) -> list[str]:
    """Why each message dropped on *channel* was dropped, from the client's warnings."""
    prefix = f"Dropped a message on the {channel} channel: "
    return [
        r.getMessage().removeprefix(prefix)
        for r in caplog.records
        if r.levelname == "WARNING" and r.getMessage().startswith(prefix)
    ]


@asynccontextmanager
async def fake_kernel_sockets(
    info: ConnectionInfo,
) -> AsyncIterator[tuple[AsyncSocket, AsyncSocket]]:
    """A ROUTER bound as the kernel's shell and an XPUB as its iopub (an XPUB, so the test can
    wait until the client's subscription has arrived instead of publishing into the void)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    shell, iopub = ctx.socket(zmq.ROUTER), ctx.socket(zmq.XPUB)
    for sock, port in ((shell, info["shell_port"]), (iopub, info["iopub_port"])):
        sock.linger = 0
        sock.bind(f"tcp://127.0.0.1:{port}")
    wrapped = AsyncSocket(shell), AsyncSocket(iopub)
    try:
        yield wrapped
    finally:
        for each in wrapped:
            each.close()


GARBAGE = {
    "content nested too deeply": ({"content": DEEP}, "nested too deeply"),
    "parent_header nested too deeply": ({"parent_header": DEEP}, "nested too deeply"),
    "header nested too deeply": ({"header": DEEP}, "nested too deeply"),
    "parent_header a list": ({"parent_header": b"[1, 2]"}, "parent_header is not a JSON object"),
    "header a string": ({"header": b'"kernel_info_reply"'}, "header is not a JSON object"),
    "content not UTF-8": ({"content": b'{"x": "\xff"}'}, "not valid JSON"),
}


@pytest.mark.parametrize(("parts", "message"), GARBAGE.values(), ids=GARBAGE.keys())
async def test_validly_signed_garbage_reply_is_dropped(
    caplog: pytest.LogCaptureFixture, parts: dict[str, bytes], message: str
) -> None:
    """A correctly signed reply whose JSON is nested too deeply or of the wrong shape is dropped
    with a warning; the client's receive loop survives and the genuine reply still resolves."""
    info = new_connection_info()
    try:
        kernel_session = Session(key=info["key"])
        async with fake_kernel_sockets(info) as (shell, _), KernelClient(info) as kc:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    replies: list[Message] = []

                    async def ask() -> None:
                        replies.append(await kc.kernel_info())

                    tg.start_soon(ask)
                    request = kernel_session.deserialize(await shell.recv_multipart())
                    await shell.send_multipart(
                        [*request.identities, *forged(kernel_session, request, **parts)]
                    )
                    real = kernel_session.new_message(
                        "kernel_info_reply", {"real": 1}, parent=request
                    )
                    real.identities = request.identities
                    await shell.send_multipart(kernel_session.serialize(real))
        assert replies[0].content == {"real": 1}
        [why] = dropped(caplog, "shell")
        assert message in why
    finally:
        release_connection_info(info)


async def test_validly_signed_garbage_on_iopub_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Deeply nested JSON in a correctly signed iopub message is dropped with a warning; iopub
    keeps working, so an execute still gets its output and its idle status."""
    info = new_connection_info()
    try:
        kernel = Session(key=info["key"])
        async with fake_kernel_sockets(info) as (shell, iopub), KernelClient(info) as kc:

            async def publish(msg_type: str, content: dict[str, Any], parent: Message) -> None:
                msg = kernel.new_message(msg_type, content, parent=parent)
                await iopub.send_multipart(kernel.serialize(msg))

            async def reply(msg_type: str, content: dict[str, Any], parent: Message) -> None:
                msg = kernel.new_message(msg_type, content, parent=parent)
                msg.identities = parent.identities
                await shell.send_multipart(kernel.serialize(msg))

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    results: list[Any] = []

                    async def run() -> None:
                        results.append(await kc.execute("print('hi')"))

                    tg.start_soon(run)
                    assert await iopub.recv_multipart() == [b"\x01"]  # subscribed to everything
                    # The execute first waits until the kernel answers and iopub shows it is
                    # connected (asking again if iopub is slow): garbage first, each time.
                    while True:
                        request = kernel.deserialize(await shell.recv_multipart())
                        await iopub.send_multipart(forged(kernel, request, header=DEEP))
                        if request.msg_type == "execute_request":
                            break
                        await publish("status", {"execution_state": "idle"}, request)
                        await reply("kernel_info_reply", {}, request)
                    await publish("stream", {"name": "stdout", "text": "hi\n"}, request)
                    await publish("status", {"execution_state": "idle"}, request)
                    await reply("execute_reply", {"status": "ok"}, request)
        assert results[0].stdout == "hi\n"
        reasons = dropped(caplog, "iopub")
        assert len(reasons) >= 2
        assert all("message part is JSON nested too deeply" in why for why in reasons)
    finally:
        release_connection_info(info)


async def test_non_ascii_key_with_a_real_kernel() -> None:
    """A connection key that is not ASCII works end to end: the client signs with its UTF-8
    encoding, as ipykernel (jupyter_client) does, and the kernel runs code."""
    info = new_connection_info(key="clé-ключ-🔑")
    try:
        spec = KernelSpecManager().get_kernel_spec("python3")
        async with LocalProvisioner(kernel_spec=spec, connection_info=dict(info)) as p:
            await launch(p)
            async with KernelClient(info, wait_for_exit=p.wait) as kc:
                result = await kc.execute("print(6 * 7)", timeout=60)
                assert result.stdout == "42\n"
    finally:
        release_connection_info(info)


# ---------------------------------------------------------------- iopub_welcome (protocol 5.4)


@pytest.mark.skipif(
    int(version("ipykernel").split(".")[0]) < 7, reason="ipykernel < 7 sends no iopub_welcome"
)
async def test_a_new_client_is_welcomed_on_iopub_before_any_request() -> None:
    """ipykernel greets each new subscription with iopub_welcome: a second client, whose
    subscription to everything the kernel has seen already, is greeted on its own topic, so
    its iopub is known to be connected before it sends anything."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as first:
        await first.wait_for_ready(timeout=60)
        with first.subscribe_iopub() as seen_by_first:
            async with KernelClient(info) as second:
                seen = second.subscribe_iopub()
                with anyio.fail_after(30):
                    greeting = await seen.receive()
                    while greeting.msg_type != "iopub_welcome":
                        greeting = await seen.receive()
                assert second.iopub_welcomed and second._iopub_seen.is_set()
                # The first client sees the second's welcome too (after its own, which on a
                # loaded machine can come after its readiness).
                topic = second._welcome_topic.decode()
                assert topic != first._welcome_topic.decode()
                with anyio.fail_after(30):
                    welcome = await seen_by_first.receive()
                    while (welcome.msg_type, welcome.content.get("subscription")) != (
                        "iopub_welcome",
                        topic,
                    ):
                        welcome = await seen_by_first.receive()
                result = await second.execute("print('hi')", timeout=30)
                assert result.stdout == "hi\n"


async def _scripted_first_execute(*, greet: bool) -> tuple[list[str], Any]:
    """A client expecting iopub_welcome runs print('hi') against a scripted kernel that
    greets its subscription (or not): the requests the kernel got, in order, and the result."""
    info = new_connection_info()
    try:
        kernel = Session(key=info["key"])
        got: list[str] = []
        results: list[Any] = []
        async with (
            fake_kernel_sockets(info) as (shell, iopub),
            KernelClient(info, expect_welcome=True) as kc,
        ):

            async def send(sock: AsyncSocket, msg_type: str, content: Any, parent: Any) -> None:
                msg = kernel.new_message(msg_type, content, parent=parent)
                msg.identities = parent.identities if sock is shell else []
                await sock.send_multipart(kernel.serialize(msg))

            async def run() -> None:
                results.append(await kc.execute("print('hi')"))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run)
                    assert await iopub.recv_multipart() == [b"\x01"]  # subscribed to everything
                    if greet:
                        welcome = kernel.new_message("iopub_welcome", {"subscription": ""})
                        await iopub.send_multipart(kernel.serialize(welcome))
                    while True:
                        request = kernel.deserialize(await shell.recv_multipart())
                        got.append(request.msg_type)
                        await send(iopub, "status", {"execution_state": "busy"}, request)
                        if request.msg_type == "execute_request":
                            break
                        await send(iopub, "status", {"execution_state": "idle"}, request)
                        await send(shell, "kernel_info_reply", {}, request)
                    await send(iopub, "stream", {"name": "stdout", "text": "hi\n"}, request)
                    await send(iopub, "status", {"execution_state": "idle"}, request)
                    await send(shell, "execute_reply", {"status": "ok"}, request)
        return got, results[0]
    finally:
        release_connection_info(info)


async def test_an_expected_welcome_spares_the_first_execute_a_kernel_info() -> None:
    """With expect_welcome, the kernel's greeting on iopub is what the first execute waits
    for: its execute_request is the first request the kernel gets, and no output is lost."""
    got, result = await _scripted_first_execute(greet=True)
    assert got == ["execute_request"]
    assert result.stdout == "hi\n"


async def test_an_expected_welcome_that_never_comes_falls_back_to_kernel_info(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kernel that does not greet, though expected to: after the bounded wait the first
    execute asks kernel_info as without expect_welcome, and still gets all its outputs."""
    monkeypatch.setattr(client_module, "_WELCOME_WAIT", 0.2)
    got, result = await _scripted_first_execute(greet=False)
    assert got[0] == "kernel_info_request" and got[-1] == "execute_request"
    assert result.stdout == "hi\n"


@pytest.mark.skipif(
    int(version("ipykernel").split(".")[0]) < 7, reason="ipykernel < 7 sends no iopub_welcome"
)
async def test_a_managers_client_of_a_greeting_kernel_expects_the_welcome() -> None:
    """A kernel manager's new client knows that ipykernel greets subscriptions (its own client
    was greeted): its first execute waits for the greeting alone, with every output."""
    async with start_kernel("python3") as km:
        # The manager's own client is ready once a reply and any iopub message came; its
        # greeting may come just after that (it did, once, on a loaded machine under trio).
        assert km._client is not None
        with anyio.fail_after(30):
            await km._client._welcomed.wait()
        async with km.client() as kc:
            assert kc._expect_welcome

            async def no_kernel_info(timeout: float | None = None) -> Any:  # noqa: ASYNC109
                raise AssertionError("the first execute asked kernel_info")

            kc.wait_for_ready = no_kernel_info  # type: ignore[method-assign]
            result = await kc.execute("print('hi'); 6 * 7", timeout=60)
            assert result.stdout == "hi\n" and result.results == [{"text/plain": "42"}]


async def test_close_iopub_stops_iopub_and_keeps_the_rest() -> None:
    """close_iopub ends subscriptions and refuses executes, subscriptions and comms with
    ChannelClosedError; replies on shell, readiness and heartbeats still work."""
    async with running_kernel() as (p, info), KernelClient(info, wait_for_exit=p.wait) as kc:
        await kc.wait_for_ready(timeout=60)
        with kc.subscribe_iopub() as messages:
            kc.close_iopub()
            kc.close_iopub()  # idempotent
            assert [m async for m in messages] == []
        with pytest.raises(ChannelClosedError, match="close_iopub"):
            await kc.execute("1")
        with pytest.raises(ChannelClosedError, match="close_iopub"):
            kc.subscribe_iopub()
        with pytest.raises(ChannelClosedError, match="close_iopub"):
            kc.open_comm("x")
        assert (await kc.wait_for_ready(timeout=30)).status == "ok"
        assert (await kc.is_complete("x = 1", timeout=30)).status == "complete"
        assert await kc.heartbeat(timeout=10)


async def test_an_execute_replied_but_never_idle_ends_when_the_client_closes() -> None:
    """An execute that has its reply but not its idle status is not left waiting when the
    client closes: it raises ChannelClosedError."""
    info = new_connection_info()
    try:
        kernel = Session(key=info["key"])
        async with fake_kernel_sockets(info) as (shell, iopub):
            errors: list[BaseException] = []
            async with anyio.create_task_group() as tg, KernelClient(info) as kc:

                async def run() -> None:
                    with pytest.raises(ChannelClosedError) as caught:
                        await kc.execute("1", timeout=30)
                    errors.append(caught.value)

                tg.start_soon(run)
                assert await iopub.recv_multipart() == [b"\x01"]
                while True:
                    request = kernel.deserialize(await shell.recv_multipart())
                    idle = kernel.new_message("status", {"execution_state": "idle"}, parent=request)
                    if request.msg_type == "kernel_info_request":
                        await iopub.send_multipart(kernel.serialize(idle))
                    reply = kernel.new_message(
                        request.msg_type.replace("request", "reply"),
                        {"status": "ok"},
                        parent=request,
                    )
                    reply.identities = request.identities
                    await shell.send_multipart(kernel.serialize(reply))
                    if request.msg_type == "execute_request":
                        break
                await anyio.wait_all_tasks_blocked()
        assert len(errors) == 1
    finally:
        release_connection_info(info)
