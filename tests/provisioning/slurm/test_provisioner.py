"""Tests for kernel_nursery.provisioning.slurm: SlurmProvisioner on a real single-node Slurm
cluster of the session's own (tests/helpers/slurm.py), with real ipykernels.

After every test the queue holds no job of ours (an autouse check).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel_nursery import (
    InvalidKernelIdError,
    KernelClient,
    KernelDiedError,
    KernelEvent,
    KernelManager,
    KernelSpec,
    LaunchError,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerInfoError,
    SlurmProvisioner,
)
from kernel_nursery.connection import validate_connection_info
from kernel_nursery.provisioning import UNKNOWN_EXIT_STATUS, _guardian, shutdown_kernel_process
from kernel_nursery.provisioning.slurm import JobEndedError, JobRejectedError, QueueTimeoutError

from ...conftest import FAKE_KERNEL
from ...helpers.engines import need_binaries
from ...helpers.kernels import start_and_stop
from ...helpers.loop_watch import watch_loop
from ...helpers.slurm import SlurmCluster

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

BINARIES = ("slurmctld", "slurmd", "munged", "srun", "salloc", "scancel", "squeue", "scontrol")
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
FAKE = [sys.executable, FAKE_KERNEL, "{connection_file}"]


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A single-node Slurm cluster for the session (munged, slurmctld, slurmd), stopped after.

    Its directory is not under pytest's temporary directory: munged wants every directory
    above its socket searchable by all users, and pytest's are private (0700).
    """
    binaries = need_binaries("slurm", *BINARIES)
    if os.geteuid() != 0:
        pytest.skip("slurm: the test cluster's daemons run as root (SlurmUser=root)")
    root = Path(tempfile.mkdtemp(prefix="kn-slurm-"))
    try:
        root.chmod(0o755)
        cluster = SlurmCluster(root=root, binaries=binaries)
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def queue_left_empty(slurm: SlurmCluster) -> Iterator[None]:
    """Fail a test that leaves a job of ours in the queue (one completing is on its way out)."""
    yield
    leftover = [job for job in slurm.queue() if " COMPLETING " not in job]
    if leftover:
        slurm.run("scancel", "--user", str(os.getuid()))
    assert not leftover, f"test left jobs in the Slurm queue: {leftover}"


def spec(slurm: SlurmCluster, argv: list[str] | None = None, **config: Any) -> KernelSpec:
    """A kernel spec run by the 'slurm' provisioner on the test cluster."""
    stanza = {"provisioner_name": "slurm", "config": {"slurm_conf": str(slurm.conf), **config}}
    return KernelSpec(
        argv=argv or IPYKERNEL,
        display_name="Python on Slurm",
        language="python",
        name="slurm-python",
        metadata={"kernel_provisioner": stanza},
    )


def provisioner(
    slurm: SlurmCluster, argv: list[str] | None = None, **config: Any
) -> SlurmProvisioner:
    """A SlurmProvisioner for the test cluster, without a manager."""
    config.setdefault("slurm_conf", str(slurm.conf))
    return SlurmProvisioner(kernel_spec=spec(slurm, argv), **config)


async def launch(p: SlurmProvisioner, **kwargs: Any) -> dict[str, Any]:
    """The manager's launch sequence: pre_launch, launch_kernel, post_launch."""
    kw = await p.pre_launch(**kwargs)
    cmd = kw.pop("cmd")
    info = await p.launch_kernel(cmd, **kw)
    await p.post_launch(**kw)
    return dict(info)


# ---------------------------------------------------------------- a kernel's life


async def test_start_execute_and_shutdown(slurm: SlurmCluster) -> None:
    """A manager starts ipykernel as a job on the node, runs code in it, and shutting down
    ends the job."""
    async with KernelManager(kernel_spec=spec(slurm)) as km:
        await km.start_kernel()
        p = km.provisioner
        assert isinstance(p, SlurmProvisioner)
        assert p.job_state == "RUNNING" and p.node == "localhost" and p.job_id
        assert [job.split()[:2] for job in slurm.queue()] == [[p.job_id, "RUNNING"]]
        async with km.client() as kc:
            result = await kc.execute("import os; print(os.environ['SLURM_JOB_ID'])", timeout=30)
        assert result.stdout.strip() == p.job_id
        await km.shutdown_kernel()
        assert p.job_state in ("COMPLETED", "CANCELLED")
        assert p.end_reason is None


async def test_interrupt_reaches_the_kernel(slurm: SlurmCluster) -> None:
    """interrupt_kernel (scancel --signal=INT) interrupts running code; the kernel lives on."""
    async with KernelManager(kernel_spec=spec(slurm)) as km:
        await km.start_kernel()
        started = anyio.Event()
        results: list[Any] = []

        def hook(msg: Any) -> None:
            if "started" in msg.content.get("text", ""):
                started.set()

        async with km.client() as kc, anyio.create_task_group() as tg:

            async def run() -> None:
                code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
                results.append(await kc.execute(code, timeout=60, output_hook=hook))

            tg.start_soon(run)
            with anyio.fail_after(30):
                await started.wait()
            await km.interrupt_kernel()
        assert results[0].error["ename"] == "KeyboardInterrupt"
        assert await km.is_alive()


async def test_restart_submits_a_new_job(slurm: SlurmCluster) -> None:
    """restart_kernel ends the job and submits another; the client follows it."""
    async with KernelManager(kernel_spec=spec(slurm)) as km:
        await km.start_kernel()
        p = km.provisioner
        assert isinstance(p, SlurmProvisioner)
        first = p.job_id
        async with km.client() as kc:
            await kc.execute("x = 1", timeout=30)
            await km.restart_kernel()
            assert isinstance(km.provisioner, SlurmProvisioner)
            assert km.provisioner.job_id not in (None, first)
            result = await kc.execute("print('x' in dir())", timeout=30)
        assert result.stdout.strip() == "False"
        assert len(slurm.queue()) == 1


async def test_queue_progress_reaches_the_manager_as_events(slurm: SlurmCluster) -> None:
    """A kernel whose node is busy: the manager's events say submitted, pending (with the job
    id), then running on the node, then started."""
    async with provisioner(slurm, SLEEPER, cpus=slurm.cpus) as blocker:
        await launch(blocker)
        seen: list[KernelEvent] = []
        async with KernelManager(kernel_spec=spec(slurm, cpus=1)) as km, km.events() as events:
            async with anyio.create_task_group() as tg:
                tg.start_soon(km.start_kernel)
                with anyio.fail_after(60):
                    async for event in events:
                        seen.append(event)
                        if event.state == "PENDING":
                            await blocker.kill()  # the node frees up: the kernel's job runs
                        if event.kind == "started":
                            break
            p = km.provisioner
            assert isinstance(p, SlurmProvisioner) and p.job_id
    assert [(e.kind, e.state) for e in seen] == [
        ("starting", None),
        ("progress", "SUBMITTED"),
        ("progress", "PENDING"),
        ("progress", "RUNNING"),
        ("started", None),
    ]
    pending, running = seen[2], seen[3]
    assert pending.detail == f"job {p.job_id} is pending in the queue" and pending.node is None
    assert (
        running.node == "localhost"
        and running.detail == f"job {p.job_id} is running on node localhost"
    )


async def test_inside_an_allocation_the_kernel_is_a_step(slurm: SlurmCluster) -> None:
    """With SLURM_JOB_ID set, the kernel runs as a step of that allocation; interrupt and kill
    reach the step only, and the allocation outlives the kernel."""
    granted = slurm.run("salloc", "--no-shell", "--job-name=allocation", "--nodes=1", "-c", "2")
    job = granted.stderr.split("Granted job allocation ")[1].split()[0]
    try:
        async with provisioner(slurm) as p:
            await launch(p, env={**os.environ, "SLURM_JOB_ID": job})
            assert p.in_allocation and p.job_id == job and p.step_id == "0"
            await p.send_signal(signal.SIGINT)  # an idle ipykernel lives on
            assert await p.poll() is None
        assert p.job_state == "CANCELLED"
        assert [j.split()[:2] for j in slurm.queue()] == [[job, "RUNNING"]]
    finally:
        slurm.run("scancel", job)


# ---------------------------------------------------------------- endings


async def test_scancel_from_outside_is_reported_and_not_restarted(slurm: SlurmCluster) -> None:
    """A job cancelled by someone else ends the kernel: reported with its reason, and under
    the default restart policy the manager declares it dead instead of resubmitting it."""
    async with KernelManager(kernel_spec=spec(slurm)) as km:
        async with km.events() as events:
            await km.start_kernel()
            p = km.provisioner
            assert isinstance(p, SlurmProvisioner) and p.job_id
            assert slurm.run("scancel", p.job_id).returncode == 0
            with anyio.fail_after(30):
                async for event in events:
                    if event.kind == "dead":
                        break
        assert km.dead
        assert p.job_state == "CANCELLED"
        assert p.end_reason == "it was cancelled (scancel)"


async def test_crash_is_restarted_by_default(slurm: SlurmCluster) -> None:
    """A kernel that dies inside its job (not Slurm's doing) is submitted again."""
    async with KernelManager(kernel_spec=spec(slurm)) as km:
        async with km.events() as events:
            await km.start_kernel()
            p = km.provisioner
            assert isinstance(p, SlurmProvisioner)
            first = p.job_id
            async with km.client() as kc:
                await kc.execute("import os", timeout=30)
                with pytest.raises(KernelDiedError, match="status 3"):
                    await kc.execute("os._exit(3)", timeout=30)
            with anyio.fail_after(60):
                async for event in events:
                    if event.kind == "restarted":
                        break
        assert isinstance(km.provisioner, SlurmProvisioner)
        assert km.provisioner.job_id != first
        assert km.provisioner.job_state == "RUNNING"


async def test_restart_policy_never_refuses_with_a_typed_error(slurm: SlurmCluster) -> None:
    """With restart_policy 'never', a launch after a job that ended by itself raises
    JobEndedError and submits nothing."""
    async with provisioner(slurm, SLEEPER, restart_policy="never") as p:
        await launch(p)
        assert p.job_id
        assert slurm.run("scancel", p.job_id).returncode == 0
        with anyio.fail_after(30):
            await p.wait()
        assert p.job_state == "CANCELLED"
        await p.cleanup(restart=True)
        with pytest.raises(JobEndedError, match="restart_policy='never'") as info:
            await launch(p)
        assert info.value.state == "CANCELLED"


async def test_restart_policy_always_submits_again(slurm: SlurmCluster) -> None:
    """With restart_policy 'always', a job cancelled from outside is submitted again."""
    async with provisioner(slurm, SLEEPER, restart_policy="always") as p:
        await launch(p)
        first = p.job_id
        assert first is not None
        assert slurm.run("scancel", first).returncode == 0
        with anyio.fail_after(30):
            await p.wait()
        assert p.job_state == "CANCELLED"
        await p.cleanup(restart=True)
        await launch(p)
        assert p.job_state == "RUNNING" and p.job_id != first


def test_time_limit_is_reported(slurm: SlurmCluster) -> None:
    """A job that reaches its time limit ends with state TIMEOUT and says so, on both backends.

    Slurm's smallest limit is a minute; rather than wait for it, each job's end time is moved
    to now (``scontrol update EndTime=now``), which Slurm enforces as a time limit reached:
    the same ending, at slurmctld's next look at time limits (every 30 s). The two backends
    run side by side (each in a thread of its own, one job each on the two-CPU node) so that
    one look ends both.
    """

    async def reach_time_limit() -> tuple[str, str | None]:
        async with provisioner(slurm, SLEEPER, time_limit="10", cpus=1) as p:
            await launch(p)
            moved = slurm.run("scontrol", "update", f"JobId={p.job_id}", "EndTime=now")
            assert moved.returncode == 0, moved.stderr
            with anyio.fail_after(90):
                await p.wait()
            return p.job_state, p.end_reason

    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(anyio.run, reach_time_limit, backend=b) for b in ("asyncio", "trio")]
        results = [run.result() for run in runs]
    assert results == [("TIMEOUT", "its time limit was reached")] * 2


# ---------------------------------------------------------------- never a leaked job


async def test_kernel_deaf_to_sigterm_leaves_no_connection_file(slurm: SlurmCluster) -> None:
    """A kernel that ignores SIGTERM is killed by Slurm after KillWait, with the node side:
    its connection file (the key) on the node is removed all the same."""
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('connection file', sys.argv[1], file=sys.stderr, flush=True); time.sleep(600)"
    )
    async with provisioner(slurm, [sys.executable, "-c", code, "{connection_file}"]) as p:
        printed = anyio.Event()
        where: list[str] = []

        def seen(record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "connection file " in text:
                where.append(text.rsplit(" ", 1)[-1])
                printed.set()

        handler = logging.Handler()
        handler.emit = seen  # type: ignore[method-assign]
        p.log.addHandler(handler)
        level = p.log.level
        p.log.setLevel(logging.INFO)
        try:
            await launch(p)
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(p.wait)  # reads the kernel's output, returns at the job's end
                    await printed.wait()
                    assert Path(where[0]).exists()
                    await p.kill()  # scancel: SIGTERM, ignored; SIGKILL after KillWait
        finally:
            p.log.setLevel(level)
            p.log.removeHandler(handler)
        assert not Path(where[0]).exists()


async def test_cancelled_while_pending_leaves_nothing(slurm: SlurmCluster) -> None:
    """A launch cancelled while its job waits in the queue withdraws the job, each time (srun
    withdrawing a job races with its own end: a few rounds give the race its chances)."""
    async with provisioner(slurm, SLEEPER, cpus=slurm.cpus) as blocker:
        await launch(blocker)
        for _ in range(3):
            async with provisioner(slurm, SLEEPER, cpus=1) as p:
                with anyio.CancelScope() as scope:
                    p.progress_callback = lambda progress: (
                        scope.cancel() if progress.state == "PENDING" else None
                    )
                    await launch(p)
                # Its id came from srun's "queued and waiting" notice: it was pending.
                assert p.job_id is not None and p.job_state == "CANCELLED"
                assert not p.has_process
                assert [job.split()[0] for job in slurm.queue()] == [blocker.job_id]


@pytest.mark.parametrize("stage", ["SUBMITTED", "RUNNING"])
async def test_cancelled_at_each_stage_leaves_nothing(slurm: SlurmCluster, stage: str) -> None:
    """A launch cancelled as it reports submission (srun just spawned, its request not yet
    sent) or the kernel running (the launch about to return: the cancellation then comes at
    the scope's next checkpoint) leaves no job."""
    async with provisioner(slurm, SLEEPER) as p:
        with anyio.CancelScope() as scope:
            p.progress_callback = lambda progress: (
                scope.cancel() if progress.state == stage else None
            )
            await launch(p)
            await anyio.sleep_forever()
    assert not p.has_process and p.job_state in ("CANCELLED", "COMPLETED")


async def test_two_launches_at_once_one_is_refused(slurm: SlurmCluster) -> None:
    """A second launch of one provisioner while its first waits in the queue is refused with
    ProvisionerError; the first goes on and its job runs."""
    async with provisioner(slurm, SLEEPER, cpus=slurm.cpus) as blocker:
        await launch(blocker)
        async with provisioner(slurm, SLEEPER, cpus=1) as p:
            async with anyio.create_task_group() as tg:
                pending = anyio.Event()
                p.progress_callback = lambda progress: (
                    pending.set() if progress.state == "PENDING" else None
                )
                tg.start_soon(launch, p)
                with anyio.fail_after(30):
                    await pending.wait()
                with pytest.raises(ProvisionerError, match="still running"):
                    await launch(p)
                with pytest.raises(ProvisionerError, match="no running job"):
                    await p.release()  # nor may a pending job be handed over
                await blocker.kill()
            assert p.job_state == "RUNNING"


async def test_unresponsive_srun_is_escalated(slurm: SlurmCluster) -> None:
    """A cancelled launch whose srun does not react (stopped, SIGSTOP) still leaves nothing:
    after the grace period Slurm cancels the job and srun gets SIGKILL."""
    async with provisioner(slurm, SLEEPER, cpus=slurm.cpus) as blocker:
        await launch(blocker)
        async with provisioner(slurm, SLEEPER, cpus=1) as p:
            pending = anyio.Event()
            p.progress_callback = lambda progress: (
                pending.set() if progress.state == "PENDING" else None
            )
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(launch, p)
                    with anyio.fail_after(30):
                        await pending.wait()  # the provisioner reports the queue's notice
                    assert p.job_state == "PENDING" and p.pid is not None
                    os.kill(p.pid, signal.SIGSTOP)
                    scope.cancel()
            assert not p.has_process and p.job_state == "CANCELLED"
            assert [job.split()[0] for job in slurm.queue()] == [blocker.job_id]


async def test_cancelled_while_running_leaves_nothing(slurm: SlurmCluster) -> None:
    """A scope cancelled while the kernel runs ends its job on the way out."""
    with anyio.CancelScope() as scope:
        async with provisioner(slurm) as p:
            await launch(p)
            assert p.job_state == "RUNNING"
            scope.cancel()
            await anyio.sleep_forever()
    assert not p.has_process and p.job_state == "CANCELLED"


async def test_queue_timeout(slurm: SlurmCluster) -> None:
    """A job still pending after queue_timeout is withdrawn and the launch raises
    QueueTimeoutError."""
    async with provisioner(slurm, SLEEPER, cpus=slurm.cpus) as blocker:
        await launch(blocker)
        async with provisioner(slurm, SLEEPER, queue_timeout=1.0) as p:
            with pytest.raises(QueueTimeoutError, match="did not start within 1 s") as info:
                await launch(p)
            assert info.value.job_id is not None
            assert not p.has_process
            assert [job.split()[0] for job in slurm.queue()] == [blocker.job_id]


async def test_rejected_submission(slurm: SlurmCluster) -> None:
    """An unknown partition is refused by Slurm: JobRejectedError with Slurm's words."""
    async with provisioner(slurm, partition="no-such-partition") as p:
        with pytest.raises(JobRejectedError, match=r"(?i)invalid partition"):
            await launch(p)
        assert not p.has_process


async def test_invalid_resource_request(slurm: SlurmCluster) -> None:
    """A resource request no node has (memory) is refused with Slurm's words."""
    async with provisioner(slurm, memory="999999G") as p:
        with pytest.raises(JobRejectedError, match="Memory specification"):
            await launch(p)


async def test_what_no_os_takes_is_a_launch_error(slurm: SlurmCluster) -> None:
    """A NUL byte in the kernel's environment, command or working directory, or '=' in a
    variable's name: LaunchError naming it, before anything is submitted."""
    for config, named in (
        ({"env": {"A": "x\0y"}}, "environment variable 'A'"),
        ({"env": {"A=B": "x"}}, "contains '='"),
        ({"kernel_command": [sys.executable, "-c", "\0"]}, "argument 2"),
        ({"cwd": "/tmp/\0"}, "cwd"),
    ):
        async with provisioner(slurm, SLEEPER, **config) as p:
            with pytest.raises(LaunchError, match=named) as raised:
                await launch(p)
            assert "\n" not in str(raised.value) and not p.has_process


@pytest.mark.parametrize("kernel_id", ["a/b", "../x", "a,b", "a b", "a\nb", "-x", "k" * 129])
async def test_kernel_id_slurm_cannot_name_is_refused(slurm: SlurmCluster, kernel_id: str) -> None:
    """A kernel id with a separator, comma, white space or newline (which would break the
    job's name for scancel and squeue, or the connection file's path on the node):
    InvalidKernelIdError in one line, nothing submitted."""
    async with provisioner(slurm, SLEEPER) as p:
        p.kernel_id = kernel_id
        with pytest.raises(InvalidKernelIdError) as raised:
            await launch(p)
        assert "\n" not in str(raised.value) and not p.has_process and p.job_id is None


@pytest.mark.parametrize("job_name", ["a,b", "a b", "a\nb", "tab\tname", "nul\0"])
async def test_job_name_slurm_cannot_name_is_refused(slurm: SlurmCluster, job_name: str) -> None:
    """A job name with a comma, white space or a control character: ProvisionerConfigError in
    one line, nothing submitted."""
    async with provisioner(slurm, SLEEPER, job_name=job_name) as p:
        with pytest.raises(ProvisionerConfigError, match="job_name") as raised:
            await launch(p)
        assert "\n" not in str(raised.value) and not p.has_process


async def test_job_name_with_a_slash_is_fine(slurm: SlurmCluster) -> None:
    """A job name with '/' (no separator for Slurm) runs, and is what squeue shows."""
    async with provisioner(slurm, SLEEPER, job_name="team/kernel") as p:
        await launch(p)
        shown = slurm.run("squeue", "--noheader", "--format=%j", f"--jobs={p.job_id}")
        assert shown.stdout.split() == ["team/kernel"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"job_id": "1,2"}, ProvisionerInfoError),
        ({"job_id": "1 2"}, ProvisionerInfoError),
        ({"step_id": "0\n1"}, ProvisionerInfoError),
        ({"step_id": "1"}, ProvisionerInfoError),
        ({"in_allocation": True}, ProvisionerInfoError),
        ({"kernel_id": "../k"}, InvalidKernelIdError),
        ({"kernel_id": None}, InvalidKernelIdError),
    ],
)
async def test_taking_over_bad_info_is_refused(
    slurm: SlurmCluster, change: dict[str, Any], error: type[Exception]
) -> None:
    """Saved info whose job id, step id or kernel id Slurm's tools cannot take, or that names
    a step of an allocation: a typed one-line error (ProvisionerInfoError for the job's fields,
    as every provisioner raises for bad take-over info) before anything runs."""
    info = {
        "kernel_id": "k1",
        "connection_info": {},
        "job_id": "1",
        "step_id": "0",
        "slurm_conf": str(slurm.conf),
        **change,
    }
    async with SlurmProvisioner() as other:
        with pytest.raises(error) as raised:
            await other.load_provisioner_info(info)
        assert "\n" not in str(raised.value) and not other.has_process


async def test_slurm_missing(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Without srun where it is looked for, the launch fails with a one-line LaunchError."""
    async with provisioner(slurm, slurm_bin_dir=str(tmp_path)) as p:
        with pytest.raises(LaunchError, match="Slurm's srun is not in"):
            await launch(p)


async def test_kernel_that_cannot_start_on_the_node(slurm: SlurmCluster) -> None:
    """A kernel program missing on the node fails the launch with the node's one-line reason;
    the job is gone."""
    async with provisioner(slurm, ["/no/such/kernel", "{connection_file}"]) as p:
        with pytest.raises(LaunchError, match=r"cannot start the kernel on .*/no/such/kernel"):
            await launch(p)
        assert not p.has_process


async def test_missing_slurm_conf(slurm: SlurmCluster, tmp_path: Path) -> None:
    """A slurm_conf that is not a file is refused before anything is submitted."""
    async with provisioner(slurm, slurm_conf=str(tmp_path / "nope.conf")) as p:
        with pytest.raises(LaunchError, match=r"nope\.conf' is not a file"):
            await launch(p)


LAUNCHER = textwrap.dedent(
    """
    import anyio, json
    from kernel_nursery import KernelSpec, SlurmProvisioner

    async def main():
        spec = KernelSpec(argv={argv!r}, name="k", language="python")
        p = SlurmProvisioner(kernel_spec=spec, slurm_conf={conf!r})
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        print({then}, flush=True)
        await anyio.sleep_forever()

    anyio.run(main)
    """
)


async def test_death_of_the_managing_process_ends_the_job(slurm: SlurmCluster) -> None:
    """A process killed outright (SIGKILL) leaves no job: its guardian stops srun, which ends
    the job."""
    code = LAUNCHER.format(argv=SLEEPER, conf=str(slurm.conf), then="p.pid, p.job_id")
    async with await anyio.open_process(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as process:
        assert process.stdout is not None
        line = await first_line(process)
        srun_pid, job_id = line.split()
        assert [job.split()[0] for job in slurm.queue()] == [job_id.decode()]
        pidfd = os.pidfd_open(int(srun_pid))
        process.send_signal(signal.SIGKILL)
        await process.wait()
    try:
        with anyio.fail_after(30):
            await anyio.wait_readable(pidfd)  # srun's exit: the job has ended with it
    finally:
        os.close(pidfd)


async def test_a_released_job_outlives_its_launcher_and_is_taken_over(
    slurm: SlurmCluster,
) -> None:
    """A job handed over (release) survives its launching process's SIGKILL; another process
    takes it over, reaches the kernel, interrupts it, and notices the job's end when the
    kernel exits (the node side cancels the job, which no srun holds any more)."""
    then = "json.dumps(await p.release())"
    code = LAUNCHER.format(argv=IPYKERNEL, conf=str(slurm.conf), then=then)
    async with await anyio.open_process(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as launcher:
        assert launcher.stdout is not None
        line = await first_line(launcher)
        launcher.send_signal(signal.SIGKILL)
        await launcher.wait()
    info = json.loads(line)
    assert [job.split()[:2] for job in slurm.queue()] == [[info["job_id"], "RUNNING"]]
    async with SlurmProvisioner() as taker:
        await taker.load_provisioner_info(info)
        assert await taker.poll() is None
        started = anyio.Event()

        def hook(msg: Any) -> None:
            if "started" in msg.content.get("text", ""):
                started.set()

        info = validate_connection_info(taker.connection_info)
        async with KernelClient(info, wait_for_exit=taker.wait) as kc:
            await kc.wait_for_ready(timeout=30)
            results: list[Any] = []
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
                    results.append(await kc.execute(code, timeout=60, output_hook=hook))

                tg.start_soon(run)
                with anyio.fail_after(30):
                    await started.wait()
                await taker.send_signal(signal.SIGINT)  # the kernel's step, not the watcher
            assert results[0].error["ename"] == "KeyboardInterrupt"
            assert await taker.poll() is None
            with pytest.raises(KernelDiedError):
                await kc.execute("import os; os._exit(3)", timeout=30)
        with anyio.fail_after(30):
            assert await taker.wait() == UNKNOWN_EXIT_STATUS
    assert not slurm.queue() or all(" COMPLETING " in job for job in slurm.queue())


async def test_a_released_job_is_shut_down_by_its_new_owner(slurm: SlurmCluster) -> None:
    """After release the launcher manages nothing and its scope's end leaves the job alone;
    the new owner's stop ends it."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.release()
        assert not p.has_process and await p.poll() == UNKNOWN_EXIT_STATUS
        with pytest.raises(ProvisionerError, match="no running job"):
            await p.release()
    assert [job.split()[:2] for job in slurm.queue()] == [[info["job_id"], "RUNNING"]]
    async with SlurmProvisioner() as taker:
        await taker.load_provisioner_info(json.loads(json.dumps(info)))
        assert await shutdown_kernel_process(taker, wait_time=10) == UNKNOWN_EXIT_STATUS
    assert not slurm.queue() or all(" COMPLETING " in job for job in slurm.queue())


TAKES_OVER = textwrap.dedent(
    """
    import anyio, json, sys
    from kernel_nursery import SlurmProvisioner

    async def main():
        p = SlurmProvisioner()
        await p.load_provisioner_info(json.loads(sys.stdin.readline()))
        print("taken", flush=True)
        await anyio.sleep_forever()

    anyio.run(main)
    """
)


async def test_a_taker_killed_outright_ends_the_job(slurm: SlurmCluster) -> None:
    """The process that took a released job over owns it: its death (SIGKILL) ends the job
    (its watcher step cancels it), which another watcher notices."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.release()
    async with await anyio.open_process(
        [sys.executable, "-c", TAKES_OVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as taker:
        assert taker.stdin is not None and taker.stdout is not None
        await taker.stdin.send(json.dumps(info).encode() + b"\n")
        line = await first_line(taker)
        assert line == b"taken\n"
        async with SlurmProvisioner() as observer:
            await observer.load_provisioner_info(info)
            taker.send_signal(signal.SIGKILL)
            await taker.wait()
            with anyio.fail_after(30):
                assert await observer.wait() == UNKNOWN_EXIT_STATUS


async def test_another_provisioner_takes_the_job_over(slurm: SlurmCluster) -> None:
    """load_provisioner_info gives a second provisioner a handle on a running job: it sees
    it run, and its kill ends the job, which both notice."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.get_provisioner_info()
        assert info["job_id"] == p.job_id and info["node"] == "localhost"
        async with SlurmProvisioner() as other:
            await other.load_provisioner_info(info)
            assert other.job_id == p.job_id and other.has_process
            assert await other.poll() is None
            await other.kill()
            with anyio.fail_after(30):
                assert await other.wait() == UNKNOWN_EXIT_STATUS
                await p.wait()
        assert p.job_state == "CANCELLED"


async def test_taking_over_an_ended_job_fails(slurm: SlurmCluster) -> None:
    """A job that has ended cannot be taken over: JobEndedError, nothing left running."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.get_provisioner_info()
    async with SlurmProvisioner() as other:
        with pytest.raises(JobEndedError, match="is not running"):
            await other.load_provisioner_info(info)
        assert not other.has_process


def test_registered_in_the_entry_point_group() -> None:
    """The factory finds SlurmProvisioner under the name 'slurm'."""
    from kernel_nursery.provisioning import KernelProvisionerFactory

    assert KernelProvisionerFactory.instance().is_provisioner_available(
        KernelSpec(argv=["x"], metadata={"kernel_provisioner": {"provisioner_name": "slurm"}})
    )


async def test_kernel_id_that_is_no_file_name_is_refused() -> None:
    """A kernel id with a path separator, a comma or white space (it names the connection file
    on the node) is a one-line InvalidKernelIdError before anything is submitted."""
    from kernel_nursery import InvalidKernelIdError

    for kernel_id in ("../x", "a/b", "a,b", "a b", "a\nb"):
        p = SlurmProvisioner(kernel_spec=KernelSpec(argv=["x"], name="k"), kernel_id=kernel_id)
        with pytest.raises(InvalidKernelIdError) as raised:
            await p.pre_launch()
        assert "\n" not in str(raised.value) and not p.has_process


# ---------------------------------------------------------------- hostile review

MIMICS_SRUN = [
    sys.executable,
    "-c",
    textwrap.dedent(
        """
        import sys, time
        # What a nested srun (os.system('srun ...') in a notebook) writes to the kernel's
        # standard error, which reaches ours through the job's srun.
        sys.stderr.write("srun: job 999999 queued and waiting for resources\\n")
        sys.stderr.write("srun: Job 999998 step creation temporarily disabled, retrying\\n")
        sys.stderr.write("srun: job 999997 has been allocated resources\\n")
        sys.stderr.write("mimicry done\\n")
        sys.stderr.flush()
        time.sleep(600)
        """
    ),
]


async def test_kernel_output_like_srun_notices_changes_nothing(slurm: SlurmCluster) -> None:
    """Queue notices in the running kernel's own output (a nested srun's) neither change the
    job id (scancel would name another job) nor take the job back to PENDING, nor report
    progress after RUNNING; the job can still be handed over."""
    async with provisioner(slurm, MIMICS_SRUN) as p:
        states: list[str] = []
        p.progress_callback = lambda progress: states.append(progress.state)
        done = anyio.Event()

        class Marker(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "mimicry done" in record.getMessage():
                    done.set()

        handler = Marker()
        p.log.addHandler(handler)
        level = p.log.level
        p.log.setLevel(logging.INFO)
        try:
            await launch(p)
            job_id = p.job_id
            async with anyio.create_task_group() as tg:
                tg.start_soon(p.wait)
                with anyio.fail_after(30):
                    await done.wait()
                assert p.job_id == job_id and p.job_state == "RUNNING"
                # (PENDING before RUNNING when the last test's job was still completing)
                assert states[-1] == "RUNNING" and states.count("RUNNING") == 1
                info = await p.release()
                assert info["job_id"] == job_id
        finally:
            p.log.setLevel(level)
            p.log.removeHandler(handler)
    await end_released(info)


async def test_a_take_over_cancelled_midway_leaves_the_job_to_others(slurm: SlurmCluster) -> None:
    """A load_provisioner_info cancelled while its watcher joins the job lets go of it (the job
    runs on, unharmed) and leaves the taker managing nothing; another take-over then works."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.release()
    try:
        for _ in range(2):
            async with SlurmProvisioner() as taker:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await taker.load_provisioner_info(info)
                assert not taker.has_process
            assert [job.split()[:2] for job in slurm.queue()] == [[info["job_id"], "RUNNING"]]
    finally:
        async with SlurmProvisioner() as owner:
            await owner.load_provisioner_info(info)
            assert await owner.poll() is None
            await owner.kill()
            with anyio.fail_after(30):
                await owner.wait()


async def test_a_released_provisioner_launches_anew_whatever_its_restart_policy(
    slurm: SlurmCluster,
) -> None:
    """A job handed over did not end: the provisioner that released it may launch a new job,
    even with restart_policy 'never' (which is about jobs that ended unasked)."""
    async with provisioner(slurm, SLEEPER, restart_policy="never") as p:
        await launch(p)
        info = await p.release()
        try:
            await launch(p)
            assert p.job_id != info["job_id"] and p.job_state == "RUNNING"
        finally:
            await end_released(info)


@pytest.mark.parametrize("first", ["release", "cleanup"])
async def test_release_racing_cleanup_leaves_no_job_to_nobody(
    slurm: SlurmCluster, first: str
) -> None:
    """release() and cleanup() at once: release either hands the job over (its info is
    returned) or fails with ProvisionerError; either way the provisioner manages nothing
    after, and a job left running is one whose info release returned."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        outcome: list[Any] = []

        async def release() -> None:
            try:
                outcome.append(await p.release())
            except ProvisionerError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            if first == "release":
                tg.start_soon(release)
                await anyio.lowlevel.checkpoint()
                tg.start_soon(p.cleanup)
            else:
                tg.start_soon(p.cleanup)
                await anyio.lowlevel.checkpoint()
                tg.start_soon(release)
        assert not p.has_process
    [result] = outcome
    running = [job.split()[0] for job in slurm.queue() if " COMPLETING " not in job]
    if isinstance(result, dict):
        assert running in ([], [result["job_id"]])
        if running:
            async with SlurmProvisioner() as taker:
                await taker.load_provisioner_info(result)
                await taker.kill()
                with anyio.fail_after(30):
                    await taker.wait()
    else:
        assert running == []


class Hostile(BaseException):
    """What a progress callback may raise that report_progress does not catch (not an
    Exception: KeyboardInterrupt, SystemExit...)."""


@pytest.mark.parametrize("stage", ["SUBMITTED", "RUNNING"])
async def test_a_callback_raising_a_base_exception_leaves_no_job(
    slurm: SlurmCluster, stage: str
) -> None:
    """A progress callback that raises what is no Exception at a launch's stage makes the
    launch raise it, and, as any failed launch, leave no job and no srun behind before it
    returns (not only once the provisioner's scope ends)."""
    async with provisioner(slurm, SLEEPER) as p:

        def hostile(progress: Any) -> None:
            if progress.state == stage:
                raise Hostile(stage)

        p.progress_callback = hostile
        with pytest.raises(Hostile):
            await launch(p)
        assert not p.has_process
        assert not [job for job in slurm.queue() if " COMPLETING " not in job]


async def test_a_take_over_whose_callback_raises_lets_go(slurm: SlurmCluster) -> None:
    """A take-over whose progress callback raises what is no Exception (at RUNNING) raises it
    and lets go of the job: the taker manages nothing, the job runs on for its owner."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.release()
    try:
        async with SlurmProvisioner() as taker:

            def hostile(progress: Any) -> None:
                raise Hostile(progress.state)

            taker.progress_callback = hostile
            with pytest.raises(Hostile):
                await taker.load_provisioner_info(info)
            assert not taker.has_process
        assert [job.split()[:2] for job in slurm.queue()] == [[info["job_id"], "RUNNING"]]
    finally:
        await end_released(info)


async def test_two_takers_at_once_share_the_job(slurm: SlurmCluster) -> None:
    """Two take-overs of one released job at once both join it (each its own watcher step):
    both own it, the first one's stop ends it, and the other sees the end."""
    async with provisioner(slurm, SLEEPER) as p:
        await launch(p)
        info = await p.release()
    async with SlurmProvisioner() as one, SlurmProvisioner() as two:
        async with anyio.create_task_group() as tg:
            tg.start_soon(one.load_provisioner_info, dict(info))
            tg.start_soon(two.load_provisioner_info, dict(info))
        assert await one.poll() is None and await two.poll() is None
        await one.kill()
        with anyio.fail_after(30):
            assert await two.wait() == UNKNOWN_EXIT_STATUS
            assert await one.wait() == UNKNOWN_EXIT_STATUS


async def first_line(process: anyio.abc.Process) -> bytes:
    """The first line *process* writes to its standard output (within 60 s)."""
    assert process.stdout is not None
    line = b""
    with anyio.fail_after(60):
        while not line.endswith(b"\n"):
            line += await process.stdout.receive()
    return line


async def end_released(info: dict[str, Any]) -> None:
    """Take the released job of *info* over, and end it."""
    async with SlurmProvisioner() as owner:
        await owner.load_provisioner_info(info)
        await owner.kill()
        with anyio.fail_after(30):
            await owner.wait()


async def test_start_and_shutdown_never_block_the_event_loop(
    slurm: SlurmCluster, fresh_guardian: None
) -> None:
    """A start (the process's first, which spawns the guardian) and a shutdown of a kernel
    on Slurm run no spawn nor file work on the event loop's thread, and never pause it long
    (tests/helpers/loop_watch.py)."""
    async with watch_loop() as watch:
        await start_and_stop(spec(slurm, FAKE))
    assert _guardian.guardian_pid() is not None  # the start spawned it
    watch.check()


async def test_cancelled_while_the_guardian_starts_a_start_leaves_nothing(
    slurm: SlurmCluster, fresh_guardian: None
) -> None:
    """Cancelled while the worker thread that registers srun spawns the guardian (it finishes
    that), a start leaves no srun, job or registration with the guardian."""
    async with watch_loop() as watch:
        with anyio.CancelScope() as scope:
            watch.cancel_at("guardian.py", scope)
            await start_and_stop(spec(slurm, FAKE))
    assert scope.cancelled_caught
    assert watch.cancelled_at is not None and "guardian.py" in watch.cancelled_at
    assert not _guardian._state.registered
