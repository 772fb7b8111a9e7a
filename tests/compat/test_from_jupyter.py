"""Tests for kernel_nursery.compat._from_jupyter: jupyter_client's provisioners under our kernel
manager (``jupyter:<name>``), with real kernels, on both backends."""

from __future__ import annotations

import itertools
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from jupyter_client.connect import LocalPortCache

from kernel_nursery import (
    KernelManager,
    KernelSpec,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerHookError,
)
from kernel_nursery.compat import CANCEL_WAIT, JupyterProvisioner
from kernel_nursery.provisioning import KernelProvisionerFactory, _guardian

from ..conftest import FAKE_KERNEL
from ..helpers.kernels import start_and_stop
from ..helpers.loop_watch import watch_loop
from ..helpers.procs import (
    is_running,
    killed_manager_leaves_nothing,
    live_children,
    process_group_members,
)

pytestmark = pytest.mark.anyio

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def spec_for(argv: list[str], name: str = "local-provisioner", **config: Any) -> KernelSpec:
    """A kernel spec that names jupyter_client's provisioner *name* through the bridge."""
    stanza = {"provisioner_name": f"jupyter:{name}", "config": config}
    return KernelSpec(
        argv=argv, name="k", language="python", metadata={"kernel_provisioner": stanza}
    )


@pytest.fixture(autouse=True)
def no_cached_ports() -> Iterator[None]:
    """jupyter_client's port cache (a process-wide singleton) holds no port after a test."""
    yield
    assert not LocalPortCache.instance().currently_used_ports


async def test_jupyter_local_provisioner_runs_ipykernel(anyio_backend: str) -> None:
    """jupyter_client's LocalProvisioner, through the bridge: ipykernel starts, runs code, is
    interrupted, restarted and shut down; its exit is awaited and nothing remains."""
    async with KernelManager(kernel_spec=spec_for(IPYKERNEL)) as km:
        await km.start_kernel()
        provisioner = km.provisioner
        assert isinstance(provisioner, JupyterProvisioner)
        pid = km.pid
        assert pid is not None and km.connection_file is not None
        started = anyio.Event()
        results: list[Any] = []

        def hook(msg: Any) -> None:
            if "started" in msg.content.get("text", ""):
                started.set()

        async with km.client() as kc, anyio.create_task_group() as tg:
            assert (await kc.execute("x = 6 * 7", timeout=60)).reply.content["status"] == "ok"

            async def run() -> None:
                code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
                results.append(await kc.execute(code, timeout=60, output_hook=hook))

            tg.start_soon(run)
            with anyio.fail_after(30):
                await started.wait()
            await km.interrupt_kernel()
        assert results[0].error["ename"] == "KeyboardInterrupt"
        info = km.connection_info
        await km.restart_kernel()
        assert km.pid not in (None, pid) and not is_running(pid)
        assert km.connection_info == info
        pid = km.pid
        assert pid is not None
        await km.shutdown_kernel()
        assert not is_running(pid) and not process_group_members(pid)


async def test_a_killed_kernel_is_noticed_and_restarted(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """A kernel killed from outside is noticed (its exit awaited) and restarted by our
    supervisor, through jupyter_client's provisioner; the child it left in its process group
    is killed with the group."""
    import os
    import signal

    spec = spec_for(fake_spec("--grandchild").argv)
    async with KernelManager(kernel_spec=spec) as km:
        await km.start_kernel()
        pid = km.pid
        assert pid is not None
        [grandchild] = process_group_members(pid) - {pid}
        async with km.events() as events:
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(30):
                async for event in events:
                    if event.kind == "restarted":
                        break
        assert km.pid not in (None, pid)
        assert not is_running(grandchild)
        await km.shutdown_kernel(now=True)


@pytest.mark.parametrize("delay", [0, 0.001, 0.01, 0.05, 0.2])
async def test_a_cancelled_start_leaves_nothing(anyio_backend: str, delay: float) -> None:
    """A start cancelled at any point (by a deadline) leaves no process, file or cached port."""
    spec = spec_for([sys.executable, FAKE_KERNEL, "{connection_file}", "--slow-start", "0.3"])
    async with KernelManager(kernel_spec=spec) as km:
        with anyio.move_on_after(delay):
            await km.start_kernel()
            pytest.fail("the start should have been cancelled")
        assert not live_children()
        assert km.provisioner is None


def test_bad_names_and_config_are_clear_errors(
    fake_spec: Callable[..., KernelSpec],
) -> None:
    """An unknown jupyter: name, an unknown config key, or one the manager sets, is a typed
    error from the factory."""
    factory = KernelProvisionerFactory.instance()
    argv = fake_spec().argv
    with pytest.raises(ModuleNotFoundError, match="jupyter_client"):
        factory.create_provisioner_instance("k", spec_for(argv, "no-such-thing"), None)
    with pytest.raises(ProvisionerConfigError, match="no_such_trait"):
        factory.create_provisioner_instance("k", spec_for(argv, no_such_trait=1), None)
    with pytest.raises(ProvisionerConfigError, match="kernel_id"):
        factory.create_provisioner_instance("k", spec_for(argv, kernel_id="x"), None)


def test_jupyter_provisioners_are_listed_with_the_prefix() -> None:
    """The factory lists jupyter_client's provisioners as jupyter:<name>, but not ours that
    are registered there for jupyter_client."""
    entries = KernelProvisionerFactory.instance().get_provisioner_entries()
    assert "jupyter:local-provisioner" in entries
    assert "local-provisioner" in entries
    assert not any(name.startswith("jupyter:kernel-nursery") for name in entries)


SLEEPY = textwrap.dedent(
    """
    import asyncio
    import time
    from jupyter_client.provisioning import LocalProvisioner
    from traitlets import Unicode

    class SleepyProvisioner(LocalProvisioner):
        async def pre_launch(self, **kwargs):
            time.sleep(2)  # blocks its event loop
            return await super().pre_launch(**kwargs)

    NotAProvisioner = object()

    class HostileProvisioner(LocalProvisioner):
        # Raises in, or hangs (awaits forever) in, the methods its traits name.
        fail = Unicode("")
        hang = Unicode("")
        stubborn = Unicode("")

        async def poll(self):
            if self.fail == "poll":
                raise RuntimeError("hostile poll")
            return await super().poll()

        async def cleanup(self, restart=False):
            name = "cleanup-restart" if restart else "cleanup"
            if name == self.hang:
                await asyncio.Event().wait()
            await super().cleanup(restart)  # its own ports released: then it raises
            while name == self.stubborn:  # or will not end, nor be cancelled
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass
            if name == self.fail:
                raise RuntimeError(f"hostile {name}")
    """
)


@pytest.fixture
def sleepy_provisioner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Install jupyter_client provisioners: 'sleepy', whose pre_launch blocks its loop for
    2 s; 'not-one', which is no provisioner; 'broken', whose module does not exist; 'hostile',
    which raises or hangs where its config says."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "kn_sleepy_provisioner.py").write_text(SLEEPY)
    dist = site / "kn_sleepy-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kn-sleepy\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[jupyter_client.kernel_provisioners]\n"
        "sleepy = kn_sleepy_provisioner:SleepyProvisioner\n"
        "not-one = kn_sleepy_provisioner:NotAProvisioner\n"
        "hostile = kn_sleepy_provisioner:HostileProvisioner\n"
        "broken = kn_no_such_module:Provisioner\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield "sleepy"
    sys.modules.pop("kn_sleepy_provisioner", None)


@pytest.mark.trio
async def test_a_provisioner_blocking_its_loop_cannot_block_trio(
    sleepy_provisioner: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """Under trio, a jupyter_client provisioner that blocks its own loop leaves ours running,
    and a deadline still cancels the start, which leaves nothing."""
    spec = spec_for(fake_spec().argv, sleepy_provisioner)
    # The lookup of installed provisioners (a scan of package metadata, once) runs on our
    # loop, apart from the start: done first, so that a loaded machine's slow scan is not
    # taken for their loop blocking ours.
    assert KernelProvisionerFactory.instance().is_provisioner_available(spec)
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await anyio.sleep(0.05)

    async with KernelManager(kernel_spec=spec) as km, anyio.create_task_group() as tg:
        tg.start_soon(tick)
        start = time.monotonic()
        with anyio.move_on_after(0.5):
            await km.start_kernel()
            pytest.fail("the start should have been cancelled")
        elapsed = time.monotonic() - start
        assert elapsed < CANCEL_WAIT + 5
        # Our loop kept running while theirs was blocked for 2 s: no pause near that long.
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert len(ticks) >= 3 and max(gaps) < 1.0, gaps
        assert km.provisioner is None
        tg.cancel_scope.cancel()
    assert not live_children()


@pytest.mark.usefixtures("sleepy_provisioner")
@pytest.mark.parametrize(
    ("misbehaviour", "where"),
    [("fail", "cleanup"), ("fail", "poll"), ("hang", "cleanup-restart")],
)
async def test_a_provisioner_raising_or_hanging_in_cleanup_leaves_nothing(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec], misbehaviour: str, where: str
) -> None:
    """A jupyter_client provisioner whose cleanup (or the poll its wait uses to reap)
    raises, or whose cleanup for a restart never returns: the restart and the manager's end
    are bounded; no connection file, zombie, or private loop thread remains, and the manager's
    end raises ProvisionerHookError, caused by what it raised."""
    from ..helpers.procs import zombie_children

    spec = spec_for(fake_spec().argv, "hostile", **{misbehaviour: where})
    with anyio.fail_after(4 * CANCEL_WAIT):
        caught: list[ProvisionerHookError] = []
        try:
            async with KernelManager(kernel_spec=spec) as km:
                await km.start_kernel()
                if where == "cleanup-restart":
                    await km.restart_kernel()
                file = km.connection_file
                assert file is not None
        except ProvisionerHookError as exc:
            caught.append(exc)
    if misbehaviour == "fail":
        assert len(caught) == 1
        assert "hostile" in str(caught[0])
        assert isinstance(caught[0].__cause__, RuntimeError)
    else:
        assert not caught
    assert not Path(file).exists()
    assert not live_children() and not zombie_children()
    assert not loop_threads()


def loop_threads() -> list[threading.Thread]:
    """The private loop threads of jupyter_client provisioners (under trio) still running."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name == "kernel-nursery-jupyter-provisioner" and thread.is_alive()
    ]


async def test_no_loop_thread_is_left_when_the_manager_ends(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """Once a manager of a jupyter_client provisioner has ended, no thread of its is left:
    the private loop (under trio) is stopped and its thread joined."""
    spec = spec_for(fake_spec().argv)
    for _ in range(3):
        async with KernelManager(kernel_spec=spec) as km:
            await km.start_kernel()
        assert not loop_threads()


@pytest.mark.trio
async def test_a_cleanup_that_will_not_be_cancelled_is_bounded_once(
    sleepy_provisioner: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """Under trio, a jupyter_client provisioner whose cleanup ignores cancellation holds the
    cleanup CANCEL_WAIT seconds, not that again to unwind; its loop thread is still joined."""
    spec = spec_for(fake_spec().argv, "hostile", stubborn="cleanup")
    made = KernelProvisionerFactory.instance().create_provisioner_instance("k", spec, None)
    kw = await made.pre_launch()
    await made.launch_kernel(kw.pop("cmd"), **kw)
    start = time.monotonic()
    await made.cleanup()
    assert time.monotonic() - start < CANCEL_WAIT + 3
    assert not loop_threads() and not live_children()


PROGRAM = textwrap.dedent(
    """
    import sys, anyio
    from kernel_nursery import KernelManager, KernelSpec
    from kernel_nursery.provisioning import _guardian

    async def main():
        stanza = {"provisioner_name": "jupyter:local-provisioner", "config": {}}
        spec = KernelSpec(
            argv=sys.argv[2:], name="fake", language="fake",
            metadata={"kernel_provisioner": stanza},
        )
        async with KernelManager(kernel_spec=spec) as km:
            await km.start_kernel()
            print(km.pid, km.connection_file, _guardian.guardian_pid(), flush=True)
            await anyio.sleep_forever()

    anyio.run(main, backend=sys.argv[1])
    """
)


@pytest.mark.skipif(not _guardian.SUPPORTED, reason="the guardian needs Linux pidfds")
async def test_kernel_goes_with_a_killed_manager(
    anyio_backend: str, tmp_path: Path, fake_spec: Callable[..., KernelSpec]
) -> None:
    """A program running a kernel through jupyter_client's LocalProvisioner is killed
    (SIGKILL): our guardian stops the kernel's process group and removes its file."""
    script = tmp_path / "manager.py"
    script.write_text(PROGRAM)
    argv = [sys.executable, str(script), anyio_backend, *fake_spec("--grandchild").argv]
    await killed_manager_leaves_nothing(argv, ready_within=60)


async def test_kernels_start_and_stop_at_once(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """Several kernels through jupyter_client's provisioner, started and shut down
    concurrently in one nursery (under trio, one private loop each); nothing remains."""
    from kernel_nursery import KernelNursery

    spec = spec_for(fake_spec().argv)
    async with KernelNursery() as nursery:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(lambda: nursery.start_kernel(kernel_spec=spec))
        pids = [km.pid for km in nursery.list_kernels()]
        assert len(set(pids)) == 3 and None not in pids
        await nursery.shutdown_all()
    assert not any(is_running(pid) for pid in pids if pid is not None)


@pytest.mark.parametrize("delay", [0, 0.01, 0.1])
async def test_a_cancelled_restart_leaves_nothing(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec], delay: float
) -> None:
    """A restart cancelled at several points (before it began, while stopping, while
    starting), then the manager's end: no process, file or cached port remains."""
    spec = spec_for(fake_spec("--slow-start", "0.2").argv)
    async with KernelManager(kernel_spec=spec) as km:
        await km.start_kernel()
        old = km.pid
        with anyio.move_on_after(delay):
            await km.restart_kernel()
            pytest.fail("the restart should have been cancelled")
    assert old is not None and not is_running(old)
    assert not live_children()


@pytest.mark.usefixtures("sleepy_provisioner")
def test_a_broken_jupyter_provisioner_is_a_clear_error(
    fake_spec: Callable[..., KernelSpec],
) -> None:
    """A jupyter_client entry point that fails to load, or is no provisioner, is a
    ProvisionerError naming it."""
    factory = KernelProvisionerFactory.instance()
    argv = fake_spec().argv
    with pytest.raises(ProvisionerError, match="'broken' failed to load"):
        factory.create_provisioner_instance("k", spec_for(argv, "broken"), None)
    with pytest.raises(ProvisionerError, match=r"'not-one'.*not a jupyter_client"):
        factory.create_provisioner_instance("k", spec_for(argv, "not-one"), None)


async def test_provisioner_info_is_plain_json_and_loads(
    anyio_backend: str, fake_spec: Callable[..., KernelSpec]
) -> None:
    """get_provisioner_info is plain JSON (the key as text); another JupyterProvisioner loads
    it into jupyter_client's provisioner, key as bytes again."""
    import json

    spec = spec_for(fake_spec().argv)
    async with KernelManager(kernel_spec=spec) as km:
        await km.start_kernel()
        provisioner = km.provisioner
        assert isinstance(provisioner, JupyterProvisioner)
        info = json.loads(json.dumps(await provisioner.get_provisioner_info()))
        assert info["jupyter"]["pid"] == km.pid
        other = KernelProvisionerFactory.instance().create_provisioner_instance(
            km.kernel_id, spec, None
        )
        assert isinstance(other, JupyterProvisioner)
        await other.load_provisioner_info(info)
        assert other.inner.pid == km.pid
        assert isinstance(other.inner.connection_info["key"], bytes)
        assert other.connection_info == km.connection_info
        assert not other.has_process  # jupyter_client's LocalProvisioner only records the pid
        await other.cleanup()
        assert km.connection_file is not None and Path(km.connection_file).exists()


async def test_start_and_shutdown_never_block_the_event_loop(
    anyio_backend: str, fresh_guardian: None
) -> None:
    """Through the bridge, a start (the process's first, which spawns the guardian) and a
    shutdown run no spawn nor file work of ours on the event loop's thread (what
    jupyter_client's provisioner does there under asyncio is its own), and never pause it long
    (tests/helpers/loop_watch.py)."""
    async with watch_loop() as watch:
        await start_and_stop(spec_for([sys.executable, FAKE_KERNEL, "{connection_file}"]))
    assert _guardian.guardian_pid() is not None  # the start spawned it
    watch.check()
