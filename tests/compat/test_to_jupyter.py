"""Tests for kernel_nursery.compat._to_jupyter: our provisioners inside jupyter_client's kernel
managers, with real kernels.

jupyter_client is asyncio-based, so the async tests here run on asyncio only (the
``anyio_backend`` fixture below); its blocking ``KernelManager`` runs its own loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from jupyter_client import AsyncKernelManager, KernelManager
from jupyter_client.provisioning import KernelProvisionerFactory as JupyterFactory

from kernel_nursery import ProvisionerConfigError
from kernel_nursery.compat import NurseryLocalProvisioner, NurseryProvisioner
from kernel_nursery.provisioning import _guardian

from ..conftest import FAKE_KERNEL, write_kernel
from ..helpers.procs import is_running, killed_manager_leaves_nothing, process_group_members

pytestmark = pytest.mark.anyio

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
READY = 60


@pytest.fixture
def anyio_backend() -> str:
    """jupyter_client runs on asyncio: these tests do too."""
    return "asyncio"


@pytest.fixture(autouse=True)
def fresh_jupyter_factory() -> Any:
    """jupyter_client's provisioner factory is a singleton too; each test gets its own."""
    JupyterFactory.clear_instance()
    yield
    JupyterFactory.clear_instance()


def nursery_kernel(
    jupyter_dirs: dict[str, Path],
    name: str,
    argv: list[str],
    *,
    provisioner: str = "kernel-nursery-local",
    config: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """Install kernel *name* whose kernel.json names *provisioner* (besides any other
    ``metadata`` given); return its name."""
    stanza = {"provisioner_name": provisioner, "config": config or {}}
    write_kernel(
        jupyter_dirs["path"] / "kernels",
        name,
        {
            "argv": argv,
            "display_name": name,
            "language": fields.pop("language", "python"),
            "metadata": {**fields.pop("metadata", {}), "kernel_provisioner": stanza},
            **fields,
        },
    )
    return name


async def ready_async(km: AsyncKernelManager) -> None:
    """Wait until the async manager's kernel answers."""
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=READY)
    finally:
        kc.stop_channels()


def group_gone(pgid: int) -> bool:
    return not process_group_members(pgid)


async def test_async_kernel_manager_runs_ipykernel(jupyter_dirs: dict[str, Path]) -> None:
    """AsyncKernelManager starts, runs code in, interrupts, restarts and shuts down ipykernel
    through kernel-nursery-local; nothing remains."""
    km = AsyncKernelManager(kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL))
    await km.start_kernel()
    try:
        provisioner = km.provisioner
        assert isinstance(provisioner, NurseryLocalProvisioner)
        pid = provisioner.pid
        assert pid is not None and os.getpgid(pid) == pid
        file = Path(km.connection_file)
        assert json.loads(file.read_text())["shell_port"] == km.shell_port
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=READY)
            reply = await kc.execute_interactive("x = 6 * 7", timeout=READY)
            assert reply["content"]["status"] == "ok"
            # Interrupt: a long sleep ends with KeyboardInterrupt.
            msg_id = kc.execute("import time; time.sleep(60)")
            await anyio.sleep(1)  # let the kernel enter the sleep (an interrupt before is lost)
            await km.interrupt_kernel()
            with anyio.fail_after(READY):
                while True:
                    reply = await kc.get_shell_msg(timeout=READY)
                    if reply["parent_header"].get("msg_id") == msg_id:
                        break
            assert reply["content"]["ename"] == "KeyboardInterrupt"
            ports = km.get_connection_info()
            await km.restart_kernel()
            await kc.wait_for_ready(timeout=READY)
            assert provisioner.pid not in (None, pid) and not is_running(pid)
            assert km.get_connection_info() == ports  # same ports, key and file
            reply = await kc.execute_interactive("print('x' in dir())", timeout=READY)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
        pid = provisioner.pid
        assert pid is not None
    finally:
        await km.shutdown_kernel()
    assert not is_running(pid) and group_gone(pid)
    assert not file.exists()
    assert not provisioner.has_process


def test_blocking_kernel_manager_runs_ipykernel(jupyter_dirs: dict[str, Path]) -> None:
    """The blocking KernelManager starts, runs code in, restarts on new ports (without
    cache_ports, as upstream) and kills ipykernel through kernel-nursery-local; nothing
    remains."""
    km = KernelManager(kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL), cache_ports=False)
    km.start_kernel()
    try:
        provisioner = km.provisioner
        assert isinstance(provisioner, NurseryLocalProvisioner)
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=READY)
            reply = kc.execute_interactive("y = 1", timeout=READY)
            assert reply["content"]["status"] == "ok"
            old = km.get_connection_info()
            km.restart_kernel(now=True, newports=True)
            new = km.get_connection_info()
            assert new["shell_port"] != old["shell_port"]
            assert (
                json.loads(Path(km.connection_file).read_text())["shell_port"] == new["shell_port"]
            )
        finally:
            kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=READY)
            assert kc.execute_interactive("z = 2", timeout=READY)["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
        assert km.is_alive()
        pid = provisioner.pid
        assert pid is not None
    finally:
        km.shutdown_kernel(now=True)
    assert not is_running(pid) and group_gone(pid)
    assert not km.is_alive()


async def test_nbclient_executes_a_notebook(jupyter_dirs: dict[str, Path]) -> None:
    """nbclient executes a notebook (made with nbformat) on ipykernel through
    kernel-nursery-local, outputs and all."""
    import nbformat
    from nbclient import NotebookClient

    name = nursery_kernel(jupyter_dirs, "nk", IPYKERNEL)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os\nanswer = 6 * 7"),
        nbformat.v4.new_code_cell("print(answer, os.environ.get('JPY_PARENT_PID') is not None)"),
    ]
    nb.metadata["kernelspec"] = {"name": name, "display_name": name, "language": "python"}
    client = NotebookClient(nb, timeout=READY, kernel_name=name)
    await client.async_execute()
    nbformat.validate(nb)
    assert nb.cells[1].outputs[0]["text"] == "42 True\n"


async def test_generic_name_reaches_a_provisioner_of_ours_with_its_config(
    jupyter_dirs: dict[str, Path],
) -> None:
    """'kernel-nursery' with provisioner_name and config: our LocalProvisioner over ipc, with
    a fake kernel; shutdown(now=True) sees the kernel gone without polling."""
    name = nursery_kernel(
        jupyter_dirs,
        "fake",
        [sys.executable, FAKE_KERNEL, "{connection_file}"],
        provisioner="kernel-nursery",
        config={"provisioner_name": "local-provisioner", "transport": "ipc"},
        language="fake",
    )
    km = AsyncKernelManager(kernel_name=name, transport="ipc")
    await km.start_kernel()
    try:
        provisioner = km.provisioner
        assert type(provisioner) is NurseryProvisioner
        assert km.get_connection_info()["transport"] == "ipc"
        await ready_async(km)
        info = await provisioner.get_provisioner_info()
        json.dumps(info["kernel_nursery"])  # plain JSON
        assert info["kernel_nursery"]["provisioner_name"] == "local-provisioner"
    finally:
        await km.shutdown_kernel(now=True)
    assert not provisioner.has_process


@pytest.mark.parametrize(
    ("provisioner", "config", "error"),
    [
        ("kernel-nursery-local", {"no_such_trait": 1}, ProvisionerConfigError),
        ("kernel-nursery-local", {"provisioner_name": "ssh"}, ProvisionerConfigError),
        ("kernel-nursery-local", {"transport": "udp"}, ProvisionerConfigError),
        ("kernel-nursery-local", {"transport_encryption": "required"}, ProvisionerConfigError),
        ("kernel-nursery", {"provisioner_name": "no-such-provisioner"}, ModuleNotFoundError),
        (
            "kernel-nursery",
            {"provisioner_name": "jupyter:local-provisioner"},
            ProvisionerConfigError,
        ),
    ],
)
async def test_bad_config_is_a_clear_error_before_anything_starts(
    jupyter_dirs: dict[str, Path], provisioner: str, config: dict[str, Any], error: type
) -> None:
    """A stanza with a bad config key, value or provisioner name fails start_kernel with a
    typed error, launching nothing."""
    name = nursery_kernel(jupyter_dirs, "bad", IPYKERNEL, provisioner=provisioner, config=config)
    km = AsyncKernelManager(kernel_name=name)
    with pytest.raises(error):
        await km.start_kernel()
    assert km.provisioner is None


async def test_auto_encryption_encrypts_a_kernel_that_declares_curve(
    jupyter_dirs: dict[str, Path],
) -> None:
    """AsyncKernelManager(transport_encryption="auto") on a spec declaring curve: the kernel
    serves CurveZMQ with the keys in the connection file and the manager (as upstream), an
    encrypted client reaches it, and a restart keeps the keys."""
    name = nursery_kernel(
        jupyter_dirs, "enc", IPYKERNEL, metadata={"supported_encryption": ["curve"]}
    )
    km = AsyncKernelManager(kernel_name=name, transport_encryption="auto")
    await km.start_kernel()
    try:
        assert isinstance(km.provisioner, NurseryLocalProvisioner)
        public = km.curve_publickey
        assert public is not None
        on_disk = json.loads(Path(km.connection_file).read_text())
        assert on_disk["curve_publickey"] == public.decode()
        for _ in range(2):
            kc = km.client()
            assert kc.curve_publickey == public  # the client encrypts (a kernel in clear
            kc.start_channels()  # would never answer it)
            try:
                await kc.wait_for_ready(timeout=READY)
                reply = await kc.execute_interactive("1", timeout=READY)
                assert reply["content"]["status"] == "ok"
            finally:
                kc.stop_channels()
            await km.restart_kernel()
            assert km.curve_publickey == public
    finally:
        await km.shutdown_kernel(now=True)


def test_required_encryption_over_ipc(jupyter_dirs: dict[str, Path]) -> None:
    """The blocking KernelManager with transport_encryption="required" over ipc: the kernel is
    encrypted and answers an encrypted client."""
    name = nursery_kernel(
        jupyter_dirs, "enc", IPYKERNEL, metadata={"supported_encryption": ["curve"]}
    )
    km = KernelManager(kernel_name=name, transport="ipc", transport_encryption="required")
    km.start_kernel()
    try:
        assert km.curve_publickey is not None
        assert "curve_secretkey" in json.loads(Path(km.connection_file).read_text())
        ready_blocking(km)
    finally:
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize(
    ("policy", "declared"), [("disabled", ["curve"]), ("auto", None), ("auto", [])]
)
async def test_kernels_run_in_clear_where_upstream_runs_them_in_clear(
    jupyter_dirs: dict[str, Path], policy: str, declared: list[str] | None
) -> None:
    """No CurveZMQ keys when the manager's policy is 'disabled' (its default), nor under
    'auto' when the spec does not declare curve; the kernel answers in clear."""
    metadata = {} if declared is None else {"supported_encryption": declared}
    name = nursery_kernel(jupyter_dirs, "clear", IPYKERNEL, metadata=metadata)
    km = AsyncKernelManager(kernel_name=name, transport_encryption=policy)
    await km.start_kernel()
    try:
        assert km.curve_publickey is None
        assert "curve_publickey" not in json.loads(Path(km.connection_file).read_text())
        await ready_async(km)
    finally:
        await km.shutdown_kernel(now=True)


PROGRAM = textwrap.dedent(
    """
    import asyncio, sys
    from jupyter_client import AsyncKernelManager
    from kernel_nursery.provisioning import _guardian

    async def main():
        km = AsyncKernelManager(kernel_name=sys.argv[1])
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        print(km.provisioner.pid, km.connection_file, _guardian.guardian_pid(), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not _guardian.SUPPORTED, reason="the guardian needs Linux pidfds")
async def test_kernel_goes_with_a_killed_server(
    jupyter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A program running kernels with AsyncKernelManager and kernel-nursery-local is killed
    (SIGKILL): the kernel's process group and connection file go with it."""
    name = nursery_kernel(
        jupyter_dirs,
        "fake",
        [sys.executable, FAKE_KERNEL, "{connection_file}", "--grandchild"],
        language="fake",
    )
    script = tmp_path / "server.py"
    script.write_text(PROGRAM)
    await killed_manager_leaves_nothing([sys.executable, str(script), name], ready_within=READY)


def test_the_library_imports_neither_the_bridge_nor_jupyter_client() -> None:
    """``import kernel_nursery`` (and its CLI) leaves compat and jupyter_client unimported."""
    import subprocess

    code = (
        "import sys, kernel_nursery, kernel_nursery.cli; "
        "bad = ('jupyter_client', 'kernel_nursery.compat'); "
        "print([m for m in sys.modules if m.startswith(bad)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("delay", [0, 0.001, 0.01, 0.05])
async def test_a_cancelled_start_leaves_nothing_the_manager_cannot_stop(
    jupyter_dirs: dict[str, Path], delay: float
) -> None:
    """AsyncKernelManager.start_kernel cancelled at several points: either nothing was started,
    or the manager holds the kernel and shuts it down; then nothing remains."""
    import asyncio

    name = nursery_kernel(
        jupyter_dirs, "fake", [sys.executable, FAKE_KERNEL, "{connection_file}"], language="fake"
    )
    km = AsyncKernelManager(kernel_name=name)
    task = asyncio.ensure_future(km.start_kernel())
    await asyncio.sleep(delay)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if km.has_kernel:
        await km.shutdown_kernel(now=True)
    elif km.provisioner is not None:
        await km.provisioner.cleanup(restart=False)
        km.cleanup_connection_file()


async def test_jupyter_restarter_restarts_a_killed_kernel(jupyter_dirs: dict[str, Path]) -> None:
    """jupyter_client's restarter (as jupyter_server runs it) sees a kernel killed from outside
    through our provisioner's poll(), and restarts it through our provisioner."""
    import asyncio

    from jupyter_client.ioloop import AsyncIOLoopKernelManager
    from traitlets.config import Config

    name = nursery_kernel(
        jupyter_dirs, "fake", [sys.executable, FAKE_KERNEL, "{connection_file}"], language="fake"
    )
    config = Config({"KernelRestarter": {"time_to_dead": 0.1}})
    km = AsyncIOLoopKernelManager(kernel_name=name, config=config)
    await km.start_kernel()
    try:
        restarting = asyncio.Event()
        km.add_restart_callback(restarting.set, "restart")  # the restarter exists once started
        pid = km.provisioner.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(READY):
            await restarting.wait()
            # The restart follows the callback, and jupyter_client signals no end of it.
            while km.provisioner.pid in (None, pid):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await ready_async(km)
        assert km.provisioner.pid not in (None, pid)
        assert await km.is_alive()
    finally:
        km.stop_restarter()
        await km.shutdown_kernel(now=True)
    assert not is_running(pid)


GREETER = textwrap.dedent(
    """
    from traitlets import Unicode
    from kernel_nursery import LocalProvisioner

    class Greeter(LocalProvisioner):
        greeting = Unicode("hello", config=True)

        def _finalize_env(self, env):
            super()._finalize_env(env)
            env["GREETING"] = self.greeting
    """
)


async def test_any_provisioner_of_ours_is_reachable_by_name(
    jupyter_dirs: dict[str, Path], install_provisioner: Any
) -> None:
    """A provisioner registered in our group after installation (as ssh and slurm are) is run
    under jupyter_client by 'kernel-nursery' with provisioner_name, its config reaching it."""
    install_provisioner("greeter", "Greeter", GREETER)
    name = nursery_kernel(
        jupyter_dirs,
        "greet",
        [sys.executable, FAKE_KERNEL, "{connection_file}"],
        provisioner="kernel-nursery",
        config={"provisioner_name": "greeter", "greeting": "bonjour"},
        language="fake",
    )
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        inner = km.provisioner.inner
        assert type(inner).__name__ == "Greeter"
        pid = km.provisioner.pid
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"GREETING=bonjour" in environ
    finally:
        await km.shutdown_kernel(now=True)


async def test_provisioner_info_hands_a_kernel_over(jupyter_dirs: dict[str, Path]) -> None:
    """get_provisioner_info / load_provisioner_info: a second provisioner re-attaches to an
    independent kernel for real (it waits for and kills it); info from elsewhere is refused."""
    from kernel_nursery import ProvisionerError

    name = nursery_kernel(
        jupyter_dirs,
        "fake",
        [sys.executable, FAKE_KERNEL, "{connection_file}"],
        config={"independent": True},
        language="fake",
    )
    km = AsyncKernelManager(kernel_name=name)
    await km.start_kernel()
    try:
        info = await km.provisioner.get_provisioner_info()
        other = NurseryLocalProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec)
        await other.load_provisioner_info(info)
        assert other.has_process and await other.poll() is None
        await other.kill()  # returns once the kernel is gone
        assert not is_running(info["kernel_nursery"]["info"]["pid"])
        await other.cleanup()
        stranger = NurseryLocalProvisioner(kernel_id="x", kernel_spec=km.kernel_spec)
        with pytest.raises(ProvisionerError, match="kernel-nursery"):
            await stranger.load_provisioner_info({"kernel_id": "x", "connection_info": {}})
    finally:
        await km.shutdown_kernel(now=True)


async def test_a_kernel_deaf_to_shutdown_and_sigterm_is_killed(
    jupyter_dirs: dict[str, Path],
) -> None:
    """A graceful shutdown of a kernel that ignores the request and SIGTERM escalates to
    SIGKILL on the manager's schedule (our provisioner awaits each grace period) and leaves
    nothing."""
    name = nursery_kernel(
        jupyter_dirs,
        "deaf",
        [sys.executable, FAKE_KERNEL, "{connection_file}", "--ignore-shutdown", "--ignore-term"],
        language="fake",
        interrupt_mode="message",  # the manager interrupts first: not with SIGINT, here
    )
    km = AsyncKernelManager(kernel_name=name, shutdown_wait_time=1.0)
    await km.start_kernel()
    await ready_async(km)
    pid = km.provisioner.pid
    assert pid is not None
    with anyio.fail_after(READY):
        await km.shutdown_kernel()
    assert not is_running(pid) and group_gone(pid)
    assert await km.provisioner.poll() == -signal.SIGKILL


def ready_blocking(km: KernelManager) -> None:
    """Wait until the blocking manager's kernel answers."""
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=READY)
    finally:
        kc.stop_channels()


def test_blocking_manager_sees_an_exit_from_any_event_loop(jupyter_dirs: dict[str, Path]) -> None:
    """The blocking KernelManager starts the kernel on its thread's loop; from another loop
    (asyncio.run), and from the loop of run_sync's runner thread, the kernel's exit is seen:
    wait() returns its status and is_alive() turns False."""
    import asyncio

    km = KernelManager(kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL))
    km.start_kernel()
    try:
        pid = km.provisioner.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def elsewhere() -> tuple[int | None, bool]:
            with anyio.fail_after(READY):
                status = await km.provisioner.wait()
            return status, km.is_alive()  # inside a running loop: on the runner's loop

        status, alive = asyncio.run(elsewhere())
        assert status == -signal.SIGKILL
        assert not alive
        assert not km.is_alive()  # and on the thread's own loop again
    finally:
        km.shutdown_kernel(now=True)
    assert group_gone(pid)


def test_blocking_manager_shuts_down_gracefully_from_another_thread(
    jupyter_dirs: dict[str, Path],
) -> None:
    """A graceful shutdown called from another thread (another loop) than the start ends when
    the kernel exits, though shutdown_wait_time would allow an hour."""
    import threading

    km = KernelManager(
        kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL), shutdown_wait_time=3600
    )
    km.start_kernel()
    pid = km.provisioner.pid
    assert pid is not None
    ready_blocking(km)
    errors: list[BaseException] = []

    def shutdown() -> None:
        from jupyter_core.utils import ensure_event_loop

        try:
            km.shutdown_kernel()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            ensure_event_loop().close()  # the loop run_sync made for this thread

    thread = threading.Thread(target=shutdown, daemon=True)
    thread.start()
    thread.join(READY)
    finished = not thread.is_alive()
    if not finished:  # let it end, then fail
        os.killpg(pid, signal.SIGKILL)
        thread.join(READY)
    assert finished, "the graceful shutdown did not end with the kernel"
    assert not errors
    assert not is_running(pid) and group_gone(pid)


def test_async_manager_sees_an_exit_from_another_event_loop(
    jupyter_dirs: dict[str, Path],
) -> None:
    """An AsyncKernelManager started under one asyncio.run and asked under another sees its
    kernel's exit there (wait() returns, is_alive() is False), and shuts down at once."""
    import asyncio

    km = AsyncKernelManager(kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL))
    asyncio.run(km.start_kernel())
    pid = km.provisioner.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGKILL)

        async def later() -> bool:
            with anyio.fail_after(READY):
                await km.provisioner.wait()
            return await km.is_alive()

        assert not asyncio.run(later())
    finally:

        async def stop() -> None:
            with anyio.fail_after(READY):
                await km.shutdown_kernel()

        asyncio.run(stop())
    assert group_gone(pid)


def free_port() -> int:
    """A tcp port free on loopback now (the kernel binds it soon after)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("cache_ports", [True, False])
def test_blocking_manager_honours_a_port_set_on_it(
    jupyter_dirs: dict[str, Path], cache_ports: bool
) -> None:
    """A shell_port set on the blocking KernelManager is the kernel's (in the manager and the
    connection file); restart_kernel(newports=True) keeps every port with cache_ports (as
    upstream, whose cached ports are not random ones), and with cache_ports=False keeps the set
    port and chooses the others anew."""
    port = free_port()
    km = KernelManager(
        kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL),
        shell_port=port,
        cache_ports=cache_ports,
    )
    km.start_kernel()
    try:
        assert km.shell_port == port
        assert json.loads(Path(km.connection_file).read_text())["shell_port"] == port
        ready_blocking(km)
        before = km.get_connection_info()
        km.restart_kernel(now=True, newports=True)
        after = km.get_connection_info()
        assert after["shell_port"] == port
        assert (after["iopub_port"] == before["iopub_port"]) is cache_ports
        assert json.loads(Path(km.connection_file).read_text())["iopub_port"] == after["iopub_port"]
        ready_blocking(km)
    finally:
        km.shutdown_kernel(now=True)


async def test_async_manager_honours_ports_set_on_it(jupyter_dirs: dict[str, Path]) -> None:
    """Ports set on an AsyncKernelManager with cache_ports=False are the kernel's, encrypted
    under "auto" for a spec declaring curve; it answers."""
    ports = {"shell_port": free_port(), "hb_port": free_port()}
    name = nursery_kernel(
        jupyter_dirs, "nk", IPYKERNEL, metadata={"supported_encryption": ["curve"]}
    )
    km = AsyncKernelManager(
        kernel_name=name, cache_ports=False, transport_encryption="auto", **ports
    )
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        assert {name: info[name] for name in ports} == ports
        assert "curve_publickey" in json.loads(Path(km.connection_file).read_text())
        await ready_async(km)
    finally:
        await km.shutdown_kernel(now=True)


def test_a_missing_program_is_a_file_not_found_error(jupyter_dirs: dict[str, Path]) -> None:
    """A kernel spec whose program does not exist fails the blocking and the async managers'
    start_kernel with a FileNotFoundError (as upstream: callers catch it), ours with its message;
    nothing is left."""
    import asyncio

    from kernel_nursery import LaunchError

    name = nursery_kernel(jupyter_dirs, "missing", ["/nonexistent/kernel", "{connection_file}"])
    with pytest.raises(FileNotFoundError, match="'/nonexistent/kernel' not found") as info:
        KernelManager(kernel_name=name).start_kernel()
    assert isinstance(info.value, LaunchError)
    with pytest.raises(FileNotFoundError):
        asyncio.run(AsyncKernelManager(kernel_name=name).start_kernel())


def test_manager_ip_is_the_ipc_path_prefix(jupyter_dirs: dict[str, Path]) -> None:
    """KernelManager(transport="ipc", ip=PREFIX): the kernel's endpoints are PREFIX-<n>, as
    upstream; the kernel answers on them, and they are gone after the shutdown."""
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="kn-ipc-"))  # a socket path must be short
    prefix = str(short / "mine")
    try:
        km = KernelManager(
            kernel_name=nursery_kernel(jupyter_dirs, "nk", IPYKERNEL), transport="ipc", ip=prefix
        )
        km.start_kernel()
        try:
            info = km.get_connection_info()
            assert info["transport"] == "ipc" and info["ip"] == prefix
            assert json.loads(Path(km.connection_file).read_text())["ip"] == prefix
            ready_blocking(km)
            assert Path(f"{prefix}-{info['shell_port']}").exists()
        finally:
            km.shutdown_kernel(now=True)
        assert not list(short.iterdir())
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_a_second_start_is_refused_and_the_first_kernel_runs_on(
    jupyter_dirs: dict[str, Path],
) -> None:
    """start_kernel() on a manager whose kernel runs (upstream starts a second and leaves the
    first running, unmanaged) is a KernelStateError, also a RuntimeError, before anything is
    made; the first kernel runs on, managed, through the blocking and the async managers."""
    import asyncio

    from kernel_nursery import KernelStateError

    name = nursery_kernel(jupyter_dirs, "nk", IPYKERNEL)
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    try:
        pid = km.provisioner.pid
        file = Path(km.connection_file)
        written = file.stat().st_mtime_ns
        with pytest.raises(KernelStateError, match="still running") as info:
            km.start_kernel()
        assert isinstance(info.value, RuntimeError)
        assert km.provisioner.pid == pid and km.is_alive()
        assert file.stat().st_mtime_ns == written
        ready_blocking(km)
    finally:
        km.shutdown_kernel(now=True)

    async def twice() -> None:
        akm = AsyncKernelManager(kernel_name=name)
        await akm.start_kernel()
        try:
            with pytest.raises(KernelStateError):
                await akm.start_kernel()
            assert await akm.is_alive()
        finally:
            await akm.shutdown_kernel(now=True)

    asyncio.run(twice())
