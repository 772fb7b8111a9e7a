"""DockerProvisioner against a private dockerd: real containers running a real ipykernel, in an
image that mounts this machine's interpreter read-only (tests/helpers/dockerd.py)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel_nursery import (
    DockerProvisioner,
    KernelDiedError,
    KernelManager,
    KernelPool,
    KernelSpec,
    LaunchError,
    ProvisionerConfigError,
    ProvisionerError,
    ProvisionerInfoError,
    start_kernel,
)
from kernel_nursery.connection import reserved_ports
from kernel_nursery.provisioning import (
    KernelProvisionerFactory,
    _guardian,
    remove_stale_containers,
)
from kernel_nursery.provisioning.docker import _provisioner as docker_provisioner
from kernel_nursery.provisioning.docker._engine import LABEL_KERNEL, LABEL_OWNER, owner_label

from ...cli.conftest import cli
from ...helpers.dockerd import (
    IMAGE,
    Engine,
    build_test_image,
    restart_dockerd,
    start_dockerd,
    stop_dockerd,
)
from ...helpers.engines import need_binaries
from ...helpers.sshd import wait_gone

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


def docker_spec(daemon: Engine, **config: Any) -> KernelSpec:
    """A kernel spec whose ipykernel runs in a container of the test image on *daemon*."""
    return KernelSpec(
        argv=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Container",
        language="python",
        name="container",
        metadata={
            "kernel_provisioner": {
                "provisioner_name": "docker",
                "config": daemon.provisioner_config(**config),
            }
        },
    )


def provisioner(daemon: Engine, **config: Any) -> DockerProvisioner:
    spec = docker_spec(daemon, **config)
    made = KernelProvisionerFactory.instance().create_provisioner_instance("k1", spec, parent=None)
    assert isinstance(made, DockerProvisioner)
    return made


async def launch(p: DockerProvisioner) -> dict[str, Any]:
    kw = await p.pre_launch()
    return dict(await p.launch_kernel(kw.pop("cmd"), **kw))


async def interrupt_a_sleep(km: KernelManager) -> str | None:
    """Run a long sleep in the kernel, interrupt it once it is in it; the error's name."""
    async with km.client() as kc:
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
                await sleeping.wait()
                await km.interrupt_kernel()
        error = results[0].error
        return None if error is None else str(error["ename"])


async def run_code(km: KernelManager, code: str) -> str:
    async with km.client() as kc:
        result = await kc.execute(code, timeout=60)
        assert result.error is None, result.error
        return str(result.stdout)


# ---------------------------------------------------------------------- through a manager


async def test_ipykernel_executes_interrupts_restarts_and_shuts_down(
    engine_clean: Engine,
) -> None:
    """A real ipykernel in a container (host network, loopback) runs code, is interrupted,
    restarts on the same ports in a new container, and leaves no container behind."""
    spec = docker_spec(engine_clean)
    async with start_kernel(kernel_spec=spec) as km:
        p = km.provisioner
        assert isinstance(p, DockerProvisioner)
        first = p.container_id
        assert first is not None and first in engine_clean.containers()
        info = km.connection_info
        assert info["ip"] == "127.0.0.1"
        code = "import os; print(any(map(os.path.exists, ['/.dockerenv', '/run/.containerenv'])))"
        assert (await run_code(km, code)) == "True\n"  # the marker of each engine
        assert await interrupt_a_sleep(km) == "KeyboardInterrupt"
        await km.restart_kernel()
        assert km.connection_info == info
        assert p.container_id not in (None, first)
        assert first not in engine_clean.containers()
        assert (await run_code(km, "print(6 * 7)")) == "42\n"
    assert engine_clean.containers() == []
    assert not reserved_ports()


async def test_network_none_uses_ipc_in_the_runtime_directory(engine_clean: Engine) -> None:
    """With network 'none' the kernel has no network at all and is reached through ipc sockets
    in the bind-mounted runtime directory, removed at the end."""
    async with start_kernel(kernel_spec=docker_spec(engine_clean, network="none")) as km:
        info = km.connection_info
        assert info["transport"] == "ipc"
        directory = Path(info["ip"]).parent
        code = "import socket; print(sorted(i[1] for i in socket.if_nameindex()))"
        assert (await run_code(km, code)) == "['lo']\n"
    assert not directory.exists()
    assert engine_clean.containers() == []


async def test_published_ports_on_loopback_with_curve(dockerd_bridge: Engine) -> None:
    """With network 'published' the kernel is on the engine's bridge, its ports published on
    127.0.0.1 only, and the connection is encrypted with CurveZMQ (the bridge reaches it)."""
    spec = docker_spec(dockerd_bridge, network="published")
    async with start_kernel(kernel_spec=spec) as km:
        info = km.connection_info
        assert info["ip"] == "127.0.0.1" and info.get("curve_publickey")
        p = km.provisioner
        assert isinstance(p, DockerProvisioner) and p.container_id is not None
        ports = dockerd_bridge.run("port", p.container_id).stdout.split()
        assert ports and all(a.startswith("127.0.0.1:") for a in ports[2::3])
        code = "import socket; print(sorted(i[1] for i in socket.if_nameindex()))"
        assert (await run_code(km, code)) == "['eth0', 'lo']\n"
    assert dockerd_bridge.containers() == []


async def test_a_pool_hands_out_warm_containers(engine_clean: Engine) -> None:
    """A KernelPool keeps containers warm and hands one out; every container goes at the end."""
    async with KernelPool(kernel_spec=docker_spec(engine_clean), size=1) as pool:
        async with pool.take() as km:
            assert (await run_code(km, "print('pooled')")) == "pooled\n"
            assert isinstance(km.provisioner, DockerProvisioner)
    assert engine_clean.containers() == []


async def test_out_of_memory_is_reported_as_such(docker_clean: Engine) -> None:
    """A kernel that allocates past its memory limit dies, and the 'dead' event says the
    container was OOM-killed at that limit, not only exit status 137."""
    spec = docker_spec(docker_clean, limits={"memory": "96m"})
    async with KernelManager(kernel_spec=spec, autorestart=False) as km:
        async with km.events() as events:
            await km.start_kernel()
            async with km.client() as kc:
                code = "b = []\nwhile True: b.append(bytearray(10**7))"
                with pytest.raises(KernelDiedError):
                    await kc.execute(code, timeout=60)
            with anyio.fail_after(60):
                async for event in events:
                    if event.kind == "dead":
                        break
    assert event.exit_status == 137
    assert event.limit == "memory"
    assert event.reason == "killed by the out-of-memory killer at its memory limit of 96 MiB"
    assert docker_clean.containers() == []


async def test_pids_limit_stops_a_fork_bomb(engine_clean: Engine) -> None:
    """Forking without end stops at the pids limit with EAGAIN, and the kernel lives on."""
    code = textwrap.dedent(
        """
        import os, time
        children = []
        try:
            while len(children) < 500:
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError as exc:
            print("stopped", exc.errno == 11, len(children) < 64)
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        """
    )
    async with start_kernel(kernel_spec=docker_spec(engine_clean, limits={"pids": 64})) as km:
        assert (await run_code(km, code)) == "stopped True True\n"
        assert (await run_code(km, "print('alive')")) == "alive\n"
    assert engine_clean.containers() == []


async def test_rlimits_apply_and_cpu_time_ends_the_kernel(docker_clean: Engine) -> None:
    """open_files and file_size are the kernel's rlimits; a kernel past its cpu_time is
    stopped by SIGXCPU, and the 'dead' event names the limit."""
    limits = {"open_files": 512, "file_size": "10m", "cpu_time": 2}
    spec = docker_spec(docker_clean, limits=limits)
    async with KernelManager(kernel_spec=spec, autorestart=False) as km:
        async with km.events() as events:
            await km.start_kernel()
            code = (
                "import resource as r; "
                "print(r.getrlimit(r.RLIMIT_NOFILE), r.getrlimit(r.RLIMIT_FSIZE))"
            )
            assert (await run_code(km, code)) == f"(512, 512) ({10 * 2**20}, {10 * 2**20})\n"
            async with km.client() as kc:
                with pytest.raises(KernelDiedError):
                    await kc.execute("while True: pass", timeout=60)
            with anyio.fail_after(60):
                async for event in events:
                    if event.kind == "dead":
                        break
    assert event.exit_status == 128 + 24  # SIGXCPU, as the init process reports it
    assert (event.limit, event.reason) == (
        "cpu_time",
        "stopped (SIGXCPU) at its cpu_time limit of 2 s",
    )
    assert docker_clean.containers() == []


async def test_a_container_killed_outside_is_noticed_and_restarted(
    engine_clean: Engine,
) -> None:
    """The engine killing the container is seen through the wait client at once (no poll),
    and the manager's restart policy brings up a new container."""
    async with start_kernel(kernel_spec=docker_spec(engine_clean)) as km:
        p = km.provisioner
        assert isinstance(p, DockerProvisioner)
        first = p.container_id
        assert first is not None
        async with km.events() as events:
            await anyio.to_thread.run_sync(engine_clean.run, "kill", first)
            with anyio.fail_after(60):
                async for event in events:
                    if event.kind == "restarting":
                        assert event.exit_status == 137
                        assert event.reason is None and event.limit is None  # no limits
                    if event.kind == "restarted":
                        break
        assert p.container_id not in (None, first)
        assert (await run_code(km, "print(1)")) == "1\n"
    assert engine_clean.containers() == []


@pytest.mark.parametrize("seconds", [0.0, 0.2, 0.6, 1.5])
async def test_cancelled_start_leaves_no_container(engine_clean: Engine, seconds: float) -> None:
    """A start cancelled at any point (before, while or after the engine creates the container)
    leaves no container, port or runtime directory."""
    with anyio.move_on_after(seconds):
        async with start_kernel(kernel_spec=docker_spec(engine_clean)):
            pass
    assert engine_clean.containers() == []
    assert not reserved_ports()


async def test_launch_failures_are_typed_and_leave_nothing(engine_clean: Engine) -> None:
    """A missing image, (without an init process) a kernel command missing inside, or a NUL
    byte in the command is a LaunchError with the reason, and leaves no container (one the
    engine created but could not start is removed)."""
    for config, words in [
        ({"image": "kernel-nursery-no-such-image:1"}, "no-such-image"),
        ({"argv": ["/no/such/kernel", "{connection_file}"], "init": False}, "/no/such/kernel"),
        ({"argv": ["python\x00", "{connection_file}"]}, "argument 0 contains a NUL byte"),
    ]:
        p = provisioner(engine_clean, **config)
        async with p:
            with pytest.raises(LaunchError, match=words):
                await launch(p)
        assert engine_clean.containers() == []
    assert not reserved_ports()


async def test_a_kernel_missing_inside_dies_before_it_is_ready(engine_clean: Engine) -> None:
    """With the init process (the default) the container starts and the missing command ends
    it at once: start_kernel raises KernelDiedError with the init's status, nothing is left."""
    spec = docker_spec(engine_clean, argv=["/no/such/kernel", "{connection_file}"])
    with pytest.raises(KernelDiedError) as caught:
        async with start_kernel(kernel_spec=spec):
            pass
    # The init process's status for a command it cannot run: tini's (Docker), catatonit's.
    assert caught.value.exit_status == {"docker": 127, "podman": 1}[engine_clean.client]
    assert engine_clean.containers() == []
    assert not reserved_ports()


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"image": ""}, "image is required"),
        ({"image": "-v"}, "not an image reference"),
        ({"limits": {"memory": "lots"}}, r"limits\['memory'\] must be a size"),
        ({"limits": {"cpus": -1.0}}, r"limits\['cpus'\] must be a number"),
        ({"limits": {"pids": -3}}, r"limits\['pids'\] must be a whole number"),
        ({"limits": {"swap": "1g"}}, "unknown limit 'swap'"),
        ({"mounts": ["relative:/x"]}, "not an absolute path"),
        ({"mounts": ["/no/such/dir:/x:ro"]}, "does not exist"),
        ({"mounts": ["/usr:/usr:rx"]}, "SOURCE:TARGET"),
        ({"workdir": "tmp"}, "must be an absolute path"),
        ({"user": "--privileged"}, "not a user name"),
        ({"env": {"A=B": "1"}}, "contains '='"),
    ],
)
async def test_bad_config_is_refused_before_anything_starts(
    docker_clean: Engine, config: dict[str, Any], words: str
) -> None:
    """Each bad setting is a one-line ProvisionerConfigError from pre_launch: no container,
    port or directory is made."""
    p = provisioner(docker_clean, **config)
    with pytest.raises(ProvisionerConfigError, match=words) as caught:
        await p.pre_launch()
    assert "\n" not in str(caught.value)
    assert not reserved_ports() and not p.connection_info
    await p.cleanup()


# ---------------------------------------------------------------------- ownership


async def test_take_over_by_container_id_and_refusal_of_others(engine_clean: Engine) -> None:
    """An independent container released by one provisioner is taken over by id by another
    (which removes it at its cleanup); a container that is not the kernel's, or no container,
    is refused; a container that is not independent cannot be released."""
    bound = provisioner(engine_clean)
    async with bound:
        await launch(bound)
        with pytest.raises(ProvisionerError, match="independent"):
            await bound.release()
    p = provisioner(engine_clean, independent=True)
    async with p:
        await launch(p)
        info = await p.release()
        assert not p.has_process
    cid = info["container_id"]
    assert cid in engine_clean.containers()  # p's end did not remove it
    q = provisioner(engine_clean)
    with pytest.raises(ProvisionerInfoError, match="not kernel other"):
        await q.load_provisioner_info({**info, "kernel_id": "other"})
    with pytest.raises(ProvisionerInfoError, match="not a container id"):
        await q.load_provisioner_info({**info, "container_id": "--rm"})
    async with q:
        await q.load_provisioner_info(info)
        assert q.container_id == cid and await q.poll() is None
        await q.kill()
        with anyio.fail_after(30):
            assert await q.wait() == 137
    assert engine_clean.containers() == []
    assert not Path(info["runtime_dir"]).exists()


async def create_owned(daemon: Engine, name: str, owner: str) -> str:
    """A container labelled as kernel *name*'s, owned by *owner*; its id."""
    done = await anyio.to_thread.run_sync(
        lambda: daemon.run(
            *("create", "--label", f"{LABEL_KERNEL}={name}", "--label", f"{LABEL_OWNER}={owner}"),
            *(IMAGE, "/usr/bin/true"),
        )
    )
    return done.stdout.strip()


async def ended_owner() -> str:
    """The owner label of a process that has ended (another interpreter, run to its end)."""
    source = (
        f"import sys; sys.path[:0] = {sys.path!r}; "
        "from kernel_nursery.provisioning.docker._engine import owner_label; print(owner_label())"
    )
    done = await anyio.run_process([sys.executable, "-c", source])
    return done.stdout.decode().strip()


async def test_stale_containers_are_removed_and_live_ones_kept(engine_clean: Engine) -> None:
    """A container whose owner process has ended is stale and removed; one whose owner lives
    (this process) is kept."""
    stale = await create_owned(engine_clean, "stale", await ended_owner())
    live = await create_owned(engine_clean, "live", owner_label())
    try:
        assert await remove_stale_containers(engine_clean.command) == [stale]
        assert engine_clean.containers() == [live]
    finally:
        for cid in (stale, live):
            engine_clean.run("rm", "-f", cid, check=False)


async def test_the_command_line_removes_stale_containers(
    docker_clean: Engine, anyio_backend: str
) -> None:
    """kernel-nursery kernels --remove-stale --engine COMMAND removes the stale containers of
    that engine and prints their ids; --engine alone is refused."""
    stale = await create_owned(docker_clean, "stale", await ended_owner())
    engine = " ".join(docker_clean.command)
    args = ["kernels", "--backend", anyio_backend, "--engine", engine]
    try:
        refused = await anyio.to_thread.run_sync(lambda: cli(*args))
        assert refused.returncode != 0 and "--remove-stale" in refused.stderr
        removed = await anyio.to_thread.run_sync(lambda: cli(*args, "--remove-stale"))
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout == f"container {stale}\n"
        assert docker_clean.containers() == []
    finally:
        docker_clean.run("rm", "-f", stale, check=False)


_KILLED_MANAGER = """
import sys, json
sys.path[:0] = {path!r}
import anyio
from kernel_nursery import KernelManager, KernelSpec
from kernel_nursery.provisioning import _guardian

async def main():
    spec = KernelSpec.from_dict(json.loads({spec!r}), name="container")
    async with KernelManager(kernel_spec=spec) as km:
        await km.start_kernel()
        print(km.provisioner.container_id, _guardian.guardian_pid(), flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def test_guardian_removes_the_containers_of_a_killed_manager(
    engine_clean: Engine, tmp_path: Path
) -> None:
    """A managing process killed with SIGKILL leaves no container: its guardian removes it
    (and its runtime directory)."""
    spec = docker_spec(engine_clean)
    source = _KILLED_MANAGER.format(path=sys.path, spec=json.dumps(spec.to_dict()))
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    async with await anyio.open_process(
        [sys.executable, "-c", source], env=env, stderr=subprocess.DEVNULL
    ) as manager:
        assert manager.stdout is not None
        with anyio.fail_after(120):
            line = b""
            async for chunk in manager.stdout:
                line += chunk
                if b"\n" in line:
                    break
        cid, guardian = line.decode().split()
        assert cid in engine_clean.containers()
        manager.kill()
        await manager.wait()
    assert not await anyio.to_thread.run_sync(wait_gone, {int(guardian)}, 60)
    assert cid not in engine_clean.containers()


async def test_stale_containers_are_swept_at_the_first_launch(
    docker_clean: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first launch on an engine (in a process) removes the containers of ended owners."""
    monkeypatch.setattr(docker_provisioner, "_swept", set())
    stale = await create_owned(docker_clean, "stale", await ended_owner())
    try:
        async with start_kernel(kernel_spec=docker_spec(docker_clean)) as km:
            assert stale not in docker_clean.containers()
            assert km.provisioner is not None
    finally:
        docker_clean.run("rm", "-f", stale, check=False)
    assert docker_clean.containers() == []


@pytest.mark.usefixtures("fresh_guardian")
async def test_an_engine_restart_ends_the_kernel_and_its_container_goes_later() -> None:
    """An engine shut down under a kernel ends it (noticed through the wait client, reported
    dead); the container it could not remove then is left to this process's guardian, which
    removes it (the engine being back) when this process ends."""
    binaries = need_binaries("docker", "dockerd", "docker", "runc", "containerd")
    daemon = await anyio.to_thread.run_sync(start_dockerd, binaries)
    try:
        await anyio.to_thread.run_sync(build_test_image, daemon)
        down = anyio.Event()
        async with KernelManager(kernel_spec=docker_spec(daemon), autorestart=False) as km:
            async with km.events() as events:
                await km.start_kernel()
                p = km.provisioner
                assert isinstance(p, DockerProvisioner)
                cid = p.container_id

                def halt_until_dead() -> None:
                    anyio.from_thread.run(down.wait)  # the engine stays down until then

                async with anyio.create_task_group() as tg:
                    restart = functools.partial(restart_dockerd, daemon, down=halt_until_dead)
                    tg.start_soon(anyio.to_thread.run_sync, restart)
                    with anyio.fail_after(120):
                        async for event in events:
                            if event.kind == "dead":
                                break
                    down.set()
        assert cid in daemon.containers()  # the engine was down at the cleanup
        state = _guardian._state
        assert state.fd is not None and state.popen is not None
        os.close(state.fd)  # as if this process ended: the guardian does its work
        state.fd = None
        await anyio.to_thread.run_sync(state.popen.wait, 60)
        assert daemon.containers() == []
    finally:
        await anyio.to_thread.run_sync(stop_dockerd, daemon)
