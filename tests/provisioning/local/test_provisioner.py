"""Tests for kernel_nursery.provisioning.local: LocalProvisioner, with real processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from traitlets.config import Config

from kernel_nursery import (
    KernelSpec,
    LaunchError,
    LocalProvisioner,
    ProvisionerError,
    read_connection_file,
)
from kernel_nursery._platform import LINUX
from kernel_nursery.connection import reserved_ports, runtime_dir
from kernel_nursery.provisioning import UNKNOWN_EXIT_STATUS, _guardian, shutdown_kernel_process

from ...helpers.kernels import SpecFactory, start_and_stop
from ...helpers.loop_watch import watch_loop
from ...helpers.notify import notifier
from ...helpers.procs import (
    fifo_with_a_blocked_writer,
    is_running,
    needs_linux,
    process_group_members,
    without_linux,
)

pytestmark = pytest.mark.anyio


async def launch(p: LocalProvisioner, **kwargs: Any) -> dict[str, Any]:
    """The manager's launch sequence: pre_launch, launch_kernel, post_launch."""
    kw = await p.pre_launch(**kwargs)
    cmd = kw.pop("cmd")
    info = await p.launch_kernel(cmd, **kw)
    await p.post_launch(**kw)
    return dict(info)


async def test_launch_runs_kernel_with_its_connection_file(
    toy_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """The kernel runs in its own process group and reads a 0600 connection file; leaving the
    block stops it, removes the file and releases the ports."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            info = await launch(p)
            [pid] = await n.ready()
            assert p.has_process and p.pid == pid == p.pgid == os.getpgid(pid)
            assert await p.poll() is None
            path = Path(p.connection_file)
            assert path.parent == jupyter_dirs["runtime"]
            assert path.name == f"kernel-{p.kernel_id}.json"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert read_connection_file(path) == info == p.connection_info
            assert {("tcp", info["shell_port"])} <= reserved_ports()
        assert not is_running(pid)
        assert not path.exists()
        assert not p.has_process
        assert await p.poll() == -signal.SIGTERM


async def test_exit_status_and_many_waiters(toy_spec: SpecFactory) -> None:
    """wait() returns the moment the process exits, to every concurrent waiter."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            await launch(p)
            await n.ready()
            results: list[int | None] = []

            async def waiter() -> None:
                results.append(await p.wait())

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(waiter)
                await anyio.wait_all_tasks_blocked()
                assert results == []
                await p.send_signal(signal.SIGUSR1)
            assert results == [-signal.SIGUSR1] * 5
            assert await p.poll() == -signal.SIGUSR1


async def test_exit_code_of_kernel_that_exits(toy_spec: SpecFactory) -> None:
    """A kernel's own exit code is what wait() and poll() report."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "3")) as p:
        await launch(p)
        assert await p.wait() == 3
        assert await p.poll() == 3


async def test_cleanup_keeps_an_exit_seen_and_kills_a_running_kernel(
    toy_spec: SpecFactory,
) -> None:
    """cleanup() keeps the status of an exit already seen, and kills a kernel still running."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "3")) as p:
        await launch(p)
        assert await p.wait() == 3
        await p.cleanup()
        assert not p.has_process and await p.poll() == 3
    async with notifier() as n:
        p = LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port)))
        await launch(p)
        [pid] = await n.ready()
        await p.cleanup()
        assert not is_running(pid)
        assert await p.poll() == -signal.SIGKILL


async def test_signalling_an_exited_kernel_is_not_an_error(toy_spec: SpecFactory) -> None:
    """send_signal, terminate and kill after the kernel exited do nothing, on both backends."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "0")) as p:
        await launch(p)
        assert await p.wait() == 0
        await p.send_signal(signal.SIGINT)
        await p.terminate()
        await p.kill()
        assert await p.poll() == 0


async def test_no_process_yet() -> None:
    """Before launch there is nothing to signal or wait for."""
    p = LocalProvisioner()
    assert not p.has_process
    assert p.pid is None and p.pgid is None
    assert await p.poll() == 0
    assert await p.wait() == 0
    await p.send_signal(signal.SIGTERM)
    await p.cleanup()


async def test_kill_takes_the_process_group(toy_spec: SpecFactory) -> None:
    """kill() sends SIGKILL to the group: the kernel's own children die with it, and are gone
    by the time cleanup returns."""
    async with notifier() as n:
        p = LocalProvisioner(kernel_spec=toy_spec("--grandchild", "--notify", str(n.port)))
        await launch(p)
        pid, grandchild = await n.ready()
        assert process_group_members(pid) == {pid, grandchild}
        await p.kill()
        assert await p.wait() == -signal.SIGKILL
        await p.cleanup()
        assert not is_running(grandchild)
        assert not process_group_members(pid)


async def test_cleanup_kills_what_an_exited_kernel_left(toy_spec: SpecFactory) -> None:
    """A grandchild left running by a kernel that died is killed by cleanup()."""
    async with notifier() as n:
        p = LocalProvisioner(kernel_spec=toy_spec("--grandchild", "--notify", str(n.port)))
        await launch(p)
        pid, grandchild = await n.ready()
        os.kill(pid, signal.SIGKILL)  # the kernel alone dies; its child stays
        assert await p.wait() == -signal.SIGKILL
        assert is_running(grandchild)
        await p.cleanup()
        assert not is_running(grandchild)
        assert not p.has_process


async def test_sigterm_ignored_means_killed_after_wait_time(
    toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """shutdown_kernel_process kills a kernel that ignores SIGTERM once its wait time is up."""
    async with notifier() as n:
        async with LocalProvisioner(
            kernel_spec=toy_spec("--ignore-term", "--notify", str(n.port))
        ) as p:
            await launch(p)
            await n.ready()
            with caplog.at_level(logging.WARNING):
                assert await shutdown_kernel_process(p, wait_time=0.2) == -signal.SIGKILL
            assert "did not exit" in caplog.text


async def test_shutdown_kernel_process_is_polite_first(toy_spec: SpecFactory) -> None:
    """A kernel that honours SIGTERM ends by it, without SIGKILL."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            await launch(p)
            await n.ready()
            assert await shutdown_kernel_process(p) == -signal.SIGTERM
            assert (
                await shutdown_kernel_process(p) == -signal.SIGTERM
            )  # already stopped: just the status


async def test_shutdown_kernel_process_is_shielded(toy_spec: SpecFactory) -> None:
    """A caller cancelled during shutdown_kernel_process still gets a stopped kernel."""
    async with notifier() as n:
        async with LocalProvisioner(
            kernel_spec=toy_spec("--ignore-term", "--notify", str(n.port))
        ) as p:
            await launch(p)
            [pid] = await n.ready()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await shutdown_kernel_process(p, wait_time=0.1)
            assert not is_running(pid)
            assert await p.poll() == -signal.SIGKILL


async def test_error_in_block_stops_kernel_and_propagates(toy_spec: SpecFactory) -> None:
    """An exception inside ``async with`` stops the kernel; the user's exception is the one seen."""
    async with notifier() as n:
        with pytest.raises(KeyError, match="mine"):  # noqa: PT012 (the block is what raises)
            async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
                await launch(p)
                [pid] = await n.ready()
                raise KeyError("mine")
        assert not is_running(pid)


async def test_cancelled_block_stops_kernel(toy_spec: SpecFactory) -> None:
    """Cancelling the scope around ``async with`` stops the kernel, even one ignoring SIGTERM."""
    async with notifier() as n:
        with anyio.move_on_after(10) as scope:
            async with LocalProvisioner(
                kernel_spec=toy_spec("--ignore-term", "--notify", str(n.port))
            ) as p:
                p.get_shutdown_wait_time = lambda recommended=None: 0.1  # type: ignore[method-assign]
                await launch(p)
                [pid] = await n.ready()
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert not is_running(pid)


class _CancellingProvisioner(LocalProvisioner):
    """Cancels :attr:`scope` at one named point of a launch: inside the worker threads that
    write the connection file or register the kernel with the guardian (while they run), or
    between the launch's steps."""

    scope: anyio.CancelScope | None = None
    point = ""
    loop_thread = 0
    guarded_in_a_thread = False

    def _cancel_from_thread(self, point: str) -> None:
        if self.point == point and self.scope is not None:
            if threading.get_ident() == self.loop_thread:
                self.scope.cancel()  # run at once, on the event loop's thread
            else:
                anyio.from_thread.run_sync(self.scope.cancel)

    def _write_connection_file(self, info: Any) -> Path:
        self._cancel_from_thread("writing the connection file")
        return super()._write_connection_file(info)

    def _guard(self) -> None:
        self.guarded_in_a_thread = threading.get_ident() != self.loop_thread
        self._cancel_from_thread("registering with the guardian")
        super()._guard()


LAUNCH_POINTS = [
    "before pre_launch",
    "writing the connection file",
    "before launch_kernel",
    pytest.param("registering with the guardian", marks=needs_linux),
    pytest.param("registering with a guardian that starts", marks=needs_linux),
    "after launch_kernel",
]


@pytest.mark.parametrize("point", LAUNCH_POINTS)
async def test_cancel_during_launch_leaves_nothing(
    toy_spec: SpecFactory, point: str, request: pytest.FixtureRequest
) -> None:
    """Cancelled at each step of pre_launch + launch_kernel (in the worker threads too, which
    finish their work first), a launch leaves no process, file or port once the provisioner's
    block is left; a pre_launch or launch_kernel that was cancelled itself leaves none at all."""
    starts_guardian = point == "registering with a guardian that starts"
    if starts_guardian:
        request.getfixturevalue("fresh_guardian")  # the registration starts it, in a thread
        point = "registering with the guardian"
    p = _CancellingProvisioner(kernel_spec=toy_spec())
    stage = "pre_launch"
    async with p:
        with anyio.CancelScope() as scope:
            p.scope, p.point, p.loop_thread = scope, point, threading.get_ident()
            if point == "before pre_launch":
                scope.cancel()
            try:
                kw = await p.pre_launch()
                stage = "launch_kernel"
                if point == "before launch_kernel":
                    scope.cancel()
                cmd = kw.pop("cmd")
                await p.launch_kernel(cmd, **kw)
                stage = "running"
                if point == "after launch_kernel":
                    scope.cancel()
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                if stage != "running":
                    assert not p.has_process
                    assert not p.connection_info and not reserved_ports()
                    assert not list(runtime_dir().glob("*kernel*"))
                raise
        assert scope.cancelled_caught
        expected = {
            "before pre_launch": "pre_launch",
            "writing the connection file": "pre_launch",
            "before launch_kernel": "launch_kernel",
            "registering with the guardian": "launch_kernel",
            "after launch_kernel": "running",
        }
        assert stage == expected[point]
        if starts_guardian:
            assert p.guarded_in_a_thread
    # the autouse fixture checks processes, files and ports


async def test_launch_kernel_cancelled_before_spawn_releases_everything(
    toy_spec: SpecFactory,
) -> None:
    """A launch_kernel cancelled outright releases the file and ports pre_launch made."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    kw = await p.pre_launch()
    cmd = kw.pop("cmd")
    path = Path(p.connection_file)
    assert path.exists()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await p.launch_kernel(cmd, **kw)
    assert scope.cancelled_caught
    assert not path.exists() and not reserved_ports() and not p.has_process


@pytest.mark.parametrize(
    ("argv", "message", "builtin"),
    [
        (
            ["no-such-kernel-program-xyz"],
            "'no-such-kernel-program-xyz' not found on PATH",
            FileNotFoundError,
        ),
        (["/nonexistent/kernel"], "'/nonexistent/kernel' not found", FileNotFoundError),
        ([str(Path(__file__))], "is not executable", PermissionError),
    ],
)
async def test_bad_program_is_a_launch_error_leaving_nothing(
    argv: list[str], message: str, builtin: type[OSError]
) -> None:
    """A program that cannot run gives LaunchError, also the built-in error the OS gave (a
    missing program a FileNotFoundError, one not executable a PermissionError, with its errno
    and the program as filename), and leaves no file, port or process."""
    p = LocalProvisioner(kernel_spec=KernelSpec(argv=argv, name="bad"))
    with pytest.raises(LaunchError, match=message) as info:
        await launch(p)
    assert info.value.argv[0] == argv[0]
    assert isinstance(info.value, builtin)
    assert info.value.errno is not None and info.value.filename == argv[0]
    assert str(info.value).startswith("cannot start kernel")  # our message, not the OS's
    assert not p.has_process and not reserved_ports()


async def test_a_file_that_is_no_program_is_a_launch_error(tmp_path: Path) -> None:
    """An executable file the OS cannot run (no format it knows, no #! line) gives a LaunchError
    with the OS's reason, and leaves no file, port or process."""
    program = tmp_path / "not-a-program"
    program.write_bytes(b"\x00\x01garbage\n")
    program.chmod(0o755)
    p = LocalProvisioner(kernel_spec=KernelSpec(argv=[str(program)], name="bad"))
    with pytest.raises(LaunchError, match=r"cannot start kernel '.*not-a-program': Exec format"):
        await launch(p)
    assert not p.has_process and not reserved_ports() and not p.connection_info


async def test_relaunch_after_the_kernel_exited(
    toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A provisioner whose kernel exited launches again without a cleanup in between (the old
    process is reaped first), on the same connection info; launch options it does not know are
    ignored, with a debug message."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            first = await launch(p)
            [pid] = await n.ready()
            await p.kill()
            assert await p.wait() == -signal.SIGKILL
            kw = await p.pre_launch()
            with caplog.at_level(logging.DEBUG):
                second = await p.launch_kernel(kw.pop("cmd"), **kw, unknown_option=1)
            [new_pid] = await n.ready()
            assert new_pid != pid and p.pid == new_pid and await p.poll() is None
            assert second == first
        assert "ignores launch options ['unknown_option']" in caplog.text


async def test_missing_cwd_is_a_launch_error(toy_spec: SpecFactory, tmp_path: Path) -> None:
    """A working directory that does not exist is named in the LaunchError, which is also a
    FileNotFoundError (as the OS's)."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    with pytest.raises(LaunchError, match=r"working directory .*nope") as info:
        await launch(p, cwd=str(tmp_path / "nope"))
    assert isinstance(info.value, FileNotFoundError)


async def test_empty_or_string_command_is_refused(toy_spec: SpecFactory) -> None:
    """A command must be a non-empty list: a string is never handed to a shell."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    for cmd in ([], "sleep 100", ["python", 3]):
        kw = await p.pre_launch()
        kw.pop("cmd")
        with pytest.raises(LaunchError, match="non-empty list"):
            await p.launch_kernel(cmd, **kw)  # type: ignore[arg-type]
        assert not p.has_process and not reserved_ports()


async def test_no_shell_sees_the_arguments(tmp_path: Path) -> None:
    """Shell syntax in argv is passed literally to the program."""
    out = tmp_path / "argv.json"
    code = "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))"
    argv = ["python", "-c", code, str(out), "$(touch pwned)", "; touch pwned2", "{connection_file}"]
    async with LocalProvisioner(
        kernel_spec=KernelSpec(argv=argv),
    ) as p:
        await launch(p, cwd=str(tmp_path))
        assert await p.wait() == 0
        args = json.loads(out.read_text())
    assert args[1:3] == ["$(touch pwned)", "; touch pwned2"]
    assert args[3].endswith(".json") and "{" not in args[3]
    assert not list(tmp_path.glob("pwned*"))


async def test_environment_cwd_and_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel gets the spec's env with ${VAR} substituted, the cwd asked for, and 'python'
    means this interpreter; the caller's env mapping is not modified."""
    out = tmp_path / "seen.json"
    code = (
        "import json, os, sys; json.dump({'exe': sys.executable, 'cwd': os.getcwd(), "
        "'X': os.environ.get('X'), 'BASE': os.environ.get('BASE'), "
        "'PYEXE': os.environ.get('PYTHONEXECUTABLE')}, open(sys.argv[1], 'w'))"
    )
    spec = KernelSpec(
        argv=["python", "-c", code, str(out)],
        language="python",
        env={"X": "${BASE}-${UNKNOWN_VAR_XYZ}-$$"},
    )
    env = {"BASE": "b", "PATH": os.environ["PATH"], "PYTHONEXECUTABLE": "/x"}
    work = tmp_path / "work"
    work.mkdir()
    async with LocalProvisioner(kernel_spec=spec) as p:
        await launch(p, env=env, cwd=str(work))
        assert await p.wait() == 0
    seen = json.loads(out.read_text())
    assert seen == {
        "exe": sys.executable,
        "cwd": str(work),
        "X": "b-${UNKNOWN_VAR_XYZ}-$",
        "BASE": "b",
        "PYEXE": None,
    }
    assert env == {"BASE": "b", "PATH": os.environ["PATH"], "PYTHONEXECUTABLE": "/x"}


async def test_restart_keeps_ports_key_and_file(toy_spec: SpecFactory) -> None:
    """cleanup(restart=True) keeps connection info and file; the next launch reuses them."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            first = await launch(p)
            [pid1] = await n.ready()
            await p.kill(restart=True)
            await p.wait()
            await p.cleanup(restart=True)
            assert Path(p.connection_file).exists()
            assert {("tcp", first["hb_port"])} <= reserved_ports()
            second = await launch(p)
            [pid2] = await n.ready()
            assert second == first and pid2 != pid1
            with pytest.raises(ProvisionerError, match="still running"):
                await p.launch_kernel(["python"])


async def test_ipc_transport(toy_spec: SpecFactory, jupyter_dirs: dict[str, Path]) -> None:
    """With transport ipc, endpoints are paths in the runtime directory."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "0"), transport="ipc") as p:
        info = await launch(p)
        assert info["transport"] == "ipc"
        assert info["ip"] == str(jupyter_dirs["runtime"] / f"kernel-{p.kernel_id[:8]}-ipc")
        assert info["shell_port"] == 1
        await p.wait()


async def test_pre_launch_needs_a_spec() -> None:
    """Without a kernel spec there is nothing to launch."""
    with pytest.raises(ProvisionerError, match="kernel_spec"):
        await LocalProvisioner().pre_launch()


async def test_get_provisioner_info_is_json(toy_spec: SpecFactory) -> None:
    """The info is plain JSON data (the key is text), with what re-attaching needs."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "0"), kernel_id="k1") as p:
        await launch(p)
        info = await p.get_provisioner_info()
        assert json.loads(json.dumps(info)) == info
        assert info["kernel_id"] == "k1"
        assert info["pid"] == p.pid and info["pgid"] == p.pid
        # /proc's start time, which tells the kernel from a later process with its pid.
        assert isinstance(info["start_time"], int) if LINUX else info["start_time"] is None
        assert info["connection_info"]["key"] == p.connection_info["key"]
        await p.wait()


@needs_linux
async def test_reattach_in_this_process(toy_spec: SpecFactory) -> None:
    """A second provisioner loaded with the first one's info can poll, wait for and kill the
    kernel, and its cleanup removes the connection file."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            info = json.loads(json.dumps(await p1.get_provisioner_info()))
            p2 = LocalProvisioner()
            await p2.load_provisioner_info(info)
            assert p2.has_process and p2.pid == pid and p2.kernel_id == p1.kernel_id
            assert p2.connection_info == p1.connection_info
            assert await p2.poll() is None
            results: list[int | None] = []
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(lambda: _append(results, p2.wait()))
                await anyio.wait_all_tasks_blocked()
                await p2.kill()
            assert results == [UNKNOWN_EXIT_STATUS] * 3
            assert await p2.poll() == UNKNOWN_EXIT_STATUS
            assert await p1.wait() == -signal.SIGKILL
            await p2.cleanup()
            assert not Path(p1.connection_file).exists()


async def _append(results: list[int | None], aw: Any) -> None:
    results.append(await aw)


@needs_linux
async def test_reattach_from_another_process(toy_spec: SpecFactory) -> None:
    """A provisioner in a second Python process takes the kernel over and signals it."""
    script = (
        "import anyio, json, signal, sys\n"
        "from kernel_nursery import LocalProvisioner\n"
        "async def main():\n"
        "    p = LocalProvisioner()\n"
        "    await p.load_provisioner_info(json.load(sys.stdin))\n"
        "    print(await p.poll(), flush=True)\n"
        "    await p.send_signal(signal.SIGTERM)\n"
        "    print(await p.wait(), flush=True)\n"
        "anyio.run(main)\n"
    )
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p:
            await launch(p)
            await n.ready()
            info = json.dumps(await p.get_provisioner_info()).encode()
            result = await anyio.run_process([sys.executable, "-c", script], input=info)
            assert result.stdout.decode().split() == ["None", str(UNKNOWN_EXIT_STATUS)]
            assert await p.wait() == -signal.SIGTERM


@needs_linux
async def test_reattach_to_a_reused_pid_sees_an_exited_kernel(toy_spec: SpecFactory) -> None:
    """If the pid now belongs to another process (start time differs), nothing is signalled."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            info = await p1.get_provisioner_info()
            info["start_time"] -= 1
            info["connection_file"] = None
            p2 = LocalProvisioner()
            await p2.load_provisioner_info(info)
            assert await p2.poll() == UNKNOWN_EXIT_STATUS
            await p2.send_signal(signal.SIGKILL)
            assert await p1.poll() is None and is_running(pid)


@needs_linux
async def test_take_over_refuses_info_that_cannot_be_the_kernel(
    toy_spec: SpecFactory, tmp_path: Path
) -> None:
    """Info naming what cannot be the kernel (not a pid above 1, this process, its parent or
    group, another group than the kernel's, no start time and no connection file to tell the
    kernel by), or a connection file that is not the kernel's (cleanup would remove it), is a
    one-line ProvisionerInfoError: nothing is taken over, signalled or removed."""
    from kernel_nursery import ProvisionerInfoError

    bystander = tmp_path / "precious.json"
    bystander.write_text('{"key": "not the kernel\'s"}')

    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            good = json.loads(json.dumps(await p1.get_provisioner_info()))
            bad: list[dict[str, Any]] = [
                {"pid": str(pid)},
                {"pid": True},
                {"pid": -5},
                {"pid": 0},
                {"pid": 1},
                {"pid": 2.5},
                {"pid": 2**40},
                {"pid": os.getpid(), "start_time": None},
                {"pid": os.getppid(), "start_time": None},
                {"pgid": os.getpgrp()},
                {"pgid": pid + 1},
                {"pgid": "x"},
                {"start_time": "yesterday"},
                {"start_time": None, "connection_file": None},
                {"start_time": None, "connection_file": "/elsewhere/kernel-k.json"},
                # Only part of an argument of the kernel's: not the file it was started with.
                {"start_time": None, "connection_file": good["connection_file"][:-5]},
                {"start_time": None, "connection_file": good["connection_file"][1:]},
                {"start_time": None, "connection_file": "e"},
                {"connection_file": 7},
                {"connection_file": str(bystander)},
                {"connection_file": str(bystander.parent)},
            ]
            for change in bad:
                p2 = LocalProvisioner()
                with pytest.raises(ProvisionerInfoError) as raised:
                    await p2.load_provisioner_info({**good, **change})
                assert "\n" not in str(raised.value)
                assert not p2.has_process and not p2.connection_info, change
                await p2.cleanup()
            assert await p1.poll() is None and is_running(pid)
            assert bystander.exists() and Path(p1.connection_file).exists()


@needs_linux
async def test_take_over_without_start_time_by_the_command_line(toy_spec: SpecFactory) -> None:
    """Info without a start time (as jupyter_client saves it) is taken over when the process's
    command line names the connection file, as a kernel's does."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            info = await p1.get_provisioner_info()
            del info["start_time"]
            p2 = LocalProvisioner()
            await p2.load_provisioner_info(info)
            assert p2.pid == pid and await p2.poll() is None
            await p2.kill()
            assert await p1.wait() == -signal.SIGKILL
            assert await p2.wait() == UNKNOWN_EXIT_STATUS
            await p2.cleanup()


@needs_linux
async def test_take_over_opens_no_fifo_or_device(toy_spec: SpecFactory, tmp_path: Path) -> None:
    """A connection file that is a FIFO (or a device) is refused without being opened: a
    writer blocked on the FIFO stays blocked (opening a device may rewind a tape, start a
    watchdog...)."""
    from kernel_nursery import ProvisionerInfoError

    fifo = tmp_path / "kernel-k.json"
    with fifo_with_a_blocked_writer(fifo) as opened:
        async with notifier() as n:
            async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
                await launch(p1)
                await n.ready()
                info = json.loads(json.dumps(await p1.get_provisioner_info()))
                for path in (str(fifo), "/dev/null"):
                    p2 = LocalProvisioner()
                    with pytest.raises(ProvisionerInfoError, match="not its connection file"):
                        await p2.load_provisioner_info({**info, "connection_file": path})
                    assert not p2.has_process
                assert not opened.is_set()


@needs_linux
async def test_take_over_refuses_unusable_paths_and_kernel_ids(toy_spec: SpecFactory) -> None:
    """A connection file path with a NUL byte or a lone surrogate, or a kernel id that is not
    one (not a string, a path...), is a one-line typed error: nothing is taken over."""
    from kernel_nursery import InvalidKernelIdError, ProvisionerInfoError

    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            info = json.loads(json.dumps(await p1.get_provisioner_info()))
            bad: list[tuple[dict[str, Any], type[Exception]]] = [
                ({"connection_file": "/tmp/kernel\0k.json"}, ProvisionerInfoError),
                ({"connection_file": "/tmp/kernel-\ud800.json"}, ProvisionerInfoError),
                (
                    {"connection_file": "/tmp/kernel-\ud800.json", "start_time": None},
                    ProvisionerInfoError,
                ),
                ({"kernel_id": 5}, InvalidKernelIdError),
                ({"kernel_id": "../../k"}, InvalidKernelIdError),
                ({"kernel_id": "a,b"}, InvalidKernelIdError),
            ]
            for change, error in bad:
                p2 = LocalProvisioner()
                with pytest.raises(error) as raised:
                    await p2.load_provisioner_info({**info, **change})
                assert "\n" not in str(raised.value)
                assert not p2.has_process and not p2.connection_info, change
            assert await p1.poll() is None and is_running(pid)
            assert Path(p1.connection_file).exists()


@needs_linux
async def test_take_over_of_a_thread_is_refused() -> None:
    """A pid naming a thread that leads no process (one of this process's threads) is a
    one-line ProvisionerInfoError, not an OSError from the pidfd."""
    from kernel_nursery import ProvisionerInfoError
    from kernel_nursery.provisioning._process import process_start_time

    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    try:
        tid = thread.native_id
        assert tid is not None and tid != os.getpid()
        for start_time in (process_start_time(tid), None):
            p = LocalProvisioner()
            with pytest.raises(ProvisionerInfoError, match="thread") as raised:
                await p.load_provisioner_info(
                    {"kernel_id": "k", "pid": tid, "pgid": None, "start_time": start_time}
                )
            assert "\n" not in str(raised.value) and not p.has_process
    finally:
        release.set()
        thread.join()


@needs_linux
async def test_take_over_of_a_process_that_leads_no_group_is_refused() -> None:
    """A process in the info's group that does not lead it is no kernel (a kernel leads its
    own group, as jupyter_client's do): signalling that group would reach whatever else is in
    it. Refused with a one-line ProvisionerInfoError; nothing is signalled."""
    from kernel_nursery import ProvisionerInfoError
    from kernel_nursery.provisioning._process import process_start_time

    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    async with await anyio.open_process(
        [sys.executable, "-c", code], stdin=-1, stdout=-1, start_new_session=True
    ) as leader:
        try:
            assert leader.stdout is not None
            member = int((await leader.stdout.receive()).decode())
            p = LocalProvisioner()
            info = {
                "kernel_id": "k",
                "pid": member,
                "pgid": leader.pid,
                "start_time": process_start_time(member),
            }
            with pytest.raises(ProvisionerInfoError, match="lead") as raised:
                await p.load_provisioner_info(info)
            assert "\n" not in str(raised.value) and not p.has_process
            assert is_running(member) and is_running(leader.pid)
        finally:
            os.killpg(leader.pid, signal.SIGKILL)


@needs_linux
async def test_reattach_to_a_gone_kernel() -> None:
    """Info about a process that no longer exists loads as an exited kernel."""
    result = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    p = LocalProvisioner()
    await p.load_provisioner_info({"kernel_id": "k", "pid": int(result.stdout), "pgid": None})
    assert await p.wait() == UNKNOWN_EXIT_STATUS


@without_linux
async def test_take_over_without_pidfds_is_refused(toy_spec: SpecFactory) -> None:
    """Where there are no pidfds, taking a kernel over is a ProvisionerError that says so, and
    the kernel is left alone."""
    async with notifier() as n:
        async with LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port))) as p1:
            await launch(p1)
            [pid] = await n.ready()
            info = await p1.get_provisioner_info()
            p2 = LocalProvisioner()
            with pytest.raises(ProvisionerError, match="needs Linux pidfds"):
                await p2.load_provisioner_info(info)
            assert not p2.has_process and is_running(pid)


async def test_cannot_adopt_twice(toy_spec: SpecFactory) -> None:
    """A provisioner that already manages a process refuses to load another."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "0")) as p:
        await launch(p)
        with pytest.raises(ProvisionerError, match="already manages"):
            await p.load_provisioner_info({"pid": 1})
        await p.wait()


async def test_ipc_prefix_too_long_is_refused_before_launch(toy_spec: SpecFactory) -> None:
    """A default ipc prefix too long for a socket path is a PortAllocationError, nothing left."""
    from kernel_nursery import PortAllocationError

    p = LocalProvisioner(kernel_spec=toy_spec(), transport="ipc", ip="/tmp/" + "d" * 110)
    with pytest.raises(PortAllocationError, match="Unix socket path"):
        await launch(p)
    assert not p.has_process


async def test_shutdown_kernel_process_waits_first_after_a_shutdown_request(
    toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With shutdown_requested, a kernel exiting by itself is waited for, not signalled; one
    that does not exit gets SIGTERM after the wait time, then SIGKILL."""
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "7")) as p:
        await launch(p)
        assert await shutdown_kernel_process(p, shutdown_requested=True, wait_time=10) == 7
    async with notifier() as n:
        async with LocalProvisioner(
            kernel_spec=toy_spec("--ignore-term", "--notify", str(n.port))
        ) as p:
            await launch(p)
            await n.ready()
            with caplog.at_level(logging.WARNING):
                status = await shutdown_kernel_process(p, shutdown_requested=True, wait_time=0.1)
            assert status == -signal.SIGKILL
            assert "after the shutdown request" in caplog.text
            assert "after SIGTERM" in caplog.text


async def _pre_launched(p: LocalProvisioner) -> tuple[list[str], dict[str, Any]]:
    """pre_launch, returning the command and launch_kernel's other keywords."""
    kw = await p.pre_launch()
    return kw.pop("cmd"), kw


@pytest.mark.parametrize(
    ("env_update", "message"),
    [
        ({"A=B": "x"}, "environment variable name 'A=B' contains '='"),
        ({"": "x"}, "environment variable name '' is empty"),
        ({"A\0B": "x"}, r"environment variable name 'A\\x00B' contains a NUL byte"),
        ({"NULVAL": "x\0y"}, "value of environment variable 'NULVAL' contains a NUL byte"),
        ({"NUM": 5}, "value of environment variable 'NUM' must be a string, not int"),
        ({"BAD": "\ud800"}, "value of environment variable 'BAD' cannot be encoded"),
    ],
)
async def test_bad_environment_is_a_launch_error_leaving_nothing(
    toy_spec: SpecFactory, env_update: dict[str, Any], message: str
) -> None:
    """A bare launch_kernel with a bad env name or value raises LaunchError naming the variable
    and releases the connection file and ports (nothing is spawned)."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    cmd, kw = await _pre_launched(p)
    path = Path(p.connection_file)
    kw["env"] = {**kw["env"], **env_update}
    with pytest.raises(LaunchError, match=message):
        await p.launch_kernel(cmd, **kw)
    assert not path.exists() and not reserved_ports() and not p.has_process


async def test_bad_env_given_to_pre_launch_is_a_launch_error(toy_spec: SpecFactory) -> None:
    """A caller's env passed to pre_launch with a name containing '=' fails the launch with
    LaunchError, leaving nothing."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    with pytest.raises(LaunchError, match="'A=B' contains '='"):
        await launch(p, env={**os.environ, "A=B": "1"})
    assert not reserved_ports() and not p.has_process


async def test_env_that_is_not_a_mapping_is_refused(toy_spec: SpecFactory) -> None:
    """pre_launch(env=...) that is not a mapping is a LaunchError; nothing is left."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    with pytest.raises(LaunchError, match="env must be a mapping"):
        await launch(p, env=["A=B"])
    assert not reserved_ports() and not p.has_process


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (2, "a\0b", "argument 2 contains a NUL byte"),
        (0, "py\0thon", "argument 0 contains a NUL byte"),
        (1, "\ud800", "argument 1 cannot be encoded"),
    ],
)
async def test_bad_argument_is_a_launch_error_leaving_nothing(
    toy_spec: SpecFactory, index: int, value: str, message: str
) -> None:
    """An argv entry with a NUL byte (or not encodable) is a LaunchError naming its index."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    cmd, kw = await _pre_launched(p)
    cmd[index] = value
    with pytest.raises(LaunchError, match=message):
        await p.launch_kernel(cmd, **kw)
    assert not reserved_ports() and not p.has_process


async def test_bad_cwd_type_is_a_launch_error(toy_spec: SpecFactory) -> None:
    """A cwd that is not a path is a LaunchError naming cwd, leaving nothing."""
    p = LocalProvisioner(kernel_spec=toy_spec())
    cmd, kw = await _pre_launched(p)
    with pytest.raises(LaunchError, match="cwd must be a path"):
        await p.launch_kernel(cmd, cwd=5, **kw)
    assert not reserved_ports() and not p.has_process


@pytest.mark.parametrize("error", [ValueError("odd"), TypeError("odd"), RuntimeError("odd")])
async def test_any_spawn_failure_is_a_launch_error_leaving_nothing(
    toy_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Whatever exception the spawn raises, launch_kernel raises LaunchError (chained to it)
    and releases the connection file and ports."""

    async def failing_open_process(*args: Any, **kwargs: Any) -> Any:
        raise error

    p = LocalProvisioner(kernel_spec=toy_spec())
    cmd, kw = await _pre_launched(p)
    monkeypatch.setattr(anyio, "open_process", failing_open_process)
    with pytest.raises(LaunchError, match="odd") as info:
        await p.launch_kernel(cmd, **kw)
    assert info.value.__cause__ is error
    assert not reserved_ports() and not p.has_process


async def test_base_exception_during_spawn_leaves_nothing(
    toy_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BaseException (KeyboardInterrupt) raised by the spawn propagates as itself and still
    releases the connection file and ports."""

    async def interrupted_open_process(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    p = LocalProvisioner(kernel_spec=toy_spec())
    cmd, kw = await _pre_launched(p)
    monkeypatch.setattr(anyio, "open_process", interrupted_open_process)
    with pytest.raises(KeyboardInterrupt):
        await p.launch_kernel(cmd, **kw)
    assert not reserved_ports() and not p.has_process


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("proc", "directory /proc/self is not writable"),
        ("directory", "is a directory"),
        ("missing_parent", "directory .*missing does not exist"),
        ("file_parent", "is not a directory"),
    ],
)
async def test_unusable_connection_file_is_refused_creating_nothing(
    toy_spec: SpecFactory, tmp_path: Path, where: str, message: str
) -> None:
    """A connection_file that cannot be written (in /proc, a directory, in a missing or
    non-directory parent) is a ConnectionFileError naming it; nothing is created there and
    the ports are released."""
    from kernel_nursery import ConnectionFileError

    area = tmp_path / "area"
    area.mkdir()
    (area / "plain").write_text("")
    (area / "adir").mkdir()
    target = {
        "proc": Path("/proc/self/kernel.json"),
        "directory": area / "adir",
        "missing_parent": area / "missing" / "kernel.json",
        "file_parent": area / "plain" / "kernel.json",
    }[where]
    before = sorted(p.name for p in area.rglob("*"))
    p = LocalProvisioner(kernel_spec=toy_spec(), connection_file=str(target))
    with pytest.raises(ConnectionFileError, match=message) as info:
        await launch(p)
    assert str(target) in str(info.value)
    assert sorted(p.name for p in area.rglob("*")) == before
    assert not reserved_ports() and not p.has_process and not p.connection_info


async def test_kernel_id_that_is_no_file_name_is_refused_creating_nothing(
    toy_spec: SpecFactory,
) -> None:
    """A kernel id that would put the connection file elsewhere (a path separator) or name it
    oddly (a comma, white space, a newline) is a one-line InvalidKernelIdError; nothing is
    written and no port is reserved."""
    from kernel_nursery import InvalidKernelIdError

    before = sorted(runtime_dir().iterdir()) if runtime_dir().exists() else []
    for kernel_id in ("../escaped", "a/b", "a,b", "a b", "a\nb"):
        p = LocalProvisioner(kernel_spec=toy_spec(), kernel_id=kernel_id)
        with pytest.raises(InvalidKernelIdError) as raised:
            await launch(p)
        assert "\n" not in str(raised.value)
        assert not reserved_ports() and not p.has_process and not p.connection_info
    assert (sorted(runtime_dir().iterdir()) if runtime_dir().exists() else []) == before


@pytest.mark.parametrize(
    ("ip", "warned"),
    [("0.0.0.0", True), ("127.0.0.1", False)],  # noqa: S104 (binding everywhere is the subject)
)
async def test_listening_beyond_loopback_is_warned_once(
    toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture, ip: str, warned: bool
) -> None:
    """A tcp kernel bound beyond loopback in clear (its spec says it cannot encrypt) gets one
    warning per launch that its messages are unencrypted; a loopback one gets none."""
    spec = toy_spec("--exit", "0", metadata={"supported_encryption": []})
    async with LocalProvisioner(kernel_spec=spec, ip=ip) as p:
        with caplog.at_level(logging.WARNING):
            await launch(p)
        await p.wait()
    records = [r for r in caplog.records if "unencrypted" in r.getMessage()]
    assert len(records) == (1 if warned else 0)
    if warned:
        assert records[0].levelno == logging.WARNING
        assert f"listens on {ip}, beyond loopback" in records[0].getMessage()


async def test_encrypted_kernel_beyond_loopback_is_not_warned(
    toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel bound beyond loopback with Curve keys (the default there) gets no warning."""
    anywhere = "0.0.0.0"  # noqa: S104 (binding everywhere is the subject)
    async with LocalProvisioner(kernel_spec=toy_spec("--exit", "0"), ip=anywhere) as p:
        with caplog.at_level(logging.WARNING):
            info = await launch(p)
        await p.wait()
    assert "curve_publickey" in info
    assert not [r for r in caplog.records if "unencrypted" in r.getMessage()]


@pytest.mark.parametrize("handshake", [False, True])
async def test_start_and_shutdown_never_block_the_event_loop(
    fake_spec: SpecFactory, fresh_guardian: None, handshake: bool
) -> None:
    """A start (the process's first, which spawns the guardian on Linux; with the handshake, the
    connection file written again) and a shutdown run no spawn nor file work on the event
    loop's thread, and never pause it long (tests/helpers/loop_watch.py)."""
    spec = fake_spec()
    spec.kernel_protocol_version = "5.5"  # the fake kernel does the handshake when asked
    async with watch_loop() as watch:
        await start_and_stop(
            spec, config=Config({"LocalProvisioner": {"kernel_handshake": handshake}})
        )
    # This start spawned it; without pidfds (nox -s portable) there is none.
    assert (_guardian.guardian_pid() is not None) == LINUX
    watch.check()


async def test_kernels_started_at_once_never_block_the_event_loop(
    fake_spec: SpecFactory, fresh_guardian: None
) -> None:
    """Kernels started at once, while one registration spawns the guardian (holding its
    lock), wait for it in worker threads, never on the event loop's thread."""
    async with watch_loop() as watch, anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(start_and_stop, fake_spec())
    watch.check()
