"""Tests for kernel_nursery.messaging._curve: encrypted channels with real kernels, both ways
with jupyter_client, and what a listener on the wire can read."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest
import zmq

from kernel_nursery import (
    KernelClient,
    KernelManager,
    KernelSpec,
    KernelSpecManager,
    KernelTimeoutError,
    TransportEncryptionError,
)
from kernel_nursery.connection import ConnectionInfo, validate_connection_info
from kernel_nursery.wire import AsyncSocket

from ..conftest import FAKE_KERNEL

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@asynccontextmanager
async def recording_proxy(port: int) -> AsyncIterator[tuple[int, bytearray]]:
    """A TCP proxy on loopback to 127.0.0.1:*port* that records every byte the client sends.

    Yields the proxy's port and the growing record.
    """
    record = bytearray()

    async def pipe(src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream, keep: bool) -> None:
        try:
            async for chunk in src:
                if keep:
                    record.extend(chunk)
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await dst.aclose()

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client, await anyio.connect_tcp("127.0.0.1", port) as kernel:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipe, client, kernel, True)
                tg.start_soon(pipe, kernel, client, False)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield int(listener.extra(anyio.abc.SocketAttribute.local_port)), record
        tg.cancel_scope.cancel()


async def execute_through_proxy(km: KernelManager, code: str) -> bytes:
    """Run *code* with a client whose shell channel passes through a recording proxy; return
    what the client sent on it."""
    info = km.connection_info
    async with recording_proxy(info["shell_port"]) as (port, record):
        proxied = validate_connection_info({**info, "shell_port": port})
        async with KernelClient(proxied) as kc:
            result = await kc.execute(code, timeout=60)
            assert result.status == "ok"
            assert await kc.heartbeat(timeout=30)
    return bytes(record)


@pytest.mark.parametrize("policy", ["required", "disabled"])
async def test_code_of_an_execute_is_not_in_clear_on_the_wire(policy: str) -> None:
    """With encryption the bytes a client sends to ipykernel's shell port never contain the
    code it runs; without it they do (the recording is a real listener's view)."""
    marker = f"marker-{uuid.uuid4().hex}"
    async with KernelManager(kernel_name="python3", transport_encryption=policy) as km:
        await km.start_kernel()
        assert ("curve_publickey" in km.connection_info) is (policy == "required")
        sent = await execute_through_proxy(km, f"x = {marker!r}")
        await km.shutdown_kernel()
    assert sent  # the request went through the proxy
    assert (marker.encode() in sent) is (policy == "disabled")


JC_PEER = str(Path(__file__).parent.parent / "helpers" / "jc_peer.py")


async def test_jupyter_client_talks_to_our_encrypted_kernel() -> None:
    """jupyter_client's own client, reading our connection file, runs code in a kernel we
    started encrypted."""
    async with KernelManager(kernel_name="python3", transport_encryption="required") as km:
        await km.start_kernel()
        assert km.connection_file is not None
        on_disk = json.loads(Path(km.connection_file).read_text())
        assert isinstance(on_disk["curve_publickey"], str)
        assert len(on_disk["curve_secretkey"]) == 40
        done = await anyio.run_process(
            [sys.executable, JC_PEER, "client", km.connection_file, "print(6 * 7)"]
        )
        assert json.loads(done.stdout) == {"status": "ok", "stdout": "42\n"}
        await km.shutdown_kernel()


async def test_our_client_talks_to_a_kernel_jupyter_client_started_encrypted(
    jupyter_dirs: dict[str, Path],
) -> None:
    """Our client, reading jupyter_client's connection file, runs code in the encrypted kernel
    that jupyter_client's manager started, heartbeat included."""
    jupyter_dirs["runtime"].mkdir(parents=True, exist_ok=True)
    path = jupyter_dirs["runtime"] / f"kernel-jc-{uuid.uuid4().hex[:8]}.json"
    async with await anyio.open_process(
        [sys.executable, JC_PEER, "kernel", str(path)], stderr=None
    ) as peer:
        assert peer.stdin is not None and peer.stdout is not None
        with anyio.fail_after(90):
            assert (await peer.stdout.receive()).startswith(b"ready")
        try:
            async with KernelClient.from_connection_file(path) as kc:
                assert "curve_publickey" in kc.connection_info
                await kc.wait_for_ready(timeout=60)
                result = await kc.execute("print(6 * 7)", timeout=60)
                assert result.stdout == "42\n"
                assert await kc.heartbeat(timeout=30)
        finally:
            await peer.stdin.aclose()
            with anyio.fail_after(60):
                assert await peer.wait() == 0


async def test_kernel_that_ignores_the_keys_fails_fast_with_a_typed_error() -> None:
    """A kernel without CurveZMQ (the fake kernel binds in clear) makes the start fail with
    TransportEncryptionError, not a readiness timeout, and leaves nothing behind."""
    spec = KernelSpec(argv=[sys.executable, FAKE_KERNEL, "{connection_file}"], name="fake")
    async with KernelManager(
        kernel_spec=spec, transport_encryption="required", ready_timeout=90
    ) as km:
        with pytest.raises(TransportEncryptionError, match="does not support CurveZMQ"):
            await km.start_kernel()
        assert not km.has_kernel


async def test_xeus_python_which_ignores_the_keys_fails_fast() -> None:
    """xeus-python (0.19) does not implement CurveZMQ: a required start fails with
    TransportEncryptionError as soon as it binds, not at ready_timeout."""
    declared = KernelSpecManager().get_kernel_spec("xpython").supported_encryption
    if declared and "curve" in declared:
        pytest.skip("this xeus-python declares CurveZMQ support")
    async with KernelManager(
        kernel_name="xpython", transport_encryption="required", ready_timeout=90
    ) as km:
        with pytest.raises(TransportEncryptionError):
            await km.start_kernel()
        assert not km.has_kernel


@pytest.mark.skipif(
    os.environ.get("CI") == "true",
    reason="hangs about one full run in three (a worker ended by the timeout, the kernel still "
    "running, the loop idle): not yet understood, kept out of CI until it is; run it locally",
)
async def test_our_client_without_the_keys_gets_nothing_from_an_encrypted_kernel() -> None:
    """A client that has the HMAC key but not the Curve keys (the file stripped of them) gets
    no answer: the kernel refuses its connection."""
    async with KernelManager(kernel_name="python3", transport_encryption="required") as km:
        await km.start_kernel()
        clear: dict[str, Any] = dict(km.connection_info)
        del clear["curve_publickey"], clear["curve_secretkey"]
        async with KernelClient(clear) as kc:
            with pytest.raises(KernelTimeoutError):
                await kc.kernel_info(timeout=1)
        await km.shutdown_kernel()


async def test_a_wrong_server_key_times_out_saying_so(anyio_backend: str) -> None:
    """A client whose idea of the kernel's public key is wrong (a stale connection file) fails
    every encrypted handshake: readiness times out with EncryptedHandshakeError, a
    KernelTimeoutError whose one line names the encrypted connection and the key mismatch."""
    from kernel_nursery import EncryptedHandshakeError
    from kernel_nursery.messaging._curve import wait_for_ready_encrypted

    argv = [sys.executable, FAKE_KERNEL, "{connection_file}", "--curve"]
    spec = KernelSpec(argv=argv, name="fake")
    async with KernelManager(kernel_spec=spec, transport_encryption="required") as km:
        await km.start_kernel()
        public, secret = zmq.curve_keypair()
        wrong = {
            **km.connection_info,
            "curve_publickey": public.decode(),
            "curve_secretkey": secret.decode(),
        }
        async with KernelClient(validate_connection_info(wrong)) as kc:
            with pytest.raises(EncryptedHandshakeError) as raised:
                await wait_for_ready_encrypted(kc, timeout=2)
        message = str(raised.value)
        assert "encrypted" in message and "curve_publickey" in message and "\n" not in message
        assert isinstance(raised.value, KernelTimeoutError)
        assert isinstance(raised.value, TransportEncryptionError)
        await km.shutdown_kernel()


async def test_restart_keeps_the_keys_and_the_client_follows() -> None:
    """A restarted encrypted kernel keeps its key pair, and a client made before the restart
    runs code in the new kernel."""
    async with KernelManager(kernel_name="python3", transport_encryption="required") as km:
        await km.start_kernel()
        before: ConnectionInfo = km.connection_info
        async with km.client() as kc:
            await kc.wait_for_ready(timeout=60)
            await km.restart_kernel()
            assert km.connection_info["curve_publickey"] == before["curve_publickey"]
            result = await kc.execute("print('again')", timeout=60)
            assert result.stdout == "again\n"
        await km.shutdown_kernel()


@pytest.mark.parametrize("delay", [0.05, 0.4])
async def test_start_cancelled_while_the_handshake_is_watched_leaves_nothing(delay: float) -> None:
    """Cancelling an encrypted start while readiness and the handshake watch run stops the
    kernel and leaves no process, port, file or socket task (the autouse check)."""
    argv = [sys.executable, FAKE_KERNEL, "{connection_file}", "--curve", "--slow-start", "2"]
    spec = KernelSpec(argv=argv, name="fake")
    async with KernelManager(kernel_spec=spec, transport_encryption="required") as km:
        with anyio.move_on_after(delay) as scope:
            await km.start_kernel()
        assert scope.cancelled_caught
        assert not km.has_kernel


async def test_fake_kernel_with_curve_is_ready_encrypted() -> None:
    """A kernel that does bind as a CURVE server passes the handshake watch and answers."""
    argv = [sys.executable, FAKE_KERNEL, "{connection_file}", "--curve"]
    spec = KernelSpec(argv=argv, name="fake")
    async with KernelManager(kernel_spec=spec, transport_encryption="required") as km:
        await km.start_kernel()
        async with km.client() as kc:
            assert (await kc.kernel_info(timeout=30)).content["status"] == "ok"
            assert await kc.heartbeat(timeout=30)
        await km.shutdown_kernel()


@pytest.mark.parametrize("policy", ["required", "disabled"])
async def test_an_eavesdropper_on_iopub_reads_the_code_only_in_clear(policy: str) -> None:
    """A local program without the connection file subscribes to the kernel's iopub port:
    in clear it reads the code of an execute (ipykernel broadcasts it); encrypted, nothing."""
    marker = f"marker-{uuid.uuid4().hex}"
    async with KernelManager(kernel_name="python3", transport_encryption=policy) as km:
        await km.start_kernel()
        raw: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        raw.linger = 0
        raw.setsockopt(zmq.SUBSCRIBE, b"")
        raw.connect(f"tcp://127.0.0.1:{km.connection_info['iopub_port']}")
        spy = AsyncSocket(raw)
        heard = bytearray()

        async def listen() -> None:
            with contextlib.suppress(anyio.ClosedResourceError):
                while True:
                    heard.extend(b"".join(await spy.recv_multipart()))

        try:
            async with km.client() as kc, anyio.create_task_group() as tg:
                tg.start_soon(listen)
                with anyio.fail_after(60):
                    # In clear, until the spy's subscription has landed and it hears the code;
                    # encrypted, ten tries (its handshake is refused at once).
                    for attempt in itertools.count():
                        await kc.execute(f"x = {marker!r}", timeout=60)
                        if marker.encode() in heard or (policy == "required" and attempt == 9):
                            break
                        await anyio.sleep(0.05)  # paced retries, bounded by fail_after
                tg.cancel_scope.cancel()
        finally:
            spy.close()
        await km.shutdown_kernel()
    assert (marker.encode() in heard) is (policy == "disabled")


@pytest.mark.parametrize("args", [["--mute"], ["--slow-start", "30"]], ids=["mute", "slow-start"])
async def test_a_slow_encrypted_kernel_is_a_plain_timeout(
    anyio_backend: str, args: list[str]
) -> None:
    """An encrypted kernel that is only slow (its handshakes succeed but it does not answer,
    or it does not listen yet) times out with a plain KernelTimeoutError: no
    EncryptedHandshakeError blaming the keys."""
    from kernel_nursery import EncryptedHandshakeError

    argv = [sys.executable, FAKE_KERNEL, "{connection_file}", "--curve", *args]
    spec = KernelSpec(argv=argv, name="fake")
    async with KernelManager(
        kernel_spec=spec, transport_encryption="required", ready_timeout=2
    ) as km:
        with pytest.raises(KernelTimeoutError) as raised:
            await km.start_kernel()
        assert not isinstance(raised.value, EncryptedHandshakeError), raised.value
        assert not km.has_kernel
