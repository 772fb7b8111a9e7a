"""SSHProvisioner against a real sshd on loopback: the remote side is this machine, reached
through ssh, so the tests can look at the "remote" processes and files directly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel_nursery import (
    InvalidKernelIdError,
    KernelClient,
    KernelManager,
    KernelNursery,
    KernelSpec,
    LaunchError,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerInfoError,
    SSHProvisioner,
)
from kernel_nursery.connection import PORT_NAMES, reserved_ports, validate_connection_info
from kernel_nursery.provisioning import (
    UNKNOWN_EXIT_STATUS,
    KernelProvisionerFactory,
    _guardian,
    shutdown_kernel_process,
)
from kernel_nursery.provisioning._process import process_start_time
from kernel_nursery.provisioning.ssh import (
    RemoteLaunchError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
)
from kernel_nursery.provisioning.ssh import _master as _ssh_master
from kernel_nursery.provisioning.ssh import _provisioner as _ssh

from ...conftest import FAKE_KERNEL
from ...helpers.loop_watch import watch_loop
from ...helpers.procs import fifo_with_a_blocked_writer
from ...helpers.sshd import SSHServer, parent_of, wait_gone

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

IPYKERNEL = ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def ssh_spec(server: SSHServer, argv: list[str] | None = None, **config: Any) -> KernelSpec:
    """A kernel spec whose kernel runs on *server* (by default the fake kernel)."""
    return KernelSpec(
        argv=argv or ["python", FAKE_KERNEL, "{connection_file}"],
        display_name="Remote",
        language="python",
        name="remote",
        metadata={
            "kernel_provisioner": {
                "provisioner_name": "ssh",
                "config": server.provisioner_config(**config),
            }
        },
    )


def provisioner(server: SSHServer, argv: list[str] | None = None, **config: Any) -> SSHProvisioner:
    spec = ssh_spec(server, argv, **config)
    made = KernelProvisionerFactory.instance().create_provisioner_instance("k1", spec, parent=None)
    assert isinstance(made, SSHProvisioner)
    return made


async def launch(p: SSHProvisioner) -> dict[str, Any]:
    kw = await p.pre_launch()
    return dict(await p.launch_kernel(kw.pop("cmd"), **kw))


def remote_chain(p: SSHProvisioner) -> tuple[int, int, int]:
    """The remote kernel's pid, its launcher's (the kernel's parent) and that of the sshd
    session that runs the launcher: the processes "on the remote side" of *p*'s kernel."""
    remote_pid = p.remote_pid
    assert remote_pid is not None
    launcher = parent_of(remote_pid)
    assert launcher is not None
    session = parent_of(launcher)
    assert session is not None
    return remote_pid, launcher, session


def running(pid: int | None) -> bool:
    return pid is not None and bool(wait_gone({pid}, timeout=0))


# ---------------------------------------------------------------------- through a manager


async def test_ipykernel_executes_interrupts_restarts_and_shuts_down(
    remote_clean: SSHServer,
) -> None:
    """A real ipykernel over ssh runs code for a local client, is interrupted through the
    channel, restarts on the same local ports and leaves nothing on either side."""
    async with KernelManager(kernel_spec=ssh_spec(remote_clean, IPYKERNEL)) as km:
        await km.start_kernel()
        p = km.provisioner
        assert isinstance(p, SSHProvisioner)
        info = km.connection_info
        assert info["ip"] == "127.0.0.1"
        remote_pid = p.remote_pid
        assert remote_pid is not None and p.remote_pid != os.getpid()
        async with km.client() as kc:
            result = await kc.execute("import os; print(os.getpid())", timeout=60)
            assert result.stdout.strip() == str(remote_pid)

            results = []
            sleeping = anyio.Event()

            def seen(message: Any) -> None:
                if "sleeping" in str(message.content.get("text", "")):
                    sleeping.set()

            async def run_slow() -> None:
                code = "import time; print('sleeping', flush=True); time.sleep(60)"
                results.append(await kc.execute(code, timeout=60, output_hook=seen))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_slow)
                with anyio.fail_after(30):
                    await sleeping.wait()  # in the user's code: SIGINT interrupts the sleep
                    await km.interrupt_kernel()
            error = results[0].error
            assert error is not None and error["ename"] == "KeyboardInterrupt"

        await km.restart_kernel()
        assert km.connection_info == info  # same local ports, same key
        assert p.remote_pid != remote_pid
        assert not running(remote_pid)
        async with km.client() as kc:
            result = await kc.execute("print(6 * 7)", timeout=60)
            assert result.stdout.strip() == "42"
        await km.restart_kernel(newports=True)
        assert km.connection_info["shell_port"] != info["shell_port"]
        last = km.provisioner
        assert isinstance(last, SSHProvisioner)
        ssh_pid, remote_pid = last.ssh_pid, last.remote_pid
    assert not running(ssh_pid) and not running(remote_pid)
    assert not reserved_ports()


async def test_kernel_killed_remotely_is_noticed_and_restarted(remote_clean: SSHServer) -> None:
    """SIGKILL to the remote kernel is reported through the channel at once, and the manager's
    restart policy brings a new one up."""
    async with KernelManager(kernel_spec=ssh_spec(remote_clean)) as km:
        async with km.events() as events:
            await km.start_kernel()
            p = km.provisioner
            assert isinstance(p, SSHProvisioner)
            first = p.remote_pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            with anyio.fail_after(30):
                async for event in events:
                    if event.kind == "restarted":
                        break
            assert isinstance(km.provisioner, SSHProvisioner)
            assert km.provisioner.remote_pid not in (None, first)


# ---------------------------------------------------------------------- the provisioner


async def test_connection_file_is_private_and_the_key_never_in_argv(
    remote_clean: SSHServer,
) -> None:
    """The remote connection file has mode 0600 and the key appears in no process's command
    line; the file is gone after cleanup."""
    async with provisioner(remote_clean) as p:
        info = await launch(p)
        with pytest.raises(ProvisionerError, match="still running"):
            await p.launch_kernel(["python"])
        with pytest.raises(ProvisionerError, match="already manages"):
            await p.load_provisioner_info(await p.get_provisioner_info())
        path = p.remote_connection_file
        assert path is not None
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
        key = info["key"].encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    assert key not in (entry / "cmdline").read_bytes()
                except OSError:
                    pass
        remote_pid = p.remote_pid
    assert not Path(path).exists()
    assert not running(remote_pid)


async def test_signals_reach_the_remote_group_and_exit_is_reported(
    remote_clean: SSHServer,
) -> None:
    """SIGTERM travels through the channel to the kernel's group; wait() reports its status,
    and poll() agrees, for any number of waiters."""
    async with provisioner(remote_clean) as p:
        await launch(p)
        assert await p.poll() is None
        statuses: list[int | None] = []

        async def waiter() -> None:
            statuses.append(await p.wait())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await p.terminate()
        assert statuses == [-signal.SIGTERM, -signal.SIGTERM]
        assert await p.poll() == -signal.SIGTERM


async def test_remote_kernel_spec_by_name(remote_clean: SSHServer, tmp_path: Path) -> None:
    """remote_kernel_name runs a kernel spec found on the remote host (in its JUPYTER_PATH)."""
    folder = tmp_path / "remote-jupyter" / "kernels" / "fakeremote"
    folder.mkdir(parents=True)
    spec = {"argv": ["python", FAKE_KERNEL, "{connection_file}"], "display_name": "F"}
    (folder / "kernel.json").write_text(json.dumps({**spec, "language": "x"}))
    p = provisioner(
        remote_clean,
        remote_kernel_name="fakeremote",
        remote_env={"JUPYTER_PATH": str(tmp_path / "remote-jupyter")},
    )
    async with p:
        await launch(p)
        assert running(p.remote_pid)
        assert await shutdown_kernel_process(p, wait_time=10) is not None


async def test_remote_kernel_spec_of_the_remote_environment(remote_clean: SSHServer) -> None:
    """remote_kernel_name finds the specs of the remote Python's own environment (its
    virtual environment's share/jupyter), as Jupyter there would."""
    p = provisioner(remote_clean, remote_kernel_name="python3")
    async with p:
        info = await launch(p)
        async with KernelClient(validate_connection_info(info)) as kc:
            await kc.wait_for_ready(timeout=60)


async def test_two_launches_at_once_start_one_kernel(remote_clean: SSHServer) -> None:
    """A second launch_kernel while the first is under way is refused, so one ssh (and one
    remote kernel) runs, and cleanup leaves nothing."""
    async with provisioner(remote_clean) as p:
        kw = await p.pre_launch()
        cmd = kw.pop("cmd")
        outcomes: list[str] = []

        async def launch_once() -> None:
            try:
                await p.launch_kernel(cmd, **kw)
                outcomes.append("launched")
            except ProvisionerError as exc:
                outcomes.append("refused" if "still running" in str(exc) else str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(launch_once)
            tg.start_soon(launch_once)
        assert sorted(outcomes) == ["launched", "refused"]
        assert await p.poll() is None
    assert not reserved_ports()


async def test_cancelled_launch_leaves_nothing(remote_clean: SSHServer) -> None:
    """A launch cancelled at any moment leaves no ssh, no remote kernel and no reserved port."""
    for delay in (0.0, 0.05, 0.2, 0.4, 0.8):
        p = provisioner(remote_clean)
        async with p:
            with anyio.move_on_after(delay):
                await launch(p)
        assert not reserved_ports()
        assert p.ssh_pid is None


async def test_cancelled_manager_start_leaves_nothing(remote_clean: SSHServer) -> None:
    """Cancelling the scope around a manager's start, at several moments, leaves nothing."""
    for delay in (0.1, 0.5, 1.0):
        with anyio.move_on_after(delay):
            async with KernelManager(kernel_spec=ssh_spec(remote_clean)) as km:
                await km.start_kernel()
                await anyio.sleep_forever()
        assert not reserved_ports()


# ---------------------------------------------------------------------- faults


async def test_sshd_session_killed_counts_as_death_and_remote_kernel_ends(
    remote_clean: SSHServer,
) -> None:
    """Killing the sshd serving the connection ends the kernel on the remote side (its channel
    closed) and is noticed here as the kernel's death."""
    async with provisioner(remote_clean) as p:
        await launch(p)
        remote_pid, launcher, session = remote_chain(p)
        assert session in remote_clean.descendants()
        os.kill(session, signal.SIGKILL)
        with anyio.fail_after(20):
            status = await p.wait()
        assert status is not None
        assert not await anyio.to_thread.run_sync(wait_gone, {remote_pid, launcher}, 15)


async def test_remote_launcher_terminated_takes_its_kernel_and_file(
    remote_clean: SSHServer,
) -> None:
    """SIGTERM to the remote launcher (a host shutting down, an administrator) ends the
    kernel's group and removes the connection file, as a closed channel does; the exit is
    reported here."""
    async with provisioner(remote_clean) as p:
        await launch(p)
        remote_pid, launcher, _session = remote_chain(p)
        path = p.remote_connection_file
        assert path is not None
        os.kill(launcher, signal.SIGTERM)
        with anyio.fail_after(20):
            status = await p.wait()
        assert status == -signal.SIGTERM
        assert not await anyio.to_thread.run_sync(wait_gone, {remote_pid, launcher}, 15)
        assert not Path(path).parent.exists()


async def test_remote_launcher_killed_takes_its_kernel_and_file(remote_clean: SSHServer) -> None:
    """SIGKILL to the remote launcher (the OOM killer) takes the kernel with it (Linux), so the
    channel closes and the kernel's end is noticed here, rather than an orphan holding the
    channel open; the connection file's directory goes too."""
    async with provisioner(remote_clean) as p:
        await launch(p)
        _remote_pid, launcher, _session = remote_chain(p)
        path = p.remote_connection_file
        assert path is not None
        # What the launcher started: the kernel, and what removes the files after it.
        started = {pid for pid in remote_clean.descendants() if parent_of(pid) == launcher}
        os.kill(launcher, signal.SIGKILL)
        try:
            with anyio.fail_after(20):
                assert await p.wait() is not None
            assert not await anyio.to_thread.run_sync(wait_gone, started, 15)
            assert not Path(path).parent.exists()
        finally:
            shutil.rmtree(Path(path).parent, ignore_errors=True)


async def test_remote_kernel_starts_with_default_signal_handling(remote_clean: SSHServer) -> None:
    """The remote kernel starts with SIGINT and SIGHUP not ignored, as a local one: a Python
    kernel without a handler of its own gets KeyboardInterrupt on interrupt."""
    check = (
        "import signal, sys; sys.exit("
        "10 * (signal.getsignal(signal.SIGINT) is not signal.default_int_handler)"
        " + (signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL))"
    )
    async with provisioner(remote_clean, remote_argv=["python", "-c", check]) as p:
        await launch(p)
        with anyio.fail_after(30):
            assert await p.wait() == 0


async def test_hung_connection_counts_as_death(remote_clean: SSHServer) -> None:
    """A connection whose server stops answering is given up after ServerAliveInterval *
    ServerAliveCountMax; the kernel ends once the server's session goes."""
    async with provisioner(remote_clean, server_alive_interval=1, server_alive_count_max=2) as p:
        await launch(p)
        remote_pid, launcher, session = remote_chain(p)
        os.kill(session, signal.SIGSTOP)
        try:
            with anyio.fail_after(30):
                status = await p.wait()
            assert status == 255
        finally:
            os.kill(session, signal.SIGKILL)
        assert not await anyio.to_thread.run_sync(wait_gone, {remote_pid, launcher}, 15)


async def test_local_manager_killed_takes_the_remote_kernels(
    remote_clean: SSHServer, tmp_path: Path, short_tmp: Path
) -> None:
    """A manager process killed with SIGKILL leaves no kernel on the remote host, whether the
    kernel had a connection of its own or shared the control master, and nothing in its
    temporary directory (ssh logs, the master's socket directory) nor the remote files."""
    script = tmp_path / "manager.py"
    # Short, so that the master's socket goes in it (under pytest-xdist, tmp_path is too deep).
    temporary = short_tmp
    spec = ssh_spec(remote_clean)
    script.write_text(
        "import anyio, json, sys, select\n"
        "from kernel_nursery import KernelManager, KernelSpec\n"
        f"spec = KernelSpec.from_dict(json.loads({json.dumps(spec.to_dict())!r}), name='r')\n"
        "async def main():\n"
        "    a, b, c = (KernelManager(kernel_spec=spec) for _ in range(3))\n"
        "    async with a, b, c:\n"
        "        await a.start_kernel()\n"
        "        await b.start_kernel()\n"
        "        hub = b.provisioner._master\n"
        "        while not hub.ready():\n"
        "            await anyio.wait_readable(hub.popen.stdout.fileno())\n"
        "        await c.start_kernel()\n"
        "        assert c.provisioner._forwarded is not None\n"
        "        pids = [p.remote_pid for p in (a.provisioner, b.provisioner, c.provisioner)]\n"
        "        pids += [p.ssh_pid for p in (a.provisioner, b.provisioner, c.provisioner)]\n"
        "        print(*pids, hub.popen.pid, flush=True)\n"
        "        from kernel_nursery.provisioning._guardian import guardian_pid\n"
        "        logs = [p._log_file for p in (a.provisioner, b.provisioner, c.provisioner)]\n"
        "        print(guardian_pid(), *logs, flush=True)\n"
        "        files = [p.remote_connection_file for p in (a.provisioner, b.provisioner)]\n"
        "        print(*files, c.provisioner.remote_connection_file, flush=True)\n"
        "        await anyio.sleep_forever()\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, "TMPDIR": str(temporary)}
    async with await anyio.open_process(
        [sys.executable, str(script)], stderr=None, env=env
    ) as manager:
        assert manager.stdout is not None
        with anyio.fail_after(60):
            output = b""
            async for chunk in manager.stdout:
                output += chunk
                if output.count(b"\n") == 3:
                    break
        line, more, remote = output.decode().splitlines()
        assert sorted(p.name[:7] for p in temporary.iterdir()) == ["kernel-"] * 3 + ["kn-ssh-"]
        pids = {int(x) for x in line.split()}
        assert len(pids) == 7 and all(running(pid) for pid in pids)
        # The remote launchers remove the remote files as they end.
        launchers = {ppid for x in line.split()[:3] if (ppid := parent_of(int(x))) is not None}
        guardian, *logs = more.split()
        assert all(Path(log).exists() for log in logs)
        manager.kill()
        await manager.wait()
    # The guardian exits once it has stopped them and removed their files.
    assert not await anyio.to_thread.run_sync(wait_gone, {*pids, *launchers, int(guardian)}, 15)
    assert not list(temporary.iterdir())
    assert not [path for path in remote.split() if Path(path).parent.exists()]


# ---------------------------------------------------------------------- bad input


async def test_authentication_failure_is_typed(remote_clean: SSHServer, tmp_path: Path) -> None:
    """A key the server does not accept: SSHAuthenticationError, nothing left."""
    key = tmp_path / "stranger"
    await anyio.run_process(
        [remote_clean.binaries["ssh-keygen"], "-q", "-N", "", "-t", "ed25519", "-f", str(key)]
    )
    # -i adds to the config's IdentityFile: a config of our own, with the stranger's key only.
    config = tmp_path / "config"
    config.write_text(
        remote_clean.client_config.read_text().replace(str(remote_clean.identity), str(key))
    )
    async with provisioner(remote_clean, ssh_options=["-F", str(config)]) as p:
        with pytest.raises(SSHAuthenticationError, match="authentication failed"):
            await launch(p)
    assert not reserved_ports()


async def test_unknown_and_changed_host_keys_are_refused(
    remote_clean: SSHServer, tmp_path: Path
) -> None:
    """An unknown host key and a changed one are both refused (never accepted silently)."""
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    other = tmp_path / "other"
    await anyio.run_process(
        [remote_clean.binaries["ssh-keygen"], "-q", "-N", "", "-t", "ed25519", "-f", str(other)]
    )
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{remote_clean.port} {other.with_suffix('.pub').read_text()}")
    for known, words in ((empty, "not in known_hosts"), (changed, "CHANGED")):
        options = ["-F", str(remote_clean.client_config), "-o", f"UserKnownHostsFile={known}"]
        async with provisioner(remote_clean, ssh_options=options) as p:
            with pytest.raises(SSHHostKeyError, match=words):
                await launch(p)
        assert known.read_text() == ("" if known == empty else changed.read_text())
    assert not reserved_ports()


async def test_unknown_host_is_typed(remote_clean: SSHServer) -> None:
    """A host name that does not resolve: SSHConnectionError naming it."""
    async with provisioner(remote_clean, host="no-such-host.invalid") as p:
        with pytest.raises(SSHConnectionError, match=r"no-such-host\.invalid"):
            await launch(p)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"remote_python": "/no/such/python"}, "no-python"),
        ({"remote_argv": ["/no/such/kernel", "{connection_file}"]}, "no-kernel"),
        ({"remote_kernel_name": "no-such-kernel"}, "no-kernel"),
        ({"remote_cwd": "/no/such/directory"}, "no-kernel"),
        ({"remote_python": "/bin/false"}, "bad-config"),
    ],
)
async def test_remote_launch_failures_are_typed(
    remote_clean: SSHServer, config: dict[str, Any], reason: str
) -> None:
    """What is missing on the remote host is named in one line; nothing is left."""
    async with provisioner(remote_clean, **config) as p:
        with pytest.raises(RemoteLaunchError) as caught:
            await launch(p)
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)
    assert not reserved_ports()


async def test_kernel_id_that_is_no_file_name_is_refused_remotely_too(
    remote_clean: SSHServer,
) -> None:
    """A kernel id changed after pre_launch (which checks it) to one that is no file name is
    refused by the remote side before it writes anything: RemoteLaunchError, nothing left."""
    async with provisioner(remote_clean) as p:
        kw = await p.pre_launch()
        p.kernel_id = "../../x"
        with pytest.raises(RemoteLaunchError, match="invalid kernel id") as raised:
            await p.launch_kernel(kw.pop("cmd"), **kw)
        assert raised.value.reason == "bad-config" and not p.has_process
    assert not reserved_ports()


async def test_kernel_ids_at_the_edges_launch_remotely(remote_clean: SSHServer) -> None:
    """The longest kernel id (128 characters) and one starting with '_' are taken by both
    sides: the remote connection file is named by it; a letter outside ASCII is refused here
    before anything runs."""
    for kernel_id in ("_" + "a" * 127, "_k"):
        async with provisioner(remote_clean) as p:
            p.kernel_id = kernel_id
            await launch(p)
            path = p.remote_connection_file
            assert path is not None and Path(path).name == f"kernel-{kernel_id}.json"
            await p.kill()
            await p.wait()
    async with provisioner(remote_clean) as p:
        p.kernel_id = "k\u00e9"
        with pytest.raises(InvalidKernelIdError):
            await launch(p)
        assert not p.has_process
    assert not reserved_ports()


async def test_what_no_os_takes_is_a_launch_error(remote_clean: SSHServer) -> None:
    """A NUL byte in the remote environment, command or working directory, or '=' in a
    variable's name: LaunchError naming it (not the remote launcher's traceback), nothing
    left."""
    for config, named in (
        ({"remote_env": {"A": "x\0y"}}, "environment variable 'A'"),
        ({"remote_env": {"A=B": "x"}}, "contains '='"),
        ({"remote_argv": ["python", "-c", "\0"]}, "argument 2"),
        ({"remote_cwd": "/tmp/\0"}, "cwd"),
    ):
        async with provisioner(remote_clean, **config) as p:
            with pytest.raises(LaunchError, match=named) as raised:
                await launch(p)
            assert "\n" not in str(raised.value) and p.ssh_pid is None
    assert not reserved_ports()


async def test_remote_ports_in_use_are_chosen_again_then_typed(
    remote_clean: SSHServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remote ports found taken are replaced; when they stay taken, RemoteLaunchError."""
    import socket

    listeners = []
    for _ in range(5):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listeners.append(sock)
    taken = [s.getsockname()[1] for s in listeners]
    choices = [taken, taken, taken]
    monkeypatch.setattr(_ssh, "_choose_remote_ports", lambda: choices.pop())
    try:
        async with provisioner(remote_clean) as p:
            with pytest.raises(RemoteLaunchError) as caught:
                await launch(p)
        assert caught.value.reason == "ports-in-use"
        assert not choices
    finally:
        for sock in listeners:
            sock.close()


# ---------------------------------------------------------------------- taking over


async def test_take_over_in_this_process(remote_clean: SSHServer) -> None:
    """A second provisioner loaded with the first one's info reaches the kernel through ports
    of its own, and can signal and wait for it."""
    async with provisioner(remote_clean) as p1:
        await launch(p1)
        info = json.loads(json.dumps(await p1.get_provisioner_info()))
        async with provisioner(remote_clean) as p2:
            await p2.load_provisioner_info(info)
            assert p2.remote_pid == p1.remote_pid and p2.kernel_id == p1.kernel_id
            mine = p2.connection_info
            assert mine["key"] == p1.connection_info["key"]
            assert mine["shell_port"] != p1.connection_info["shell_port"]
            async with KernelClient(validate_connection_info(mine)) as kc:
                await kc.wait_for_ready(timeout=30)
            assert await p2.poll() is None
            await p2.kill()
            with anyio.fail_after(20):
                assert await p2.wait() == UNKNOWN_EXIT_STATUS
                assert await p1.wait() == -signal.SIGKILL


async def test_take_over_removes_no_file_but_the_kernels(
    remote_clean: SSHServer, tmp_path: Path
) -> None:
    """Info whose remote_connection_file names another file (outside a launcher's private
    directory, even one holding the key) does not get it removed when the kernel ends."""
    bystander = tmp_path / "kernel-precious.json"
    async with provisioner(remote_clean) as p1:
        await launch(p1)
        info = await p1.get_provisioner_info()
        bystander.write_text(json.dumps({"key": p1.connection_info["key"]}))
        info["remote_connection_file"] = str(bystander)
        async with provisioner(remote_clean) as p2:
            await p2.load_provisioner_info(info)
            await p2.kill()
            with anyio.fail_after(20):
                assert await p2.wait() == UNKNOWN_EXIT_STATUS
        assert bystander.exists()


async def test_independent_kernel_outlives_its_launcher_and_is_taken_over(
    remote_clean: SSHServer, tmp_path: Path
) -> None:
    """An independent kernel survives its launching process's SIGKILL; another provisioner
    takes it over and stops it, leaving nothing behind."""
    spec = ssh_spec(remote_clean, independent=True)
    script = tmp_path / "launcher.py"
    script.write_text(
        "import anyio, json, sys\n"
        "from kernel_nursery import KernelProvisionerFactory, KernelSpec\n"
        f"spec = KernelSpec.from_dict(json.loads({json.dumps(spec.to_dict())!r}), name='r')\n"
        "async def main():\n"
        "    f = KernelProvisionerFactory.instance()\n"
        "    p = f.create_provisioner_instance('k9', spec, parent=None)\n"
        "    kw = await p.pre_launch()\n"
        "    await p.launch_kernel(kw.pop('cmd'), **kw)\n"
        "    print(json.dumps(await p.get_provisioner_info()), flush=True)\n"
        "    await anyio.sleep_forever()\n"
        "anyio.run(main)\n"
    )
    async with await anyio.open_process([sys.executable, str(script)], stderr=None) as launcher:
        assert launcher.stdout is not None
        with anyio.fail_after(60):
            line = b""
            async for chunk in launcher.stdout:
                line += chunk
                if b"\n" in line:
                    break
        launcher.kill()
        await launcher.wait()
    info = json.loads(line)
    remote_pid = info["remote_pid"]
    assert running(remote_pid)
    stopped = False
    try:
        async with provisioner(remote_clean) as p:
            await p.load_provisioner_info(info)
            assert await p.poll() is None
            assert await shutdown_kernel_process(p, wait_time=10) == UNKNOWN_EXIT_STATUS
            stopped = True
        assert not running(remote_pid)
        assert not Path(info["remote_connection_file"]).exists()
    finally:
        if not stopped:  # an independent kernel has no other owner: a failed test stops it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(remote_pid, signal.SIGKILL)
            shutil.rmtree(Path(info["remote_connection_file"]).parent, ignore_errors=True)


async def test_taking_over_a_gone_kernel_adopts_it_as_exited(remote_clean: SSHServer) -> None:
    """Provisioner info naming a kernel that has exited gives an exited kernel, not an error."""
    async with provisioner(remote_clean) as p1:
        await launch(p1)
        info = await p1.get_provisioner_info()
        await p1.kill()
        await p1.wait()
    async with provisioner(remote_clean) as p2:
        await p2.load_provisioner_info(info)
        assert not p2.has_process
        assert await p2.poll() == UNKNOWN_EXIT_STATUS
    assert not reserved_ports()


async def test_taking_over_what_is_no_kernel_is_refused_remotely(remote_clean: SSHServer) -> None:
    """Info naming a running process that leads no process group of its own (no kernel does:
    they are started in a session of their own) is refused by the remote side with a
    RemoteLaunchError; the process is not signalled, nothing stays reserved."""
    async with provisioner(remote_clean) as p1:
        await launch(p1)
        info = await p1.get_provisioner_info()
        await p1.kill()
        await p1.wait()
    async with await anyio.open_process(["sleep", "600"]) as bystander:
        start = process_start_time(bystander.pid)
        info.update(remote_pid=bystander.pid, remote_start_time=start)
        try:
            async with provisioner(remote_clean) as p2:
                with pytest.raises(RemoteLaunchError, match="process group") as raised:
                    await p2.load_provisioner_info(info)
                assert raised.value.reason == "bad-config" and not p2.has_process
            assert bystander.returncode is None and running(bystander.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                bystander.kill()
    assert not reserved_ports()


# ---------------------------------------------------------------------- a shared connection


async def master_ready(p: SSHProvisioner) -> subprocess.Popen[bytes]:
    """Wait until the control master that *p*'s kernel shares says it is up; its process."""
    hub = p._master
    assert hub is not None
    master = hub.popen
    assert master is not None and master.stdout is not None
    with anyio.fail_after(30):
        while not hub.ready():
            assert master.poll() is None
            await anyio.wait_readable(master.stdout.fileno())
    return master


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:*port*."""
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_kernels_at_once_share_one_connection(remote_clean: SSHServer) -> None:
    """A lone kernel has its own connection; a second one on the host starts a control master
    beside its own, and the next ones go through it; their forwards end with them, and the
    master with the last of them."""
    async with provisioner(remote_clean) as first:
        await launch(first)
        hub = first._master
        assert hub is not None
        assert hub.popen is None  # a lone kernel pays for no master
        async with provisioner(remote_clean) as second:
            await launch(second)
            assert second._master is hub
            assert second._forwarded is None  # its own connection, the master beside it
            master = await master_ready(second)
            async with provisioner(remote_clean) as third:
                await launch(third)
                assert third._forwarded is not None
                ports = [third.connection_info[name] for name in ("shell_port", "hb_port")]
                assert all(listening(port) for port in ports)
                await third.kill()
                await third.wait()
                await third.cleanup(restart=True)
                assert not any(listening(port) for port in ports)  # cancelled in the master
                await launch(third)  # a restart through the same master, on the same ports
                assert third._forwarded is not None
                assert all(listening(port) for port in ports)
    assert master.poll() is not None
    assert hub.directory is not None
    assert not hub.directory.exists()


# ---------------------------------------------------------------------- without a server


async def test_no_host_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """A spec without a host, or with one that ssh would read as an option, is refused with
    a one-line error; nothing is reserved."""
    for host in ("", "-oProxyCommand=touch"):
        spec = KernelSpec(argv=["python"], name="r")
        async with SSHProvisioner(kernel_spec=spec, host=host) as p:
            with pytest.raises(ProvisionerError, match="host"):
                await p.pre_launch()
    assert not reserved_ports()


async def test_kernel_id_that_is_no_file_name_is_refused() -> None:
    """A kernel id with a path separator, a comma, white space or a newline (it names the
    remote connection file) is refused with a one-line InvalidKernelIdError before anything
    is reserved or run."""
    spec = KernelSpec(argv=["python"], name="r")
    for kernel_id in ("a/b", "../../x", "a,b", "a b", "a\nb", "-a"):
        async with SSHProvisioner(kernel_spec=spec, host="kn-sshd", kernel_id=kernel_id) as p:
            with pytest.raises(InvalidKernelIdError) as raised:
                await p.pre_launch()
            assert "\n" not in str(raised.value)
            assert not reserved_ports()
            assert p.ssh_pid is None


async def test_host_or_user_a_shell_would_read_is_refused() -> None:
    """A host or user holding shell syntax (ssh puts them into the user's ProxyCommand and
    Match exec, %h and %r) is refused with a one-line error before ssh runs."""
    spec = KernelSpec(argv=["python"], name="r")
    for config in (
        {"host": "kn-sshd$(touch pwned)"},
        {"host": "kn-sshd;id"},
        {"host": "kn-sshd\nid"},
        {"host": "kn-sshd", "user": "me`id`"},
        {"host": "kn-sshd", "user": "me id"},
    ):
        async with SSHProvisioner(kernel_spec=spec, **config) as p:
            with pytest.raises(ProvisionerError, match="invalid ssh") as raised:
                await p.pre_launch()
            assert "\n" not in str(raised.value)
    assert not reserved_ports()


def test_out_of_range_numbers_are_config_errors() -> None:
    """A port or timeout ssh would refuse (with no reason in its log) is refused when the
    provisioner is made from the kernel spec, naming the key."""
    factory = KernelProvisionerFactory.instance()
    for key, value in (
        ("port", 70000),
        ("port", -1),
        ("connect_timeout", 0),
        ("server_alive_interval", -5),
        ("server_alive_count_max", 0),
    ):
        stanza = {"provisioner_name": "ssh", "config": {"host": "kn-sshd", key: value}}
        spec = KernelSpec(argv=["python"], name="r", metadata={"kernel_provisioner": stanza})
        with pytest.raises(ProvisionerConfigError, match=key):
            factory.create_provisioner_instance("k1", spec, parent=None)


async def test_missing_ssh_client_is_a_launch_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ssh_command that cannot be run: LaunchError naming it, nothing reserved, no
    temporary directory left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spec = KernelSpec(argv=["python"], name="r")
    async with SSHProvisioner(kernel_spec=spec, host="h", ssh_command="/no/such/ssh") as p:
        with pytest.raises(LaunchError, match="/no/such/ssh"):
            await launch(p)
    assert not reserved_ports()
    assert p.ssh_pid is None
    assert not list(tmp_path.iterdir())


async def test_master_connection_lost_counts_as_death_of_its_kernels(
    remote_clean: SSHServer,
) -> None:
    """When the shared connection drops, the kernels through it are dead on both sides, and
    the next launch connects again."""
    async with provisioner(remote_clean) as first, provisioner(remote_clean) as second:
        await launch(first)
        await launch(second)
        await master_ready(second)
        async with provisioner(remote_clean) as third:
            await launch(third)
            assert third._forwarded is not None
            remote_pid, launcher, session = remote_chain(third)
            os.kill(session, signal.SIGKILL)  # the master's connection, on the server side
            with anyio.fail_after(30):
                assert await third.wait() is not None
            assert not await anyio.to_thread.run_sync(wait_gone, {remote_pid, launcher}, 15)
            await third.cleanup(restart=True)
            await launch(third)  # connects again
            assert running(third.remote_pid)
        assert await first.poll() is None  # a kernel with a connection of its own lives on


async def test_many_kernels_started_at_once_on_one_host(remote_clean: SSHServer) -> None:
    """Kernels started concurrently on one host all come up and all go, master or not."""
    async with KernelNursery() as nursery:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(lambda: nursery.start_kernel(kernel_spec=ssh_spec(remote_clean)))
        pids = [getattr(km.provisioner, "remote_pid", None) for km in nursery.list_kernels()]
        assert len(pids) == 4
        assert all(running(pid) for pid in pids)
    assert not any(running(pid) for pid in pids)


async def test_user_config_remote_command_does_not_replace_the_launcher(
    remote_clean: SSHServer, tmp_path: Path
) -> None:
    """A host whose ssh config sets RemoteCommand (and a tty) still runs our launcher."""
    config = tmp_path / "config"
    config.write_text(
        remote_clean.client_config.read_text() + "  RemoteCommand echo hello\n  RequestTTY yes\n"
    )
    async with provisioner(remote_clean, ssh_options=["-F", str(config)]) as p:
        await launch(p)
        assert running(p.remote_pid)


async def test_what_is_sent_and_how_ssh_is_called_without_a_server() -> None:
    """Only the spec's env, remote_env and the caller's JPY_/KERNEL_ variables go to the remote
    kernel; the connection options become ssh arguments; bad calls are typed."""
    spec = KernelSpec(argv=["python", "k.py", "{connection_file}"], name="r", env={"A": "1"})
    p = SSHProvisioner(
        kernel_spec=spec,
        host="h",
        user="u",
        port=2222,
        identity_file="/id",
        remote_env={"B": "2"},
        ssh_command="/no/such/ssh",
    )
    async with p:
        assert await p.poll() == 0 and await p.wait() == 0
        await p.send_signal(signal.SIGINT)  # no kernel: nothing to do
        with pytest.raises(ProvisionerError, match="unknown signal"):
            await p.send_signal(12345)
        with pytest.raises(LaunchError, match="mapping"):
            await p.pre_launch(env=["PATH"])
        env = {"PATH": "/local/bin", "KERNEL_USERNAME": "me", "JPY_SESSION_NAME": "n.ipynb"}
        kw = await p.pre_launch(env=env, extra_arguments=["--x"])
        assert kw["cmd"] == ["python", "k.py", "{connection_file}", "--x"]
        assert kw["env"] == {
            "A": "1",
            "B": "2",
            "KERNEL_USERNAME": "me",
            "JPY_SESSION_NAME": "n.ipynb",
        }
        argv = p._ssh_argv(validate_connection_info(p.connection_info), [1, 2, 3, 4, 5])
        assert argv[0] == "/no/such/ssh"
        for pair in (["-p", "2222"], ["-l", "u"], ["-i", "/id"], ["--", "h"]):
            assert any(argv[i : i + 2] == pair for i in range(len(argv)))
        assert "StrictHostKeyChecking" not in " ".join(argv)  # the user's config decides
        with pytest.raises(LaunchError, match="/no/such/ssh"):
            await p.launch_kernel(kw.pop("cmd"), **kw)
    assert not reserved_ports()
    with pytest.raises(ProvisionerError, match="kernel_spec"):
        await SSHProvisioner(host="h").pre_launch()


async def test_provisioner_info_without_what_a_takeover_needs() -> None:
    """Info without a remote pid restores the state only; with a bad remote pid, start time,
    ports or connection file it is refused with a one-line ProvisionerInfoError before ssh
    runs, and nothing stays reserved."""
    spec = KernelSpec(argv=["python"], name="r")
    info = {"kernel_id": "k", "connection_info": {}, "remote_pid": None}
    p = SSHProvisioner(kernel_spec=spec, host="h")
    await p.load_provisioner_info(info)
    assert not p.has_process and p.kernel_id == "k"
    full = {
        "kernel_id": "k",
        "remote_pid": 12345,
        "remote_start_time": 1,
        "connection_info": {
            "transport": "tcp",
            "ip": "127.0.0.1",
            **{name: 1000 + i for i, name in enumerate(PORT_NAMES)},
            "key": "k" * 64,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "",
        },
    }
    with pytest.raises(ProvisionerInfoError, match="remote_ports"):
        await SSHProvisioner(kernel_spec=spec, host="h").load_provisioner_info(full)
    assert not reserved_ports()
    full["remote_ports"] = [2000 + i for i in range(len(PORT_NAMES))]
    for change in (
        {"remote_ports": [2000, 2001]},
        {"remote_ports": ["2000", 2001, 2002, 2003, 2004]},
        {"remote_ports": [0, 2001, 2002, 2003, 2004]},
        {"remote_ports": "20002001"},
        {"remote_connection_file": 7},
        {"remote_connection_file": "/tmp/kernel\0k.json"},
        {"remote_pid": 1},
        {"remote_pid": -1},
        {"remote_pid": "12345"},
        {"remote_pid": True},
        {"remote_pid": 2**40},
        {"remote_start_time": None},
        {"remote_start_time": "1"},
    ):
        p = SSHProvisioner(kernel_spec=spec, host="h")
        with pytest.raises(ProvisionerInfoError) as raised:
            await p.load_provisioner_info({**full, **change})
        assert "\n" not in str(raised.value) and not p.has_process
    assert not reserved_ports()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A new directory with a short path, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="kn-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_control_socket_directory_too_deep_goes_to_tmp(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary directory too deep for a Unix socket's path does not stop the control
    master: its socket's directory is made in /tmp instead, private to this user."""
    deep = short_tmp / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    directory = _ssh_master.control_directory()
    try:
        assert directory.parent == Path("/tmp") and directory.name.startswith("kn-ssh-")
        assert directory.stat().st_mode & 0o777 == 0o700
        assert not list(deep.iterdir())
    finally:
        directory.rmdir()
    monkeypatch.setattr(tempfile, "tempdir", str(short_tmp))
    directory = _ssh_master.control_directory()
    assert directory.parent == short_tmp
    directory.rmdir()


def test_the_remote_side_tells_a_kernels_file_without_opening_others(tmp_path: Path) -> None:
    """The remote launcher's check that a file taken over is the kernel's (before removing it)
    opens no FIFO (a writer blocked on it stays blocked) and takes a path with a NUL byte as
    not the kernel's, rather than failing; a regular file holding the key is the kernel's."""
    from kernel_nursery.provisioning._scripts.ssh_remote import _holds_key

    folder = tmp_path / "kernel-nursery-x"
    folder.mkdir()
    good = folder / "kernel-k.json"
    good.write_text(json.dumps({"key": "secret"}))
    assert _holds_key(str(good), "secret") and not _holds_key(str(good), "other")
    assert not _holds_key(f"{folder}/kernel-\0.json", "secret")
    with fifo_with_a_blocked_writer(folder / "kernel-f.json") as opened:
        assert not _holds_key(str(folder / "kernel-f.json"), "secret")
        assert not opened.is_set()


async def test_start_and_shutdown_never_block_the_event_loop(
    remote_clean: SSHServer, fresh_guardian: None, tmp_path: Path
) -> None:
    """Two kernels on one host (the process's first, which spawns the guardian; the second
    starts the control master) and their shutdown (the master closed, its directory removed)
    run no spawn nor file work on the event loop's thread, and never pause it long
    (tests/helpers/loop_watch.py)."""
    spec = ssh_spec(remote_clean)
    async with watch_loop() as watch:
        async with KernelManager(kernel_spec=spec) as first:
            await first.start_kernel()
            async with KernelManager(kernel_spec=spec) as second:
                await second.start_kernel()
                assert isinstance(second.provisioner, SSHProvisioner)
                hub = second.provisioner._master
                assert hub is not None and hub.popen is not None  # the master was started
    assert _guardian.guardian_pid() is not None  # the first start spawned it
    assert hub.directory is not None and not hub.directory.exists()
    watch.check()


@pytest.mark.parametrize(
    "point",
    ["kernel-nursery-ssh-", "guardian.py", "kn-ssh-", "ControlMaster=yes"],
    ids=["log-file", "guardian-spawn", "master-directory", "master-spawn"],
)
async def test_cancelled_in_a_worker_thread_a_start_leaves_nothing(
    remote_clean: SSHServer,
    fresh_guardian: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
) -> None:
    """Cancelled while a worker thread makes the log file, spawns the guardian, or makes the
    control master's directory or spawns it (the threads finish their work), a start leaves
    nothing: no ssh, log file, registration with the guardian nor, once its last user is
    gone, master or directory; nothing on the remote side."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the log files go here
    spec = ssh_spec(remote_clean)
    async with KernelManager(kernel_spec=spec) as first:
        if point in ("kn-ssh-", "ControlMaster=yes"):
            await first.start_kernel()  # the master starts with a second kernel
        async with watch_loop() as watch:
            with anyio.CancelScope() as scope:
                watch.cancel_at(point, scope)
                async with KernelManager(kernel_spec=spec) as km:
                    await km.start_kernel()
        assert scope.cancelled_caught and watch.cancelled_at is not None
        hub = first.provisioner._master if isinstance(first.provisioner, SSHProvisioner) else None
    assert point in watch.cancelled_at
    assert not _guardian._state.registered
    assert not list(tmp_path.glob("kernel-nursery-ssh-*"))
    if hub is not None:
        assert hub.directory is not None and not hub.directory.exists()
        assert hub.popen is not None and hub.popen.poll() is not None


async def test_releasing_a_master_never_waits_for_its_lock_on_the_event_loop() -> None:
    """Giving a shared connection back while another thread holds the masters' lock (as one
    spawning a master does) waits in a worker thread, never on the event loop's."""
    hub = _ssh_master.Master(("kn-test",))
    hub.users = 2
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with _ssh_master._lock:
            held.set()
            done.wait(1.0)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        await anyio.to_thread.run_sync(held.wait)
        async with watch_loop() as watch:
            await _ssh_master.release(hub, logging.getLogger("test"))
    finally:
        done.set()
        holder.join()
    assert hub.users == 1
    watch.check()
