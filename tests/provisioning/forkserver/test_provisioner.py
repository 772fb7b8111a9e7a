"""Tests for kernel_nursery.provisioning.forkserver: real ipykernels forked from a template,
supervised as local kernels, and nothing left in any ending."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel_nursery import KernelManager, KernelPool, start_kernel
from kernel_nursery.provisioning import (
    UNKNOWN_EXIT_STATUS,
    ForkServerError,
    ForkServerProvisioner,
    hold_fork_templates,
)
from kernel_nursery.provisioning.forkserver._template import live_templates

from ...helpers.kernels import interrupt_a_sleep
from ...helpers.loop_watch import watch_loop
from ...helpers.procs import gone, is_running, parent_of
from .conftest import ForkSpec

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


async def launch(p: ForkServerProvisioner) -> dict[str, Any]:
    """The manager's launch sequence: pre_launch, launch_kernel, post_launch."""
    kw = await p.pre_launch()
    info = await p.launch_kernel(kw.pop("cmd"), **kw)
    await p.post_launch(**kw)
    return dict(info)


async def test_execute_interrupt_restart_shutdown(fork_spec: ForkSpec) -> None:
    """start_kernel forks the kernel from a template (its parent), which runs code, is
    interrupted, restarts forked again (from the same template, unless the manager had to
    take a new provisioner: when another program took a port the restart was to reuse, it
    tries new ports with a new one), and with its manager's end the kernel and the template
    are gone."""
    async with start_kernel(kernel_spec=fork_spec()) as km:
        p = km.provisioner
        assert isinstance(p, ForkServerProvisioner) and p.forked
        pid, template = p.pid, p.template_pid
        assert pid is not None and template is not None
        assert parent_of(pid) == template and os.getpgid(pid) == pid == os.getsid(pid)
        async with km.client() as kc:
            assert (await kc.execute("6 * 7", timeout=30)).results == [{"text/plain": "42"}]
        error = await interrupt_a_sleep(km)
        assert error is not None and error["ename"] == "KeyboardInterrupt"
        await km.restart_kernel()
        restarted = km.provisioner
        assert isinstance(restarted, ForkServerProvisioner) and restarted.forked
        new_pid = restarted.pid
        assert new_pid not in (None, pid) and not is_running(pid)
        assert parent_of(new_pid or 0) == restarted.template_pid
        if restarted is p:
            assert p.template_pid == template
        async with km.client() as kc:
            assert (await kc.execute("1 + 1", timeout=30)).results == [{"text/plain": "2"}]
    assert new_pid is not None and not is_running(new_pid)
    await gone(template)
    assert live_templates() == []


async def test_a_pool_of_forked_kernels(fork_spec: ForkSpec) -> None:
    """A KernelPool's kernels are forked from one template; taken, one runs code; the pool's
    end leaves neither kernels nor template."""
    async with KernelPool(kernel_spec=fork_spec(), size=2) as pool:
        with anyio.fail_after(120):
            await pool.wait_warm()
        async with pool.take() as km, km.client() as kc:
            p = km.provisioner
            assert isinstance(p, ForkServerProvisioner) and p.forked
            template = p.template_pid
            assert template is not None and parent_of(p.pid or 0) == template
            result = await kc.execute("import os; print(os.getppid())", timeout=30)
            assert result.stdout.strip() == str(template)
    assert live_templates() == []
    await gone(template)


async def test_exit_status_comes_from_the_template(fork_spec: ForkSpec) -> None:
    """The exit of a forked kernel is awaited (not polled) with its real status, which the
    template reports: an exit code, or minus the signal that killed it."""
    async with hold_fork_templates():
        for kill in (True, False):
            async with ForkServerProvisioner(kernel_spec=fork_spec()) as p:
                await launch(p)
                assert p.forked and await p.poll() is None
                if kill:
                    os.kill(p.pid or 0, signal.SIGKILL)
                else:
                    await p.send_signal(signal.SIGTERM)
                with anyio.fail_after(60):
                    status = await p.wait()
                assert status == (-signal.SIGKILL if kill else -signal.SIGTERM)
                assert await p.poll() == status
    assert live_templates() == []


async def test_two_forked_kernels_draw_different_random_numbers(fork_spec: ForkSpec) -> None:
    """Kernels forked from one template do not share the template's random state."""
    drawn = []
    async with hold_fork_templates():
        for _ in range(2):
            async with start_kernel(kernel_spec=fork_spec()) as km, km.client() as kc:
                assert km.provisioner.forked  # type: ignore[attr-defined]
                result = await kc.execute("import random; print(random.random())", timeout=30)
                drawn.append(result.stdout)
    assert drawn[0] != drawn[1]


async def test_a_failed_preload_falls_back_to_spawning(
    fork_spec: ForkSpec, caplog: pytest.LogCaptureFixture
) -> None:
    """A preload that fails makes the kernel spawned, with a warning naming the module; with
    fallback off the launch fails with ForkServerError and leaves nothing."""
    spec = fork_spec(preload=["kn_no_such_module"])
    with caplog.at_level(logging.WARNING):
        async with start_kernel(kernel_spec=spec) as km, km.client() as kc:
            p = km.provisioner
            assert isinstance(p, ForkServerProvisioner) and not p.forked
            assert p.template_pid is None and parent_of(p.pid or 0) == os.getpid()
            assert (await kc.execute("6 * 7", timeout=30)).results == [{"text/plain": "42"}]
    assert "kn_no_such_module" in caplog.text and "spawned, not forked" in caplog.text
    spec = fork_spec(preload=["kn_no_such_module"], fallback=False)
    with pytest.raises(ForkServerError, match="preload failed: kn_no_such_module"):
        async with start_kernel(kernel_spec=spec):
            pass
    assert live_templates() == []


async def test_a_command_that_is_not_python_m_is_spawned(
    fork_spec: ForkSpec, caplog: pytest.LogCaptureFixture
) -> None:
    """A spec running a script (not ``python -m module``) is spawned, with a warning; with
    fallback off, ForkServerError says why."""
    spec = fork_spec()
    script = type(spec)(**{**spec.__dict__, "argv": [spec.argv[0], "-c", "pass"]})
    async with ForkServerProvisioner(kernel_spec=script) as p:
        with caplog.at_level(logging.WARNING):
            await launch(p)
        assert not p.forked
        with anyio.fail_after(60):
            assert await p.wait() == 0
    assert "is not 'python [options] -m module'" in caplog.text
    async with ForkServerProvisioner(kernel_spec=script, fallback=False) as p:
        with pytest.raises(ForkServerError, match="-m module"):
            await launch(p)
        assert not p.has_process


async def test_a_dead_template_is_replaced_and_reported(
    fork_spec: ForkSpec, caplog: pytest.LogCaptureFixture
) -> None:
    """A template killed under a running kernel: that kernel is still supervised (its exit
    seen through its pidfd, status unknown; ipykernel itself exits once it finds its parent
    gone), and the next launch starts a new template with a warning."""
    async with ForkServerProvisioner(kernel_spec=fork_spec()) as first:
        await launch(first)
        old = first.template_pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await gone(old)
        with caplog.at_level(logging.WARNING):
            async with start_kernel(kernel_spec=fork_spec()) as km:
                p = km.provisioner
                assert isinstance(p, ForkServerProvisioner) and p.forked
                assert p.template_pid not in (None, old)
        assert f"template (pid {old})" in caplog.text and "died" in caplog.text
        await first.kill()
        with anyio.fail_after(60):
            assert await first.wait() == UNKNOWN_EXIT_STATUS
    assert live_templates() == []


async def test_another_provisioner_takes_a_forked_kernel_over(fork_spec: ForkSpec) -> None:
    """get_provisioner_info / load_provisioner_info: another provisioner adopts a forked
    kernel by pidfd, signals and awaits it; its launcher sees the real status."""
    async with ForkServerProvisioner(kernel_spec=fork_spec()) as launcher:
        await launch(launcher)
        info = await launcher.get_provisioner_info()
        assert info["forked"] is True and info["template_pid"] == launcher.template_pid
        async with ForkServerProvisioner() as adopter:
            await adopter.load_provisioner_info(info)
            assert adopter.pid == launcher.pid and await adopter.poll() is None
            await adopter.kill()
            with anyio.fail_after(60):
                assert await adopter.wait() == UNKNOWN_EXIT_STATUS
                assert await launcher.wait() == -signal.SIGKILL


async def test_a_launch_cancelled_while_its_template_starts_leaves_nothing(
    fork_spec: ForkSpec,
) -> None:
    """Cancelled while the template imports ipykernel (which takes far longer than the
    cancellation's delay): the launch waits for the start, then leaves no kernel, template,
    connection file or port."""
    async with ForkServerProvisioner(kernel_spec=fork_spec()) as p:
        with anyio.move_on_after(0.05) as scope:
            await launch(p)
        assert scope.cancelled_caught
        assert not p.has_process and not p.connection_info
    assert live_templates() == []


async def test_a_preload_that_starts_a_thread_makes_the_kernel_spawned(
    fork_spec: ForkSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A template whose preload started a thread refuses to fork (fork copies one thread):
    the kernel is spawned, with a warning that says so."""
    (tmp_path / "kn_threaded.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    spec = fork_spec(preload=["kn_threaded"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with caplog.at_level(logging.WARNING):
        async with start_kernel(kernel_spec=spec, env=env) as km:
            p = km.provisioner
            assert isinstance(p, ForkServerProvisioner) and not p.forked
    assert "spawned, not forked" in caplog.text and "2 threads" in caplog.text
    assert live_templates() == []


async def test_a_forked_start_never_blocks_the_event_loop(fork_spec: ForkSpec) -> None:
    """The template's start (a spawn, imports awaited) and the guardian's run in worker
    threads; the fork request and its answer never pause the loop long."""
    async with watch_loop() as watch:
        async with KernelManager(kernel_spec=fork_spec()) as km:
            await km.start_kernel()
            assert km.provisioner.forked  # type: ignore[union-attr]
    watch.check()


async def test_a_preload_that_holds_a_descriptor_is_reported(
    fork_spec: ForkSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A preload that keeps a file open is named in a warning (its kernels close what they
    inherit); they are still forked."""
    (tmp_path / "kn_holds_fd.py").write_text("import os\nFD = os.open(__file__, os.O_RDONLY)\n")
    spec = fork_spec(preload=["kn_holds_fd"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    with caplog.at_level(logging.WARNING):
        async with start_kernel(kernel_spec=spec, env=env) as km:
            assert km.provisioner.forked  # type: ignore[attr-defined]
    assert "left descriptors open" in caplog.text and "kn_holds_fd.py" in caplog.text
