"""Tests for kernel_nursery.manager._manager: KernelManager and start_kernel()."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from traitlets.config import Config

from kernel_nursery import (
    KernelDiedError,
    KernelEvent,
    KernelManager,
    KernelSpec,
    KernelStateError,
    KernelTimeoutError,
    ProvisionerHookError,
    start_kernel,
)
from kernel_nursery.connection import reserved_ports

from ..conftest import write_kernel
from ..helpers.kernels import SpecFactory, interrupt_a_sleep, pid_of
from ..helpers.procs import is_running, live_children, process_group_members, zombie_children

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


# ---------------------------------------------------------------- the scope


async def test_real_kernel_start_use_and_scope_exit(jupyter_dirs: dict[str, Path]) -> None:
    """A real ipykernel starts ready, runs code through km.client(), and leaving the block
    shuts it down: no process, connection file or port remains."""
    async with KernelManager(kernel_name="python3") as km:
        await km.start_kernel()
        assert await km.is_alive()
        pid = await pid_of(km)
        connection_file = Path(km.provisioner.connection_file)  # type: ignore[union-attr]
        assert connection_file.exists()
        async with km.client() as kc:
            result = await kc.execute("print('hello')", timeout=30)
            assert result.stdout == "hello\n"
    assert not is_running(pid)
    assert not connection_file.exists()
    assert not reserved_ports()


async def test_start_kernel_function_splits_keywords(
    fake_spec: SpecFactory, tmp_path: Path
) -> None:
    """start_kernel() sends manager settings to the manager and launch keywords to the launch."""
    async with start_kernel(
        kernel_spec=fake_spec(), shutdown_wait_time=1.25, cwd=str(tmp_path)
    ) as km:
        assert km.shutdown_wait_time == 1.25
        assert os.readlink(f"/proc/{await pid_of(km)}/cwd") == str(tmp_path)


async def test_exception_in_block_is_the_one_seen(fake_spec: SpecFactory) -> None:
    """An exception raised in the block propagates as it is; the kernel is gone."""
    with pytest.raises(ValueError, match="user error"):  # noqa: PT012
        async with KernelManager(kernel_spec=fake_spec()) as km:
            await km.start_kernel()
            pid = await pid_of(km)
            raise ValueError("user error")
    assert not is_running(pid)


async def test_cancelled_block_shuts_down(fake_spec: SpecFactory) -> None:
    """Cancelling the scope around the block shuts the kernel down."""
    with anyio.CancelScope() as scope:
        async with KernelManager(kernel_spec=fake_spec()) as km:
            await km.start_kernel()
            pid = await pid_of(km)
            scope.cancel()
            await anyio.sleep_forever()
    assert not is_running(pid)


async def test_start_twice_and_outside_the_block(fake_spec: SpecFactory) -> None:
    """Misuse is a KernelStateError, not a second kernel or a hang."""
    km = KernelManager(kernel_spec=fake_spec())
    with pytest.raises(KernelStateError, match="async with"):
        await km.start_kernel()
    async with km:
        with pytest.raises(KernelStateError, match="no kernel"):
            km.connection_info  # noqa: B018
        with pytest.raises(KernelStateError, match="start one first"):
            await km.restart_kernel()
        await km.start_kernel()
        with pytest.raises(KernelStateError, match="already been started"):
            await km.start_kernel()


# ---------------------------------------------------------------- starting badly


async def test_kernel_dying_while_starting_fails_at_once(fake_spec: SpecFactory) -> None:
    """A kernel that exits during start gives KernelDiedError with its status, not a hang."""
    async with KernelManager(kernel_spec=fake_spec("--exit", "3"), ready_timeout=60) as km:
        with anyio.fail_after(10), pytest.raises(KernelDiedError, match="status 3") as info:
            await km.start_kernel()
        assert info.value.exit_status == 3
        assert not km.has_kernel


async def test_kernel_never_ready_times_out(fake_spec: SpecFactory) -> None:
    """A kernel that never answers is a KernelTimeoutError after ready_timeout, and is killed."""
    async with KernelManager(kernel_spec=fake_spec("--mute"), ready_timeout=0.5) as km:
        with pytest.raises(KernelTimeoutError, match="ready_timeout"):
            await km.start_kernel()
        assert not km.has_kernel


async def test_unknown_kernel_name() -> None:
    """An unknown kernel name is NoSuchKernelSpecError before anything starts."""
    from kernel_nursery import NoSuchKernelSpecError

    async with KernelManager(kernel_name="no-such-kernel") as km:
        with pytest.raises(NoSuchKernelSpecError, match="no-such-kernel"):
            await km.start_kernel()


# ---------------------------------------------------------------- stopping


async def test_polite_shutdown(fake_spec: SpecFactory) -> None:
    """shutdown_kernel asks the kernel, which exits 0 by itself; the event says so."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        async with km.events() as events:
            await km.shutdown_kernel()
            event = await events.receive()
        assert (event.kind, event.exit_status) == ("shutdown", 0)
        assert not km.has_kernel
        await km.shutdown_kernel()  # nothing to do: not an error


async def test_now_kills_at_once(fake_spec: SpecFactory) -> None:
    """shutdown_kernel(now=True) skips the request and kills the process group."""
    async with KernelManager(kernel_spec=fake_spec("--ignore-term")) as km:
        await km.start_kernel()
        async with km.events() as events:
            with anyio.fail_after(5):
                await km.shutdown_kernel(now=True)
            assert (await events.receive()).exit_status == -signal.SIGKILL


async def test_stubborn_kernel_is_killed_with_its_children(fake_spec: SpecFactory) -> None:
    """A kernel that ignores the request and SIGTERM is killed after its wait times; the
    process it started is gone too."""
    spec = fake_spec("--ignore-shutdown", "--ignore-term", "--grandchild")
    async with KernelManager(kernel_spec=spec, shutdown_wait_time=0.2) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        members = process_group_members(pid)
        assert len(members) == 2
        async with km.events() as events:
            await km.shutdown_kernel()
            assert (await events.receive()).exit_status == -signal.SIGKILL
    assert not any(is_running(m) for m in members)


# ---------------------------------------------------------------- restarting


async def test_restart_keeps_id_ports_and_key(fake_spec: SpecFactory) -> None:
    """restart_kernel gives a new process with the same id, ports and key."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        before, pid = km.connection_info, await pid_of(km)
        kernel_id = km.kernel_id
        async with km.events() as events:
            await km.restart_kernel()
            kinds = [(await events.receive()).kind for _ in range(2)]
        assert kinds == ["restarting", "restarted"]
        assert km.connection_info == before and km.kernel_id == kernel_id
        assert await pid_of(km) != pid and not is_running(pid)
        assert await km.is_alive()


async def test_restart_with_newports(fake_spec: SpecFactory) -> None:
    """restart_kernel(newports=True) really gives new ports, and releases the old ones."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        old = km.connection_info
        await km.restart_kernel(newports=True)
        new = km.connection_info
        assert new["shell_port"] != old["shell_port"]
        assert ("tcp", old["shell_port"]) not in reserved_ports()
        assert ("tcp", new["shell_port"]) in reserved_ports()
        async with km.client() as kc:
            await kc.wait_for_ready(timeout=30)


async def test_crashed_kernel_is_restarted(fake_spec: SpecFactory) -> None:
    """A kernel that dies unexpectedly is restarted, and the events say so."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with km.events() as events:
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(30):
                crashed = await events.receive()
                restarted = await events.receive()
        assert (crashed.kind, crashed.exit_status) == ("restarting", -signal.SIGKILL)
        assert restarted.kind == "restarted"
        await km.wait_for_ready(30)
        assert await pid_of(km) != pid


async def test_crash_loop_stops_at_the_limit(fake_spec: SpecFactory) -> None:
    """A kernel that keeps dying soon after starting is restarted restart_limit times, then
    reported dead, and nothing of it remains."""
    async with KernelManager(
        kernel_spec=fake_spec("--crash-after", "1"), restart_limit=2, stable_start_time=30
    ) as km:
        async with km.events() as events:
            await km.start_kernel()
            kinds: list[str] = []
            with anyio.fail_after(60):
                async for event in events:
                    kinds.append(event.kind)
                    if event.kind == "dead":
                        assert event.exit_status == 1
                        break
        assert kinds == [
            "starting",
            "started",
            "restarting",
            "restarted",
            "restarting",
            "restarted",
            "dead",
        ]
        assert km.dead and not km.has_kernel
        assert not reserved_ports()


async def test_no_autorestart_still_reports_death(fake_spec: SpecFactory) -> None:
    """With autorestart off, a kernel killed from outside is noticed at once: a ``dead`` event
    with its exit status, ``km.dead``, and the manager cleans up."""
    async with KernelManager(kernel_spec=fake_spec(), autorestart=False) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with km.events() as events:
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(30):
                event = await events.receive()
        assert (event.kind, event.exit_status) == ("dead", -signal.SIGKILL)
        assert km.dead and not km.has_kernel and km.pid is None
        assert not await km.is_alive()
        assert not reserved_ports()
        await km.start_kernel()  # a dead kernel can be started again, on new ports
        assert await km.is_alive() and not km.dead


RECORDING = textwrap.dedent(
    """
    from kernel_nursery import LocalProvisioner

    CALLS = []

    class Provisioner(LocalProvisioner):
        async def shutdown_requested(self, restart=False):
            CALLS.append(("shutdown_requested", restart))

        async def terminate(self, restart=False):
            CALLS.append(("terminate", restart))
            await super().terminate(restart)

        async def kill(self, restart=False):
            CALLS.append(("kill", restart))
            await super().kill(restart)

        async def cleanup(self, restart=False):
            CALLS.append(("cleanup", restart))
            await super().cleanup(restart)
    """
)


async def test_restart_flag_reaches_every_step(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """restart=True reaches shutdown_requested, terminate, kill and cleanup on a restart, and
    restart=False on the final shutdown."""
    install_provisioner("recording", "Provisioner", RECORDING)
    spec = fake_spec(
        "--ignore-shutdown",
        "--ignore-term",
        metadata={"kernel_provisioner": {"provisioner_name": "recording"}},
    )
    async with KernelManager(kernel_spec=spec, shutdown_wait_time=0.1) as km:
        await km.start_kernel()
        calls: list[tuple[str, bool]] = sys.modules[type(km.provisioner).__module__].CALLS
        await km.restart_kernel()
        assert calls and {flag for _, flag in calls} == {True}
        assert [name for name, _ in calls][:3] == ["shutdown_requested", "terminate", "kill"]
        assert ("cleanup", True) in calls
        calls.clear()
        await km.restart_kernel(now=True)
        assert calls[0] == ("kill", True)
        assert {flag for _, flag in calls} == {True} and ("cleanup", True) in calls
        calls.clear()
    assert {flag for _, flag in calls} == {False}
    assert ("terminate", False) in calls and ("cleanup", False) in calls


REPORTING = textwrap.dedent(
    """
    from kernel_nursery import LocalProvisioner

    class Provisioner(LocalProvisioner):
        async def launch_kernel(self, cmd, **kwargs):
            self.report_progress("WAITING", detail="in line")
            info = await super().launch_kernel(cmd, **kwargs)
            self.report_progress("RUNNING", node="here", detail=f"pid {self.pid}")
            return info
    """
)


async def test_launch_progress_becomes_progress_events(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """What a provisioner reports while it launches reaches the manager's subscribers as
    progress events, between starting (or restarting) and started (or restarted)."""
    install_provisioner("reporting", "Provisioner", REPORTING)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "reporting"}})
    async with KernelManager(kernel_spec=spec) as km, km.events() as events:
        await km.start_kernel()
        await km.restart_kernel(now=True)
        await km.shutdown_kernel()
        with anyio.fail_after(5):
            seen = [(e.kind, e.state, e.node) for e in [await events.receive() for _ in range(9)]]
    launched = [("progress", "WAITING", None), ("progress", "RUNNING", "here")]
    assert seen == [
        ("starting", None, None),
        *launched,
        ("started", None, None),
        ("restarting", None, None),
        *launched,
        ("restarted", None, None),
        ("shutdown", None, None),
    ]


RAISING_HOOK = textwrap.dedent(
    """
    from kernel_nursery import LocalProvisioner

    class Provisioner(LocalProvisioner):
        async def shutdown_requested(self, restart=False):
            raise RuntimeError("hostile shutdown_requested")
    """
)


async def test_a_provisioner_hook_that_raises_does_not_hang_the_close(
    install_provisioner: Callable[..., None],
) -> None:
    """A provisioner whose shutdown_requested raises: the manager's close still ends (its
    client's tasks with it), the kernel is stopped and its file and ports released, and the
    close raises ProvisionerHookError, caused by what the hook raised."""
    install_provisioner("raising", "Provisioner", RAISING_HOOK)
    # ipykernel: with it, the client's tasks outlived the failed stop and the close hung.
    spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        name="ipy",
        language="python",
        metadata={"kernel_provisioner": {"provisioner_name": "raising"}},
    )
    started: list[Any] = []

    async def run() -> None:
        async with KernelManager(kernel_spec=spec) as km:
            await km.start_kernel()
            started.extend((km.pid, km.connection_file))

    with anyio.fail_after(30), pytest.raises(ProvisionerHookError, match="hostile") as caught:
        await run()
    assert caught.value.hook == "shutdown_requested"
    assert isinstance(caught.value.__cause__, RuntimeError)
    pid, file = started
    assert pid is not None and not is_running(pid) and not zombie_children()
    assert file is not None and not Path(file).exists()
    assert not reserved_ports()


# ---------------------------------------------------------------- interrupts and config


async def test_a_busy_kernel_is_interrupted_before_it_is_asked_to_shut_down() -> None:
    """A kernel busy in a long sleep is interrupted first, then exits politely (status 0) on
    the shutdown request, long before a shutdown_wait_time of a minute runs out."""
    code = "print('busy', flush=True); import time; time.sleep(100)"
    async with KernelManager(kernel_name="python3", shutdown_wait_time=60) as km:
        async with km.events() as events:
            await km.start_kernel()
            async with km.client() as kc, kc.execute_stream(code) as outputs:
                async for _ in outputs:
                    break  # its first output: it is busy in the sleep
            assert km.execution_state == "busy"
            with anyio.fail_after(30):  # a hang's guard; without the interrupt: 60 s, then SIGTERM
                await km.shutdown_kernel()
            kinds = {}
            async for event in events:
                kinds[event.kind] = event.exit_status
                if event.kind == "shutdown":
                    break
    assert kinds["shutdown"] == 0


@pytest.mark.parametrize("mode", ["signal", "message"])
async def test_interrupt_follows_the_spec(mode: str) -> None:
    """interrupt_kernel uses SIGINT or interrupt_request as the spec's interrupt_mode says."""
    async with KernelManager(kernel_name="python3") as km:
        spec = await km.get_kernel_spec()
        km._kernel_spec = KernelSpec(**{**spec.__dict__, "interrupt_mode": mode})
        await km.start_kernel()
        error = await interrupt_a_sleep(km)
        assert error is not None and error["ename"] == "KeyboardInterrupt"
        assert await km.is_alive()


async def test_configuration_reaches_the_provisioner(fake_spec: SpecFactory) -> None:
    """Traitlets config on the manager sets the provisioner's wait times and transport."""
    config = Config(
        {"KernelManager": {"shutdown_wait_time": 1.5, "stable_start_time": 2.5, "transport": "ipc"}}
    )
    async with KernelManager(kernel_spec=fake_spec(), config=config) as km:
        assert km.shutdown_wait_time == 1.5
        await km.start_kernel()
        assert km.provisioner is not None
        assert km.provisioner.get_shutdown_wait_time() == 1.5
        assert km.provisioner.get_stable_start_time() == 2.5
        assert km.connection_info["transport"] == "ipc"


# ---------------------------------------------------------------- leaks


#: fds a cycle may still be closing (zmq's I/O thread) when they are counted.
_FD_NOISE = 12


@pytest.mark.timeout(300)
async def test_many_cycles_leak_nothing(
    fake_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """100 start/shutdown cycles leave file descriptors, threads, zombies, children and
    runtime files as they were (50 and 50: a leak of one fd per cycle shows as 50, far above
    the noise; with the other copy of the suite on a 2-core machine, 200 took over 300 s)."""
    spec = fake_spec()

    async def cycle() -> None:
        async with KernelManager(kernel_spec=spec) as km:
            await km.start_kernel()

    await cycle()  # warm-up: zmq's context and its I/O thread are created once per process
    threads = threading.active_count()
    for _ in range(50):
        await cycle()
    fds_at_50 = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        await cycle()
    await anyio.wait_all_tasks_blocked()
    # zmq closes its sockets' OS-level fds in its own I/O thread, a moment after we close them,
    # so a count taken now may hold a few of the last cycle's: compare across 50 cycles, where
    # a leak of even one fd per cycle would show as 50.
    assert len(os.listdir("/proc/self/fd")) - fds_at_50 < _FD_NOISE
    assert threading.active_count() <= threads  # asyncio (3.11) reaps each child in a thread
    assert not zombie_children()
    assert not live_children()
    assert not list(jupyter_dirs["runtime"].iterdir())


async def test_events_end_when_the_manager_closes(fake_spec: SpecFactory) -> None:
    """An events subscription ends (the iteration finishes) when the manager closes."""
    seen: list[KernelEvent] = []
    async with anyio.create_task_group() as tg:
        async with KernelManager(kernel_spec=fake_spec()) as km:

            async def listen() -> None:
                async with km.events() as events:
                    async for event in events:
                        seen.append(event)

            tg.start_soon(listen)
            await anyio.wait_all_tasks_blocked()
            await km.start_kernel()
    assert [e.kind for e in seen] == ["starting", "started", "shutdown"]


# ---------------------------------------------------------------- the promise's edges


async def test_shutdown_cancels_a_start_waiting_for_readiness(fake_spec: SpecFactory) -> None:
    """shutdown_kernel while a start waits for its kernel cancels that start (its caller gets
    KernelStateError) and returns promptly, long before ready_timeout."""
    errors: list[BaseException] = []
    async with KernelManager(kernel_spec=fake_spec("--mute"), ready_timeout=600) as km:
        async with km.events() as events, anyio.create_task_group() as tg:

            async def start() -> None:
                try:
                    await km.start_kernel()
                except KernelStateError as exc:
                    errors.append(exc)

            tg.start_soon(start)
            assert (await events.receive()).kind == "starting"
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(30):
                await km.shutdown_kernel()
            assert (await events.receive()).kind == "shutdown"
        assert not km.has_kernel
    assert len(errors) == 1 and "shut down while it was starting" in str(errors[0])


async def test_caller_bounds_a_shutdown_waiting_for_the_manager(fake_spec: SpecFactory) -> None:
    """A caller's cancel scope bounds shutdown_kernel while it waits for another operation of
    the manager (here a slow polite shutdown in another task); the kernel is stopped anyway."""
    spec = fake_spec("--ignore-shutdown", "--ignore-term")
    async with KernelManager(kernel_spec=spec, shutdown_wait_time=2) as km:
        await km.start_kernel()
        pid = await pid_of(km)
        async with anyio.create_task_group() as tg:
            tg.start_soon(km.shutdown_kernel)
            await anyio.wait_all_tasks_blocked()
            start = anyio.current_time()
            with anyio.move_on_after(0.2):
                await km.shutdown_kernel()
            assert anyio.current_time() - start < 1.5
    assert not is_running(pid)


async def test_leaving_the_block_cancels_a_start_from_another_task(
    fake_spec: SpecFactory,
) -> None:
    """A manager's block that ends while another task's start waits for the kernel ends
    promptly; the start raises KernelStateError and leaves nothing."""
    errors: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(30):
            async with KernelManager(kernel_spec=fake_spec("--mute"), ready_timeout=600) as km:

                async def start() -> None:
                    try:
                        await km.start_kernel()
                    except KernelStateError as exc:
                        errors.append(exc)

                tg.start_soon(start)
                await anyio.wait_all_tasks_blocked()
    assert len(errors) == 1
    assert not km.has_kernel


@pytest.mark.parametrize("how", ["auto", "restart_kernel"])
async def test_restarted_means_ready(fake_spec: SpecFactory, how: str) -> None:
    """``restarted`` is emitted once the new kernel answers, after an automatic restart as
    after restart_kernel(): a kernel that takes 0.5 s to bind is not reported before."""
    async with KernelManager(kernel_spec=fake_spec("--slow-start", "0.5")) as km:
        await km.start_kernel()
        async with km.events() as events:
            before = anyio.current_time()
            if how == "auto":
                os.kill(await pid_of(km), signal.SIGKILL)
            else:
                await km.restart_kernel(now=True)
            with anyio.fail_after(30):
                kinds = [(await events.receive()).kind for _ in range(2)]
            assert kinds == ["restarting", "restarted"]
            assert anyio.current_time() - before >= 0.5
        async with km.client() as kc:
            await kc.kernel_info(timeout=0.5 * 60)


async def test_failed_relaunch_is_reported_dead(fake_spec: SpecFactory, tmp_path: Path) -> None:
    """A kernel whose automatic relaunch cannot even start (its working directory is gone) is
    reported dead with the status of the death, and nothing of it remains."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel(cwd=str(workdir))
        async with km.events() as events:
            workdir.rmdir()
            os.kill(await pid_of(km), signal.SIGKILL)
            with anyio.fail_after(30):
                kinds = [(e.kind, e.exit_status) for e in [await events.receive() for _ in "ab"]]
        assert kinds == [("restarting", -signal.SIGKILL), ("dead", -signal.SIGKILL)]
        assert km.dead and not km.has_kernel
        assert not reserved_ports()


#: A provisioner that, as a confining one would, says why its kernel's process ended.
REASONED_PROVISIONER = """
from kernel_nursery import LocalProvisioner

class Provisioner(LocalProvisioner):
    async def wait(self):
        status = await super().wait()
        self.end_reason, self.end_limit = "it used up its pids", "pids"
        return status
"""


async def test_a_provisioners_end_reason_reaches_the_events(
    fake_spec: SpecFactory, install_provisioner: Any
) -> None:
    """What a provisioner says of its kernel's end (end_reason, end_limit) is in the
    restarting and dead events, whichever provisioner it is."""
    install_provisioner("reasoned", "Provisioner", REASONED_PROVISIONER)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "reasoned"}})
    seen = []
    for autorestart in (True, False):
        async with KernelManager(kernel_spec=spec, autorestart=autorestart) as km:
            await km.start_kernel()
            async with km.events() as events:
                os.kill(await pid_of(km), signal.SIGKILL)
                with anyio.fail_after(30):
                    seen.append(await events.receive())
    assert [(e.kind, e.exit_status, e.reason, e.limit) for e in seen] == [
        ("restarting", -signal.SIGKILL, "it used up its pids", "pids"),
        ("dead", -signal.SIGKILL, "it used up its pids", "pids"),
    ]


#: A provisioner whose end_reason is a property that raises, and whose end_limit is no text.
UNREASONABLE_PROVISIONER = """
from kernel_nursery import LocalProvisioner

class Provisioner(LocalProvisioner):
    end_limit = 42

    @property
    def end_reason(self):
        raise RuntimeError("no reason")
"""


async def test_a_provisioners_bad_end_reason_is_no_reason(
    fake_spec: SpecFactory, install_provisioner: Any
) -> None:
    """An end_reason that raises, or an end_limit that is not text, is taken as unknown: the
    dead event comes, without them."""
    install_provisioner("unreasonable", "Provisioner", UNREASONABLE_PROVISIONER)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "unreasonable"}})
    async with KernelManager(kernel_spec=spec, autorestart=False) as km:
        await km.start_kernel()
        async with km.events() as events:
            os.kill(await pid_of(km), signal.SIGKILL)
            with anyio.fail_after(30):
                event = await events.receive()
    assert (event.kind, event.reason, event.limit) == ("dead", None, None)


async def test_events_after_close_end_at_once(fake_spec: SpecFactory) -> None:
    """A subscription made after the manager closed ends at once, it never hangs."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
    with anyio.fail_after(5):
        async with km.events() as events:
            assert [e async for e in events] == []


async def test_shutdown_for_restart_then_start_reuses_ports(
    fake_spec: SpecFactory, jupyter_dirs: dict[str, Path]
) -> None:
    """shutdown_kernel(restart=True) keeps ports, key and connection file for the next
    start_kernel, which uses them; the end of the block releases them."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        info, path = km.connection_info, km.connection_file
        await km.shutdown_kernel(restart=True)
        assert not km.has_kernel and km.pid is None
        assert path is not None and Path(path).exists()
        await km.start_kernel()
        assert km.connection_info == info and km.connection_file == path
        await km.shutdown_kernel(restart=True)
    assert not reserved_ports()
    assert not list(jupyter_dirs["runtime"].glob("kernel-*"))


async def test_ports_kept_for_a_restart_are_held_while_the_kernel_is_down(
    fake_spec: SpecFactory,
) -> None:
    """Between shutdown_kernel(restart=True) and the next start, the kernel's tcp ports refuse
    the plain bind another kernel-nursery process probes with (so it cannot take them, even for
    a moment, and make the restarting kernel's bind fail); the next kernel still binds them."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        info = km.connection_info
        await km.shutdown_kernel(restart=True)
        for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
            with socket.socket() as probe, pytest.raises(OSError, match="in use") as refused:
                probe.bind((info["ip"], info[name]))
            assert refused.value.errno == errno.EADDRINUSE, name
        await km.start_kernel()
        assert km.connection_info == info
        assert await km.is_alive()


async def test_pid_and_connection_file(fake_spec: SpecFactory) -> None:
    """The manager says which process and connection file the running kernel has."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        assert km.pid is None and km.connection_file is None
        await km.start_kernel()
        assert km.pid is not None and is_running(km.pid)
        assert km.connection_file is not None
        assert json.loads(Path(km.connection_file).read_text())["key"] == km.connection_info["key"]
    assert km.pid is None and km.connection_file is None


PORT_THIEF = textwrap.dedent(
    """
    import socket

    from kernel_nursery import LocalProvisioner

    THIEVES = []
    STEAL = [1]  # how many launches find their shell port taken

    class Provisioner(LocalProvisioner):
        async def launch_kernel(self, cmd, **kwargs):
            if STEAL[0] > 0:
                STEAL[0] -= 1
                thief = socket.socket()
                # As a zmq kernel binds: the manager's hold on the port does not stop it.
                thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                thief.bind((self.connection_info["ip"], self.connection_info["shell_port"]))
                thief.listen()
                THIEVES.append(thief)
            return await super().launch_kernel(cmd, **kwargs)
    """
)


@pytest.mark.parametrize("retries", [0, 3])
async def test_start_retries_when_a_port_is_taken(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None], retries: int
) -> None:
    """A kernel that dies before it is ready because another program took its port is started
    again on new ports (port_conflict_retries); with retries off the start fails saying so."""
    install_provisioner("thief", "Provisioner", PORT_THIEF)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "thief"}})
    async with KernelManager(kernel_spec=spec, port_conflict_retries=retries) as km:
        module = sys.modules[type(await km._new_provisioner()).__module__]
        try:
            if retries:
                await km.start_kernel()
                assert km.connection_info["shell_port"] != module.THIEVES[0].getsockname()[1]
                assert await km.is_alive()
            else:
                with pytest.raises(KernelDiedError, match="another program took its port"):
                    await km.start_kernel()
        finally:
            for thief in module.THIEVES:
                thief.close()


@pytest.mark.parametrize("how", ["auto", "restart_kernel", "newports", "shutdown_then_start"])
async def test_a_client_follows_its_kernel_across_restarts(
    fake_spec: SpecFactory, how: str
) -> None:
    """A client from km.client() keeps working after the kernel is restarted (on the same ports
    or new ones); after a shutdown for good its requests fail with KernelDiedError."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        async with km.client() as kc, km.events() as events:
            await kc.kernel_info(timeout=30)
            if how == "auto":
                os.kill(await pid_of(km), signal.SIGKILL)
                with anyio.fail_after(30):
                    while (await events.receive()).kind != "restarted":
                        pass
            elif how == "shutdown_then_start":
                await km.shutdown_kernel(restart=True)
                await km.start_kernel()
            else:
                await km.restart_kernel(newports=how == "newports")
            with anyio.fail_after(30):
                await kc.wait_for_ready(timeout=None)
            assert (await kc.kernel_info(timeout=30)).msg_type == "kernel_info_reply"
            await km.shutdown_kernel()
            with anyio.fail_after(30), pytest.raises(KernelDiedError):
                await kc.kernel_info()


@pytest.mark.parametrize("through", ["manager", "nursery"])
async def test_factory_configuration_reaches_the_factory(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None], through: str
) -> None:
    """default_provisioner_name configured on a manager (or on the nursery above it) decides
    the provisioner of kernels whose spec names none."""
    from kernel_nursery import KernelNursery

    install_provisioner("recording", "Provisioner", RECORDING)
    config = Config({"KernelProvisionerFactory": {"default_provisioner_name": "recording"}})
    if through == "manager":
        async with KernelManager(kernel_spec=fake_spec(), config=config) as km:
            await km.start_kernel()
            assert type(km.provisioner).__name__ == "Provisioner"
    else:
        async with KernelNursery(config=config) as nursery:
            km = await nursery.start_kernel(kernel_spec=fake_spec())
            assert type(km.provisioner).__name__ == "Provisioner"


@pytest.mark.parametrize("through", ["manager", "nursery"])
async def test_factory_configuration_reaches_the_spec_manager(
    jupyter_dirs: dict[str, Path], through: str
) -> None:
    """A kernel looked up by name is refused when the default provisioner configured on its
    manager (or nursery) is not installed: the spec manager asks the configured factory."""
    from kernel_nursery import KernelNursery, NoSuchKernelSpecError
    from kernel_nursery.provisioning import KernelProvisionerFactory

    argv = [sys.executable, "-c", "pass", "{connection_file}"]
    write_kernel(jupyter_dirs["path"] / "kernels", "plain", {"argv": argv, "display_name": "P"})
    config = Config({"KernelProvisionerFactory": {"default_provisioner_name": "not-installed"}})
    if through == "manager":
        async with KernelManager(kernel_name="plain", config=config) as km:
            with pytest.raises(NoSuchKernelSpecError, match=r"'not-installed' .*is not installed"):
                await km.start_kernel()
    else:
        async with KernelNursery(config=config) as nursery:
            with pytest.raises(NoSuchKernelSpecError, match=r"'not-installed' .*is not installed"):
                await nursery.start_kernel("plain")
    # The process's shared factory was left as it was.
    assert KernelProvisionerFactory.instance().default_provisioner_name == "local-provisioner"


def test_a_manager_and_its_spec_manager_share_one_factory() -> None:
    """A manager creates provisioners with the factory its spec manager asks: the one of a
    spec manager it is given, or its own, which it hands to the spec manager it makes."""
    from kernel_nursery import KernelSpecManager

    config = Config({"KernelProvisionerFactory": {"default_provisioner_name": "z"}})
    given = KernelSpecManager(config=config)
    km = KernelManager(kernel_spec_manager=given)
    assert km.provisioner_factory is given.provisioner_factory
    assert km.provisioner_factory.default_provisioner_name == "z"
    km = KernelManager(config=config)
    assert km.kernel_spec_manager.provisioner_factory is km.provisioner_factory
    assert km.provisioner_factory.default_provisioner_name == "z"


async def test_kernel_spec_is_looked_up_in_a_thread_and_never_by_the_property(
    jupyter_dirs: dict[str, Path],
) -> None:
    """kernel_spec reads no disk (None until looked up); get_kernel_spec looks the spec up in
    a worker thread, tasks looking it up at once get one and the same spec, and later calls
    return it even when its file is gone."""
    argv = [sys.executable, "-c", "pass", "{connection_file}"]
    folder = write_kernel(
        jupyter_dirs["path"] / "kernels", "plain", {"argv": argv, "display_name": "P"}
    )
    km = KernelManager(kernel_name="plain")
    assert km.kernel_spec is None
    specs = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):  # two tasks at once: one spec for the manager
            tg.start_soon(lambda: _append(specs, km.get_kernel_spec()))
    spec = await km.get_kernel_spec()
    assert specs == [spec, spec] and all(s is spec for s in specs)
    assert (spec.name, spec.argv) == ("plain", argv)
    (folder / "kernel.json").unlink()
    assert await km.get_kernel_spec() is spec
    assert km.kernel_spec is spec


async def _append(found: list[Any], coroutine: Awaitable[Any]) -> None:
    found.append(await coroutine)


SQUATTER = textwrap.dedent(
    """
    import threading

    import zmq

    from kernel_nursery import LocalProvisioner

    SWALLOWED = []

    def squat(port, bound):
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.linger = 0
        sock.bind(f"tcp://127.0.0.1:{port}")
        bound.set()
        SWALLOWED.append(sock.recv_multipart())
        sock.close()

    class Provisioner(LocalProvisioner):
        async def launch_kernel(self, cmd, **kwargs):
            bound = threading.Event()
            port = self.connection_info["shell_port"]
            threading.Thread(target=squat, args=(port, bound), daemon=True).start()
            bound.wait()
            return await super().launch_kernel(cmd, **kwargs)
    """
)


async def test_a_swallowed_readiness_request_is_asked_again(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """A kernel_info_request taken by another program's socket that held the kernel's shell
    port for a moment is sent again: the start succeeds instead of waiting out ready_timeout."""
    install_provisioner("squatter", "Provisioner", SQUATTER)
    spec = fake_spec(
        "--slow-start", "1", metadata={"kernel_provisioner": {"provisioner_name": "squatter"}}
    )
    async with KernelManager(kernel_spec=spec, ready_timeout=600) as km:
        with anyio.fail_after(60):
            await km.start_kernel()
        module = sys.modules[type(km.provisioner).__module__]
        assert len(module.SWALLOWED) == 1
        assert await km.is_alive()


# ---------------------------------------------------------------- found by a hostile review


@pytest.mark.parametrize("kernel_id", ["/../../escape", "a/b", "..", "x" * 129, "bad\0id", ""])
def test_kernel_ids_that_cannot_name_a_file_are_refused(kernel_id: str) -> None:
    """A kernel id that would put the connection file elsewhere (or cannot name a file) is an
    InvalidKernelIdError when the manager is made, before anything is written."""
    from kernel_nursery import InvalidKernelIdError

    with pytest.raises(InvalidKernelIdError, match="invalid kernel id"):
        KernelManager(kernel_id=kernel_id)


FAILING_CLEANUP = textwrap.dedent(
    """
    from kernel_nursery import LocalProvisioner

    class Provisioner(LocalProvisioner):
        async def cleanup(self, restart=False):
            await super().cleanup(restart)
            raise OSError("cleanup failed")
    """
)


async def test_a_failing_cleanup_never_replaces_the_blocks_exception(
    fake_spec: SpecFactory, install_provisioner: Callable[..., None]
) -> None:
    """When cleaning up fails as the block ends, the block's own exception propagates as it is
    (the failure is logged), subscriptions end, and without an exception of the block's the
    failure propagates as one ProvisionerHookError, caused by what cleanup raised."""
    install_provisioner("failing", "Provisioner", FAILING_CLEANUP)
    spec = fake_spec(metadata={"kernel_provisioner": {"provisioner_name": "failing"}})
    ended = anyio.Event()
    async with anyio.create_task_group() as tg:
        with pytest.raises(ValueError, match="the block's own"):  # noqa: PT012
            async with KernelManager(kernel_spec=spec) as km:

                async def listen() -> None:
                    async with km.events() as events:
                        async for _ in events:
                            pass
                    ended.set()

                tg.start_soon(listen)
                await km.start_kernel()
                raise ValueError("the block's own error")
        with anyio.fail_after(10):
            await ended.wait()
    with pytest.raises(ProvisionerHookError, match="cleanup failed") as caught:
        async with KernelManager(kernel_spec=spec) as km:
            await km.start_kernel()
    assert caught.value.hook == "cleanup"
    assert isinstance(caught.value.__cause__, OSError)
    assert not km.has_kernel


async def test_failed_and_cancelled_starts_say_how_they_ended(fake_spec: SpecFactory) -> None:
    """A start or restart that fails ends with ``dead`` (with the exit status), one that is
    cancelled with ``shutdown``: subscribers never stay at ``starting`` or ``restarting``."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        async with km.events() as events:
            with pytest.raises(KernelDiedError):
                await km.start_kernel(extra_arguments=["--exit", "3"])
            assert [(await events.receive()).kind for _ in "ab"] == ["starting", "dead"]
            await km.start_kernel()
            with pytest.raises(KernelDiedError):
                await km.restart_kernel(extra_arguments=["--exit", "4"])
            kinds = [await events.receive() for _ in range(4)]
            assert [(e.kind, e.exit_status) for e in kinds][1:] == [
                ("started", None),
                ("restarting", None),
                ("dead", 4),
            ]
            await km.start_kernel(extra_arguments=[])
            assert [(await events.receive()).kind for _ in "ab"] == ["starting", "started"]
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()

                async def restart() -> None:
                    with scope:
                        await km.restart_kernel(extra_arguments=["--slow-start", "5"])

                tg.start_soon(restart)
                assert (await events.receive()).kind == "restarting"
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                with anyio.fail_after(30):
                    assert (await events.receive()).kind == "shutdown"
            assert not km.has_kernel


async def test_a_client_does_not_follow_into_a_new_life(fake_spec: SpecFactory) -> None:
    """After a shutdown for good, a client stays failed even if the manager starts a kernel
    again: it followed restarts, not new starts."""
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        async with km.client() as kc:
            await km.shutdown_kernel()
            await km.start_kernel()
            with pytest.raises(KernelDiedError):
                await kc.kernel_info(timeout=10)


async def test_progress_from_a_provisioner_no_longer_the_managers_is_dropped(
    fake_spec: SpecFactory,
) -> None:
    """A late report from a provisioner the manager has let go (a restart on new ports, a
    shutdown) is no event of the kernel's; one from its current provisioner is; after the
    manager closed, a report is dropped without error."""
    async with KernelManager(kernel_spec=fake_spec()) as km, km.events() as events:
        await km.start_kernel()
        old = km.provisioner
        assert old is not None
        await km.restart_kernel(newports=True)
        current = km.provisioner
        assert current is not None and current is not old
        old.report_progress("LATE", detail="from the old provisioner")
        current.report_progress("NOW")
        await km.shutdown_kernel()
        current.report_progress("AFTER", detail="after the shutdown")
        seen = []
        while True:
            try:
                event = events.receive_nowait()  # all emitted, synchronously
            except anyio.WouldBlock:
                break
            seen.append((event.kind, event.state))
    current.report_progress("CLOSED")
    assert seen == [
        ("starting", None),
        ("started", None),
        ("restarting", None),
        ("restarted", None),
        ("progress", "NOW"),
        ("shutdown", None),
    ]


def _ports_of(info: Any) -> list[int]:
    """The five tcp ports of connection *info*."""
    names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
    return [int(info[name]) for name in names]


async def test_ports_held_for_a_restart_are_let_go_when_none_follows(
    fake_spec: SpecFactory,
) -> None:
    """Ports held again for a restart (shutdown_kernel(restart=True)) that never comes are
    released, their holding sockets closed, when the manager's block ends: no reservation,
    no hold and no descriptor is left."""
    from kernel_nursery.connection import _ports

    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()  # what is opened once per process (zmq, the guardian) is open
    before = len(os.listdir("/proc/self/fd"))
    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        ports = _ports_of(km.connection_info)
        await km.shutdown_kernel(restart=True)
        assert set(ports) <= set(_ports._held)
    assert not reserved_ports() and not set(ports) & set(_ports._held)
    # zmq's reaper thread closes a socket's descriptors after close() has returned (one was
    # still open once, under trio on a loaded machine): up to two seconds for that.
    for _ in range(200):
        if len(os.listdir("/proc/self/fd")) <= before:
            break
        await anyio.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_a_restart_whose_port_was_taken_meanwhile_goes_to_new_ports(
    fake_spec: SpecFactory,
) -> None:
    """A program that listens on a kept port while the kernel is down (the hold does not stop
    a bind with SO_REUSEADDR, as zmq's) makes the restarted kernel fail to bind: it is started
    on new ports, and the old ones are neither reserved nor held any more."""
    from kernel_nursery.connection import _ports

    async with KernelManager(kernel_spec=fake_spec()) as km:
        await km.start_kernel()
        old = km.connection_info
        await km.shutdown_kernel(restart=True)
        with socket.socket() as thief:
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            thief.bind((old["ip"], old["shell_port"]))
            thief.listen()
            await km.start_kernel()
            new = km.connection_info
            assert await km.is_alive() and new["shell_port"] != old["shell_port"]
            stale = set(_ports_of(old)) - set(_ports_of(new))
            assert not stale & set(_ports._held)
            assert not {("tcp", p) for p in stale} & reserved_ports()
            assert not set(_ports_of(new)) & set(_ports._held)  # bound: unheld
    assert not reserved_ports() and not (set(_ports_of(old)) | set(_ports_of(new))) & set(
        _ports._held
    )
