"""A real jupyter_server on loopback runs kernels through kernel-nursery-local (REST and
websocket), in a subprocess with its own token and temporary directories.

jupyter_server is asyncio-based, and so is the websocket client: asyncio only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from ..conftest import write_kernel
from ..helpers.procs import is_running, live_children

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

websockets = pytest.importorskip("websockets")
READY = 60


@pytest.fixture
def anyio_backend() -> str:
    """jupyter_server and the websocket client run on asyncio: so does this test."""
    return "asyncio"


class Server:
    """A running jupyter_server: its base URL, token and process id."""

    def __init__(self, url: str, token: str, pid: int) -> None:
        self.url = url
        self.token = token
        self.pid = pid

    def kernel_processes(self, kid: str) -> set[int]:
        """The server's running children whose command line names kernel *kid*'s file."""
        found = set()
        for child in live_children(self.pid):
            with contextlib.suppress(OSError):
                if kid in Path(f"/proc/{child}/cmdline").read_text():
                    found.add(child)
        return found

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One REST call; the decoded JSON answer (None for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (http to our own server)
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )

        def call() -> Any:
            with urllib.request.urlopen(req, timeout=READY) as response:  # noqa: S310 (same)
                text = response.read()
            return json.loads(text) if text else None

        return await anyio.to_thread.run_sync(call)


@asynccontextmanager
async def jupyter_server(tmp_path: Path, *options: str) -> AsyncIterator[Server]:
    """Start jupyter_server on 127.0.0.1, a free port, a token of its own (and *options*);
    stop it after (SIGTERM: it shuts its kernels down), within a bound."""
    token = secrets.token_hex(16)
    root = tmp_path / "root"
    root.mkdir()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.open_browser=False",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",  # CI runs as root
        *options,
    ]
    process = await anyio.open_process(argv, stdin=-3, stdout=-3, stderr=-1)
    log: list[str] = []
    async with process:
        try:
            assert process.stderr is not None
            text = ""
            found = None
            with anyio.move_on_after(READY):
                async for chunk in process.stderr:
                    text += chunk.decode(errors="replace")
                    found = re.search(r"http://127\.0\.0\.1:(\d+)/", text)
                    if found:
                        break
            if not found:
                pytest.fail(f"jupyter_server did not start:\n{text}")
            async with anyio.create_task_group() as tg:

                async def drain() -> None:  # the server must never block on a full pipe
                    assert process.stderr is not None
                    async for chunk in process.stderr:
                        log.append(chunk.decode(errors="replace"))
                        del log[:-200]  # what a failure shows: the server's latest lines

                tg.start_soon(drain)
                server = Server(f"http://127.0.0.1:{found.group(1)}", token, process.pid)
                # The server logs its address, then binds it from its event loop: nothing says
                # when, so ask until it answers (bounded).
                with anyio.fail_after(READY):
                    while True:
                        try:
                            await server.request("GET", "/api/status")
                            break
                        except OSError:
                            await anyio.sleep(0.1)
                yield server
                process.terminate()  # SIGTERM: the server shuts its kernels down
                with anyio.fail_after(READY):
                    await process.wait()
        except BaseException:
            print("".join(log))  # pytest shows it with the failure
            raise
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()


def message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    """A message for the server's websocket (its JSON form, channel included)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": session,
            "username": "test",
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


async def iopub_reaches_us(ws: Any, session: str) -> None:
    """Ask kernel_info until the kernel's status for one of the requests comes back on iopub:
    after a restart the server's iopub subscription reconnects on its own time, and what the
    kernel publishes before that is lost (zmq's slow joiner), the status of a first execute
    included."""
    with anyio.fail_after(READY):
        while True:
            msg = message("kernel_info_request", {}, session)
            await ws.send(json.dumps(msg))
            with anyio.move_on_after(1):
                while True:
                    reply = json.loads(await ws.recv())
                    mine = reply.get("parent_header", {}).get("msg_id") == msg["header"]["msg_id"]
                    if mine and reply["msg_type"] == "status":
                        return


async def execute(ws: Any, code: str, session: str, *, then: Any = None) -> dict[str, Any]:
    """Run *code* over the websocket; return its execute_reply content (with ``stdout``, what
    it printed). *then*, if given, is awaited once the kernel says it is busy with it."""
    msg = message("execute_request", {"code": code, "silent": False}, session)
    await ws.send(json.dumps(msg))
    stdout = ""
    result: dict[str, Any] | None = None
    idle = False
    with anyio.fail_after(READY):
        while result is None or not idle:  # the reply (shell) and idle (iopub), either order
            reply = json.loads(await ws.recv())
            if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue
            kind = reply["msg_type"]
            if kind == "status":
                state = reply["content"]["execution_state"]
                idle = state == "idle"
                if state == "busy" and then is not None:
                    await then()
            elif kind == "stream":
                stdout += reply["content"]["text"]
            elif kind == "execute_reply":
                result = reply["content"]
    return {**result, "stdout": stdout}


def install_nursery_kernel(jupyter_dirs: dict[str, Path]) -> None:
    """Kernel ``nk``: ipykernel through kernel-nursery-local."""
    write_kernel(
        jupyter_dirs["path"] / "kernels",
        "nk",
        {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "nk",
            "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": "kernel-nursery-local"}},
        },
    )


async def test_jupyter_server_runs_kernels_through_nursery_local(
    jupyter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """jupyter_server starts, runs code in over its websocket, interrupts, restarts and deletes
    an ipykernel through kernel-nursery-local; the kernel is gone after the delete."""
    install_nursery_kernel(jupyter_dirs)
    async with jupyter_server(tmp_path) as server:
        kernel = await server.request("POST", "/api/kernels", {"name": "nk"})
        kid = kernel["id"]
        ws_url = server.url.replace("http", "ws") + f"/api/kernels/{kid}/channels"
        headers = {"Authorization": f"token {server.token}"}
        session = uuid.uuid4().hex
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            reply = await execute(ws, "import os; print(os.getpid())", session)
            assert reply["status"] == "ok"
            pid = int(reply["stdout"])

            async def interrupt() -> None:
                await anyio.sleep(1)  # into the sleep: an interrupt before it would be lost
                await server.request("POST", f"/api/kernels/{kid}/interrupt")

            reply = await execute(ws, "import time; time.sleep(60)", session, then=interrupt)
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
        await server.request("POST", f"/api/kernels/{kid}/restart")
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            reply = await execute(ws, "import os; print(os.getpid())", session)
            new_pid = int(reply["stdout"])
        assert new_pid != pid and not is_running(pid)
        await server.request("DELETE", f"/api/kernels/{kid}")
        assert not is_running(new_pid)
        assert await server.request("GET", "/api/kernels") == []


async def kernel_pid(server: Server, kid: str) -> int:
    """The process id of kernel *kid*, asked over its websocket."""
    ws_url = server.url.replace("http", "ws") + f"/api/kernels/{kid}/channels"
    headers = {"Authorization": f"token {server.token}"}
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        reply = await execute(ws, "import os; print(os.getpid())", uuid.uuid4().hex)
    return int(reply["stdout"])


KERNEL_MANAGERS = "jupyter_server.services.kernels.kernelmanager"


@pytest.mark.parametrize("manager", ["AsyncMappingKernelManager", "MappingKernelManager"])
async def test_a_killed_kernel_is_restarted_and_the_server_stops_with_its_kernels(
    jupyter_dirs: dict[str, Path], tmp_path: Path, manager: str
) -> None:
    """With jupyter_server's async and its synchronous kernel managers: a kernel killed from
    outside is restarted (the websocket client is told; with the async manager it runs code in
    the new one through the same websocket), and the server, stopped with its kernels running,
    stops them (shutdown_all) within a bound."""
    install_nursery_kernel(jupyter_dirs)
    option = f"--ServerApp.kernel_manager_class={KERNEL_MANAGERS}.{manager}"
    async with jupyter_server(tmp_path, option) as server:
        kid = (await server.request("POST", "/api/kernels", {"name": "nk"}))["id"]
        other = (await server.request("POST", "/api/kernels", {"name": "nk"}))["id"]
        other_pid = await kernel_pid(server, other)
        ws_url = server.url.replace("http", "ws") + f"/api/kernels/{kid}/channels"
        headers = {"Authorization": f"token {server.token}"}
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            reply = await execute(ws, "import os; print(os.getpid())", uuid.uuid4().hex)
            pid = int(reply["stdout"])
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(READY):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["msg_type"] == "status" and msg["content"].get("execution_state") in (
                        "restarting",
                        "dead",
                    ):
                        break
            assert msg["content"]["execution_state"] == "restarting"
            with anyio.fail_after(READY):  # /proc is the only place to see it (no event)
                while not server.kernel_processes(kid) - {pid}:  # noqa: ASYNC110
                    await anyio.sleep(0.1)
            if manager == "AsyncMappingKernelManager":
                # The same websocket reaches the new kernel: its ports are kept, as upstream's.
                # (Not with the synchronous manager: its restart writes to the websocket from
                # another thread, which breaks tornado's stream, whatever the provisioner.)
                session = uuid.uuid4().hex
                await iopub_reaches_us(ws, session)
                reply = await execute(ws, "import os; print(os.getpid())", session)
                assert int(reply["stdout"]) in server.kernel_processes(kid)
        [new_pid] = server.kernel_processes(kid)
        assert new_pid != pid
        assert {k["id"] for k in await server.request("GET", "/api/kernels")} == {kid, other}
    assert not is_running(new_pid)
    assert not is_running(other_pid)
