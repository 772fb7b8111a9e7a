"""Tests for kernel_nursery.provisioning._guardian: kernels do not outlive a managing process that
dies without cleaning up. Real processes throughout: a managing program in a subprocess (on the
test's backend), driven line by line, then killed with SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from kernel_nursery import LocalProvisioner
from kernel_nursery.provisioning import _guardian
from kernel_nursery.provisioning._scripts.guardian import DIRECTORY_PREFIX, RECENT
from kernel_nursery.provisioning.ssh import _master as _ssh_master

from ..conftest import FAKE_KERNEL, TOY_KERNEL
from ..helpers.kernels import SpecFactory
from ..helpers.notify import notifier
from ..helpers.procs import (
    GONE_WITHIN,
    gone,
    is_running,
    live_children,
    parent_of,
    process_group_members,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not _guardian.SUPPORTED, reason="the guardian needs Linux pidfds"),
]


#: Seconds a managing program gets to answer a command (starting ipykernel included).
REPLY_WITHIN = 60

# The managing program: reads one JSON command a line, answers one JSON line.
PROGRAM = textwrap.dedent(
    """
    import json, logging, os, sys
    from contextlib import AsyncExitStack
    import anyio, anyio.to_thread
    from traitlets.config import Config
    from kernel_nursery import KernelSpec, LocalProvisioner, start_kernel
    from kernel_nursery.provisioning import _guardian

    async def main():
        stacks, keep, managers = [], [], []
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                await anyio.sleep_forever()
            cmd = json.loads(line)
            op, reply = cmd["op"], {}
            config = Config({"LocalProvisioner": {"independent": cmd.get("independent", False)}})
            if op == "start":  # through start_kernel: returns once the kernel answers
                if "argv" in cmd:
                    spec = KernelSpec(argv=cmd["argv"], name="fake", language="fake")
                    kw = {"kernel_spec": spec}
                else:
                    kw = {"kernel_name": cmd["name"]}
                stack = AsyncExitStack()
                km = await stack.enter_async_context(start_kernel(config=config, **kw))
                stacks.append(stack)
                managers.append(km)
                reply = {"pid": km.provisioner.pid, "file": km.provisioner.connection_file}
            elif op == "launch":  # a bare provisioner: nobody watches the kernel
                spec = KernelSpec(argv=cmd["argv"], name="toy", language="toy")
                p = LocalProvisioner(kernel_spec=spec)
                kw = await p.pre_launch()
                await p.launch_kernel(kw.pop("cmd"), **kw)
                keep.append(p)
                reply = {"pid": p.pid, "file": p.connection_file}
            elif op == "stop":  # the kernel started last (scopes end in reverse order)
                managers.pop()
                await stacks.pop().aclose()
            elif op == "restart":  # the kernel started last
                km = managers[-1]
                await km.restart_kernel(newports=cmd.get("newports", False))
                reply = {"pid": km.provisioner.pid, "file": km.provisioner.connection_file}
            elif op == "adopt":
                p = LocalProvisioner(config=config)
                await p.load_provisioner_info(cmd["info"])
                keep.append(p)
            elif op == "no-interpreter":
                sys.executable = ""
            reply["guardian"] = _guardian.guardian_pid()
            print(json.dumps(reply), flush=True)

    logging.basicConfig(level=logging.WARNING)  # to stderr, which the test reads
    anyio.run(main, backend=sys.argv[1])
    """
)


class Manager:
    """A managing program in a subprocess."""

    def __init__(self, process: Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def send(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one command; return the program's answer."""
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps({"op": op, **fields}).encode() + b"\n")
        try:
            with anyio.fail_after(REPLY_WITHIN):
                line = await self._stdout.receive_until(b"\n", 1 << 20)
        except (anyio.EndOfStream, anyio.IncompleteRead, TimeoutError):
            pytest.fail(f"the managing program did not answer {op!r}: {self.log()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def start(self, *args: str, **fields: Any) -> dict[str, Any]:
        """Start a fake kernel with *args* through start_kernel."""
        return await self.send(
            "start", argv=[sys.executable, FAKE_KERNEL, "{connection_file}", *args], **fields
        )

    async def kill(self, *, group: bool = False) -> None:
        """SIGKILL the program (with *group*: its whole process group) and reap it."""
        if group:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.kill()
        await self.process.wait()

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@asynccontextmanager
async def managing_program(tmp_path: Path, backend: str) -> AsyncIterator[Manager]:
    """Run the managing program on *backend*, in a session of its own; SIGKILL it at the end."""
    script = tmp_path / "manager.py"
    script.write_text(PROGRAM)
    stderr = tmp_path / "manager.stderr"
    with stderr.open("wb") as err:
        process = await anyio.open_process(
            [sys.executable, str(script), backend],
            stdin=-1,
            stdout=-1,
            stderr=err,
            start_new_session=True,
        )
    async with process:
        try:
            yield Manager(process, stderr)
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()


def environ_of(pid: int) -> dict[str, str]:
    """The environment process *pid* was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


async def kill_group(pgid: int) -> None:
    """SIGKILL a process group the test took over, and wait for its leader."""
    os.killpg(pgid, signal.SIGKILL)
    await gone(pgid)


# ---------------------------------------------------------------------- a dead manager


@pytest.mark.parametrize("kill_group_too", [False, True], ids=["manager", "manager-group"])
@pytest.mark.parametrize("args", [["--grandchild"], ["--grandchild", "--ignore-term"]])
async def test_kernel_group_and_file_go_with_a_killed_manager(
    tmp_path: Path, anyio_backend: str, args: list[str], kill_group_too: bool
) -> None:
    """SIGKILL of the managing process (or of its whole process group): its kernel, the
    kernel's child and its connection file are gone soon after, even for a kernel that ignores
    SIGTERM and JPY_PARENT_PID; the guardian then exits."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        kernel = await manager.start(*args)
        pid, path, guardian = kernel["pid"], Path(kernel["file"]), kernel["guardian"]
        [grandchild] = process_group_members(pid) - {pid}
        assert path.exists() and is_running(grandchild)
        assert environ_of(pid)["JPY_PARENT_PID"] == str(manager.process.pid)
        await manager.kill(group=kill_group_too)
        await gone(guardian)
        assert not is_running(pid) and not is_running(grandchild)
        assert not process_group_members(pid)
        assert not path.exists()


@pytest.mark.parametrize("later", [False, True], ids=["at-once", "later"])
async def test_what_a_dead_kernel_left_goes_with_a_killed_manager(
    tmp_path: Path, anyio_backend: str, later: bool
) -> None:
    """A kernel that died leaving a child in its group, in a manager killed before cleaning
    up: the child is killed too, whether the manager dies at once or later (then the guardian
    knows the group by the members it saw in it once the kernel had exited)."""
    async with notifier() as n, managing_program(tmp_path, anyio_backend) as manager:
        argv = [sys.executable, TOY_KERNEL, "{connection_file}", "--grandchild"]
        kernel = await manager.send("launch", argv=[*argv, "--notify", str(n.port)])
        pid, grandchild = await n.ready()
        os.kill(pid, signal.SIGKILL)
        await gone(pid)
        if later:
            await anyio.sleep(RECENT + 0.5)  # time must pass: nothing to await instead
        await manager.kill()
        await gone(kernel["guardian"])
        assert not is_running(grandchild) and not Path(kernel["file"]).exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("guardian_killed_too", [False, True], ids=["guardian", "no-guardian"])
async def test_ipykernel_goes_with_a_killed_manager(
    tmp_path: Path, anyio_backend: str, guardian_killed_too: bool
) -> None:
    """A real ipykernel exits when its managing process is SIGKILLed: through the guardian, and
    through JPY_PARENT_PID alone when the guardian was killed first."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        kernel = await manager.send("start", name="python3")
        pid, path = kernel["pid"], Path(kernel["file"])
        if guardian_killed_too:
            os.kill(kernel["guardian"], signal.SIGKILL)
            await gone(kernel["guardian"])
        await manager.kill()
        await gone(pid)
        if guardian_killed_too:
            path.unlink()  # nobody was left to remove it: that is the documented limit
        else:
            await gone(kernel["guardian"])
            assert not path.exists()


async def test_independent_kernel_outlives_its_manager(tmp_path: Path, anyio_backend: str) -> None:
    """A kernel launched with independent=True is left alone by the guardian (and gets no
    JPY_PARENT_PID) while the other kernels of its dead manager are stopped."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        guarded = await manager.start()
        free = await manager.start(independent=True)
        assert "JPY_PARENT_PID" not in environ_of(free["pid"])
        await manager.kill()
        await gone(guarded["guardian"])
        assert not is_running(guarded["pid"]) and not Path(guarded["file"]).exists()
        try:
            assert is_running(free["pid"]) and Path(free["file"]).exists()
        finally:
            await kill_group(free["pid"])
            Path(free["file"]).unlink()


async def test_clean_shutdown_unregisters(tmp_path: Path, anyio_backend: str) -> None:
    """A kernel shut down cleanly is forgotten by the guardian: when the manager dies later,
    a new file at the kernel's old connection file path is left alone, and the kernel still
    running is stopped."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        first = await manager.start()
        await manager.send("stop")
        old = Path(first["file"])
        assert not is_running(first["pid"]) and not old.exists()
        old.write_text("{}")  # stands for whatever comes to use the path (or pid) next
        second = await manager.start()
        await manager.kill()
        await gone(second["guardian"])
        assert not is_running(second["pid"]) and not Path(second["file"]).exists()
        assert old.exists()
        old.unlink()


@pytest.mark.parametrize("newports", [False, True])
async def test_restarted_kernel_goes_with_a_killed_manager(
    tmp_path: Path, anyio_backend: str, newports: bool
) -> None:
    """After a restart (on the same ports or new ones), the new kernel is the one stopped when
    the manager dies, and its connection file removed."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        old = await manager.start()
        new = await manager.send("restart", newports=newports)
        assert new["pid"] != old["pid"] and not is_running(old["pid"])
        await manager.kill()
        await gone(new["guardian"])
        assert not is_running(new["pid"]) and not Path(new["file"]).exists()
        assert not Path(old["file"]).exists()


async def test_a_killed_guardian_is_replaced(tmp_path: Path, anyio_backend: str) -> None:
    """If the guardian dies, the next launch starts a new one (with a warning), which takes
    over the kernels launched before and stops them all when the manager dies."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        first = await manager.start()
        os.kill(first["guardian"], signal.SIGKILL)
        await gone(first["guardian"])
        second = await manager.start()
        assert second["guardian"] not in (None, first["guardian"])
        assert "kernel guardian process" in manager.log()
        await manager.kill()
        await gone(second["guardian"])
        for kernel in (first, second):
            assert not is_running(kernel["pid"]) and not Path(kernel["file"]).exists()


async def test_no_guardian_no_failure(tmp_path: Path, anyio_backend: str) -> None:
    """When the guardian cannot be started, kernels still launch; one warning says so."""
    async with managing_program(tmp_path, anyio_backend) as manager:
        await manager.send("no-interpreter")
        kernels = [await manager.start(), await manager.start()]
        assert [k["guardian"] for k in kernels] == [None, None]
        await manager.send("stop")
        await manager.send("stop")
        assert all(not is_running(k["pid"]) for k in kernels)
        assert manager.log().count("Cannot run the kernel guardian process") == 1


async def test_adopted_kernel_goes_with_its_adopter(
    tmp_path: Path, anyio_backend: str, toy_spec: SpecFactory
) -> None:
    """A kernel handed over (launched independent) is stopped when the process that adopted
    it dies; an independent adopter registers nothing."""
    async with notifier() as n:
        p = LocalProvisioner(kernel_spec=toy_spec("--notify", str(n.port)), independent=True)
        async with p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            [pid] = await n.ready()
            info = await p.get_provisioner_info()
            async with managing_program(tmp_path, anyio_backend) as manager:
                reply = await manager.send("adopt", info=info, independent=True)
                assert reply["guardian"] is None
                reply = await manager.send("adopt", info=info)
                assert reply["guardian"] is not None
                await manager.kill()
                assert await p.wait() == -signal.SIGTERM
                await gone(reply["guardian"])
                assert not Path(p.connection_file).exists()
        assert not is_running(pid)


# ---------------------------------------------------------------------- in this process


@pytest.mark.parametrize("independent", [False, True])
async def test_jpy_parent_pid(
    toy_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch, independent: bool
) -> None:
    """A kernel gets JPY_PARENT_PID, this process's pid, unless it is independent: then even
    one inherited from this process's environment is removed."""
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    async with (
        notifier() as n,
        LocalProvisioner(
            kernel_spec=toy_spec("--notify", str(n.port)), independent=independent
        ) as p,
    ):
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        # Read the environment once the kernel runs: just after the spawn, /proc may still show
        # the forked child before its exec (no environment yet, or this process's).
        [pid] = await n.ready()
        assert pid == p.pid
        seen = environ_of(pid).get("JPY_PARENT_PID")
    assert seen == (None if independent else str(os.getpid()))


async def test_one_guardian_for_every_loop_and_thread(
    fake_spec: SpecFactory, anyio_backend: str
) -> None:
    """Kernels launched at once from event loops in several threads (and this one) share one
    guardian, a child of this process that outlives the loops."""

    async def launch() -> int | None:
        async with LocalProvisioner(kernel_spec=fake_spec()) as p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            return _guardian.guardian_pid()

    seen: list[int | None] = []

    async def in_thread() -> None:
        seen.append(
            await anyio.to_thread.run_sync(lambda: anyio.run(launch, backend=anyio_backend))
        )

    async def here() -> None:
        seen.append(await launch())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(in_thread)
        tg.start_soon(here)
    [guardian] = set(seen)
    assert guardian is not None and is_running(guardian)
    assert guardian not in live_children()  # not counted: it lives as long as this process
    assert os.getpid() == parent_of(guardian)


# ---------------------------------------------------------------------- fork

FORKING_PROGRAM = textwrap.dedent(
    """
    import json, os, sys, time
    import anyio
    from kernel_nursery import KernelSpec, LocalProvisioner
    from kernel_nursery.provisioning import _guardian

    keep = []  # a collected asyncio transport would kill its process

    async def launch():
        spec = KernelSpec(argv=json.loads(sys.argv[2]), name="fake", language="fake")
        p = LocalProvisioner(kernel_spec=spec)
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        keep.append(p)
        return {"pid": p.pid, "file": p.connection_file, "guardian": _guardian.guardian_pid()}

    def report(who, kernel):
        print(json.dumps({"who": who, **kernel}), flush=True)

    parent = anyio.run(launch, backend=sys.argv[1])
    if os.fork() == 0:
        report("child", anyio.run(launch, backend=sys.argv[1]))
    else:
        report("parent", parent)
    time.sleep(3600)
    """
)


async def test_forked_child_does_not_keep_its_parents_guardian(
    tmp_path: Path, anyio_backend: str
) -> None:
    """A forked child closes its copy of the guardian's pipe (the parent's death is still
    seen, and its kernels stopped) and starts a guardian of its own for its own kernels."""
    script = tmp_path / "forking.py"
    script.write_text(FORKING_PROGRAM)
    argv = json.dumps([sys.executable, FAKE_KERNEL, "{connection_file}"])
    process = await anyio.open_process([sys.executable, str(script), anyio_backend, argv])
    async with process:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        reports: dict[str, dict[str, Any]] = {}
        child_pid = None
        try:
            with anyio.fail_after(REPLY_WITHIN):
                while len(reports) < 2:
                    report = json.loads(await stdout.receive_until(b"\n", 1 << 20))
                    reports[report.pop("who")] = report
            parent, child = reports["parent"], reports["child"]
            child_pid = parent_of(child["pid"])
            assert child["guardian"] not in (None, parent["guardian"])
            process.kill()
            await process.wait()
            await gone(parent["guardian"])
            assert not is_running(parent["pid"]) and not Path(parent["file"]).exists()
            assert is_running(child["pid"]) and Path(child["file"]).exists()
            os.kill(child_pid, signal.SIGKILL)
            await gone(child["guardian"])
            assert not is_running(child["pid"]) and not Path(child["file"]).exists()
        finally:
            if process.returncode is None:
                process.kill()
            if child_pid is not None and is_running(child_pid):
                os.kill(child_pid, signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()


async def test_this_process_replaces_its_dead_guardian(
    fake_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """In this very process: when its guardian has died, the next launch says so and starts a
    new one, which the kernels then rely on."""

    async def launch_and_stop() -> int | None:
        async with LocalProvisioner(kernel_spec=fake_spec()) as p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            return _guardian.guardian_pid()

    first = await launch_and_stop()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await gone(first)
    with caplog.at_level("WARNING"):
        second = await launch_and_stop()
    assert second is not None and second != first and is_running(second)
    assert "kernel guardian process" in caplog.text


# ---------------------------------------------------------------------- in this process


async def test_a_guardian_that_cannot_start_is_started_at_a_later_launch(
    fresh_guardian: None,
    toy_spec: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the guardian cannot be started, kernels launch anyway, with one warning; a later
    launch starts it and hands it every kernel still registered (not one stopped meanwhile),
    and it stops them when this process goes without cleaning up (here: at exit)."""
    async with notifier() as n, AsyncExitStack() as stack:
        spec = toy_spec("--notify", str(n.port))  # the real interpreter, before it is hidden

        async def launch() -> LocalProvisioner:
            p = await stack.enter_async_context(LocalProvisioner(kernel_spec=spec))
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            await n.ready()
            return p

        with monkeypatch.context() as m, caplog.at_level(logging.WARNING):
            m.setattr(sys, "executable", "/nonexistent/python")
            first, second = await launch(), await launch()
        assert caplog.text.count("Cannot run the kernel guardian process") == 1
        assert _guardian.guardian_pid() is None
        await second.kill()
        await second.cleanup()  # unregistered while no guardian runs
        third = await launch()
        guardian = _guardian.guardian_pid()
        assert guardian is not None and is_running(guardian)
        files = [Path(p.connection_file) for p in (first, third)]
        _guardian._at_exit()  # as at the end of the interpreter: the pipe closes
        with anyio.fail_after(GONE_WITHIN):
            assert [await first.wait(), await third.wait()] == [-signal.SIGTERM] * 2
        await gone(guardian)
        assert not any(f.exists() for f in files)


async def test_an_idle_guardian_is_reaped_at_exit_and_none_starts_after(
    fresh_guardian: None, toy_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """At interpreter exit an idle guardian exits and is reaped (no zombie); a launch after
    that (from a daemon thread, say) starts none, and says nothing."""
    async with LocalProvisioner(kernel_spec=toy_spec()) as p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        popen = _guardian._state.popen
    assert popen is not None and popen.returncode is None
    _guardian._at_exit()
    assert popen.returncode == 0
    with caplog.at_level(logging.WARNING):
        async with LocalProvisioner(kernel_spec=toy_spec()) as p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            assert _guardian.guardian_pid() is None
    assert "guardian" not in caplog.text


# ---------------------------------------------------------------------- what it removes


async def test_a_registered_directory_loses_only_its_sockets(tmp_path: Path) -> None:
    """A directory registered with the guardian (an ssh master's, for its control socket) is
    emptied of its sockets and removed if that empties it; nothing else is removed: not its
    other files, not a directory given by a symbolic link, open to other users or not named
    as a master's (a home directory and the sockets in it)."""
    import socket
    import time

    ended = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    assert _ssh_master._DIRECTORY_PREFIX == DIRECTORY_PREFIX  # what masters' are named
    master = tmp_path / f"{DIRECTORY_PREFIX}master"
    master.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(master / "control"))
    listener.close()  # the socket file stays, as a SIGKILLed ssh leaves it
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "precious.txt").write_text("mine")
    agent = socket.socket(socket.AF_UNIX)
    agent.bind(str(home / "agent.sock"))  # a home directory's socket (an agent's) stays
    agent.close()
    (home / "sub").mkdir()
    shared = tmp_path / f"{DIRECTORY_PREFIX}shared"
    shared.mkdir()
    shared.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(master)
    guardian = await anyio.open_process(
        [sys.executable, "-I", "-S", str(_guardian._SCRIPT), "0.1"], stdin=-1
    )
    async with guardian:
        assert guardian.stdin is not None
        for token, directory in enumerate([link, home, shared, master], 1):
            # A start time no process has: nothing is signalled, even if the pid is reused.
            line = ["register", token, int(ended.stdout), None, 0, None]
            line += [time.monotonic(), str(directory)]
            await guardian.stdin.send(json.dumps(line).encode() + b"\n")
        await guardian.stdin.aclose()
        with anyio.fail_after(30):
            assert await guardian.wait() == 0
    assert not master.exists() and link.is_symlink()
    assert (home / "precious.txt").read_text() == "mine" and (home / "sub").is_dir()
    assert (home / "agent.sock").is_socket()
    assert shared.is_dir()


async def test_the_guardian_removes_only_a_sandboxs_own_folder(tmp_path: Path) -> None:
    """Of the folders a register line names for removal, the guardian removes only one a
    sandbox made (named kn-sandbox-*, private to this user), with all it holds; another name,
    or a folder open to others, stays. A cgroup path outside /sys/fs/cgroup is left alone."""
    ours = tmp_path / "kn-sandbox-ours"
    other = tmp_path / "not-a-sandbox"
    shared = tmp_path / "kn-sandbox-shared"
    for folder, mode in ((ours, 0o700), (other, 0o700), (shared, 0o755)):
        (folder / "deep").mkdir(parents=True)
        (folder / "deep" / "file").write_text("x")
        folder.chmod(mode)
    outside = tmp_path / "kn-sandbox-cgroup"
    outside.mkdir()
    script = Path(_guardian.__file__).with_name("_scripts") / "guardian.py"
    guardian = await anyio.open_process(
        [sys.executable, "-I", "-S", str(script), "0.5"], stdin=-1, start_new_session=True
    )
    sleepers = [await anyio.open_process(["sleep", "60"], start_new_session=True) for _ in range(3)]
    async with guardian, AsyncExitStack() as stack:
        for sleeper in sleepers:
            await stack.enter_async_context(sleeper)
        assert guardian.stdin is not None
        now = time.monotonic()  # the clock the guardian's lines use
        pairs = zip(sleepers, (ours, other, shared), strict=True)
        for token, (sleeper, folder) in enumerate(pairs, 1):
            line = ["register", token, sleeper.pid, sleeper.pid, None, None, now, None]
            line += [[str(outside)], str(folder)]
            await guardian.stdin.send(json.dumps(line).encode() + b"\n")
        await guardian.stdin.aclose()
        with anyio.fail_after(GONE_WITHIN):
            assert await guardian.wait() == 0
            for sleeper in sleepers:
                assert await sleeper.wait() in (-signal.SIGTERM, -signal.SIGKILL)
    assert not ours.exists()
    assert (other / "deep" / "file").exists()
    assert (shared / "deep" / "file").exists()
    assert outside.is_dir()
