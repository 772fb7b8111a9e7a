"""Tests for kernel_nursery.provisioning.sandbox: a real ipykernel in a real bwrap sandbox, probed
from inside by hostile code; its limits, its endings, and that nothing of it is left."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel_nursery import (
    KernelDiedError,
    KernelEvent,
    KernelManager,
    KernelNursery,
    KernelPool,
    LaunchError,
    ProvisionerConfigError,
    SandboxProvisioner,
    start_kernel,
)

from ...helpers.kernels import start_and_stop
from ...helpers.loop_watch import watch_loop
from ...helpers.procs import gone, is_running
from .conftest import SandboxSpec, left_of

pytestmark = pytest.mark.anyio

#: Seconds a sandboxed kernel gets to be ready, and a request to be answered, on a busy machine.
READY = 60

#: Run inside the kernel: every way out it tries, and what happened (as JSON on stdout).
PROBE = r"""
import errno, json, os, socket, time
found = {}

def attempt(name, action):
    try:
        action()
        found[name] = "ok"
    except OSError as exc:
        found[name] = errno.errorcode.get(exc.errno, str(exc.errno))

def write(path):
    with open(path, "w") as f:
        f.write("x")

for name, path in [("usr", "/usr/kn-probe"), ("root", "/kn-probe"), ("etc", "/etc/kn-probe"),
                   ("venv", os.path.join(os.path.dirname(os.__file__), "kn-probe")),
                   ("host_dir", HOST_DIR + "/kn-probe")]:
    attempt("write_" + name, lambda path=path: write(path))
attempt("write_home", lambda: write(os.path.expanduser("~/mine")))
attempt("write_tmp", lambda: write("/tmp/mine"))
attempt("read_hidden", lambda: open(SECRET).read())
attempt("read_home", lambda: open(HOME_FILE).read())
attempt("read_shadow", lambda: open("/etc/shadow").read())

def connect():
    with socket.create_connection(("127.0.0.1", PORT), timeout=5):
        pass
attempt("connect", connect)
found["pids_seen"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())

children = []
try:
    for _ in range(500):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    found["fork"] = "ok"
except OSError as exc:
    found["fork"] = errno.errorcode.get(exc.errno, str(exc.errno))
found["forked"] = len(children)
for pid in children:
    os.kill(pid, 9)
    os.waitpid(pid, 0)

def big_file():
    with open("big", "wb") as f:
        f.write(b"x" * (2 * 1024 * 1024))
attempt("big_file", big_file)
print(json.dumps(found))
"""


@contextmanager
def tcp_server() -> Iterator[int]:
    """A TCP port the test listens on, on 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


async def run_json(km: KernelManager, code: str) -> Any:
    """Execute *code* in the kernel and parse the last line it prints."""
    async with km.client() as kc:
        result = await kc.execute(code, timeout=READY)
    assert result.status == "ok", result.reply.content
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.usefixtures("cgroups")
async def test_a_hostile_kernel_stays_inside(
    sandbox_spec: SandboxSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """From inside: no write outside its home and /tmp, no read of the test's file or of the
    user's home, no TCP to the host's loopback, no host process seen, forks stop at pids, a
    file stops at file_size; the limits are logged and reported; afterwards nothing of the
    sandbox is left."""
    secret = tmp_path / "secret"
    secret.write_text("the test's secret")
    # A file of the user's home folder (this process's may read it; the kernel may not).
    home_file = next((p for p in Path.home().iterdir() if p.is_file()), Path.home() / "none")
    spec = sandbox_spec(limits={"memory": "512m", "pids": 40, "file_size": "1m", "cpus": 1})
    caplog.set_level(logging.INFO)
    with tcp_server() as port:
        async with start_kernel(kernel_spec=spec, ready_timeout=READY) as km:
            provisioner = km.provisioner
            assert isinstance(provisioner, SandboxProvisioner)
            info = await provisioner.get_provisioner_info()
            pid = provisioner.pid
            code = (
                f"HOST_DIR = {str(tmp_path)!r}\nSECRET = {str(secret)!r}\nPORT = {port}\n"
                f"HOME_FILE = {str(home_file)!r}\n"
            )
            found = await run_json(km, code + PROBE)
    assert found["write_home"] == found["write_tmp"] == "ok"
    for name in ("usr", "root", "etc", "venv", "host_dir"):
        assert found[f"write_{name}"] in ("EROFS", "ENOENT", "EACCES"), (name, found)
    assert not list(tmp_path.glob("kn-probe"))
    assert found["read_hidden"] == "ENOENT"
    assert found["read_home"] == "ENOENT"
    assert found["read_shadow"] == "ENOENT"
    assert found["connect"] in ("ECONNREFUSED", "ENETUNREACH")
    assert max(found["pids_seen"]) < 40  # its own namespace: bwrap's init, the kernel, ...
    assert found["fork"] == "EAGAIN"
    assert found["forked"] < 40
    assert found["big_file"] == "EFBIG"
    limits = info["sandbox"]["limits"]
    assert limits["memory"]["enforced"].startswith(("cgroup", "rlimit AS"))
    assert limits["file_size"] == {"value": 1024 * 1024, "enforced": "rlimit FSIZE"}
    assert limits["cpus"]["value"] == 1.0
    assert limits["cpus"]["enforced"] in ("cgroup v1 cpu", "cgroup v2 cpu")
    assert any("is sandboxed: network none" in r.getMessage() for r in caplog.records)
    assert pid is not None and not is_running(pid)
    assert not left_of(info)


@pytest.mark.usefixtures("cgroups")
async def test_memory_past_the_limit_is_a_dead_event_naming_it(
    sandbox_spec: SandboxSpec,
) -> None:
    """A kernel that allocates past its memory limit is OOM-killed, and with autorestart off
    the dead event says the memory limit ended it; nothing is left."""
    spec = sandbox_spec(limits={"memory": "160m"}, limit_enforcement="cgroup")
    events: list[KernelEvent] = []
    async with start_kernel(kernel_spec=spec, ready_timeout=READY, autorestart=False) as km:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        async with km.events() as stream, km.client() as kc:
            with pytest.raises(KernelDiedError):
                await kc.execute("x = bytearray(400 * 1024 * 1024)", timeout=READY)
            with anyio.fail_after(READY):
                async for event in stream:
                    events.append(event)
                    if event.kind == "dead":
                        break
    dead = events[-1]
    assert dead.kind == "dead"
    assert dead.limit == "memory"
    assert dead.reason is not None and "160 MiB" in dead.reason
    assert dead.exit_status in (137, -signal.SIGKILL)
    assert not left_of(info)


@pytest.mark.usefixtures("cgroups")
async def test_a_kernel_killed_at_its_memory_limit_is_restarted(
    sandbox_spec: SandboxSpec,
) -> None:
    """With autorestart (the default), an OOM-killed kernel is restarted, the restarting event
    names the limit, and the new kernel runs in a new cgroup; nothing is left afterwards."""
    spec = sandbox_spec(limits={"memory": "160m"}, limit_enforcement="cgroup")
    async with start_kernel(kernel_spec=spec, ready_timeout=READY) as km:
        first = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        async with km.events() as stream, km.client() as kc:
            with pytest.raises(KernelDiedError):
                await kc.execute("x = bytearray(400 * 1024 * 1024)", timeout=READY)
            kinds = []
            with anyio.fail_after(2 * READY):
                async for event in stream:
                    kinds.append(event)
                    if event.kind in ("restarted", "dead"):
                        break
            assert [e.kind for e in kinds] == ["restarting", "restarted"]
            assert kinds[0].limit == "memory"
            result = await kc.execute("print(6 * 7)", timeout=READY)
            assert result.stdout == "42\n"
        second = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        assert second["sandbox"]["folder"] == first["sandbox"]["folder"]  # its home is kept
        assert not set(second["sandbox"]["cgroups"]) & set(first["sandbox"]["cgroups"])
        assert not any(Path(p).exists() for p in first["sandbox"]["cgroups"])
    assert not left_of(second)


async def test_cpu_time_past_the_limit_is_reported(sandbox_spec: SandboxSpec) -> None:
    """A kernel that spins past its cpu_time limit gets SIGXCPU, and the dead event names
    cpu_time."""
    spec = sandbox_spec(limits={"cpu_time": 3})
    async with start_kernel(kernel_spec=spec, ready_timeout=READY, autorestart=False) as km:
        async with km.events() as stream, km.client() as kc:
            with pytest.raises(KernelDiedError):
                await kc.execute("while True: pass", timeout=READY)
            with anyio.fail_after(READY):
                async for event in stream:
                    if event.kind == "dead":
                        break
    assert event.limit == "cpu_time"
    assert event.exit_status in (128 + signal.SIGXCPU, -signal.SIGXCPU)


async def test_execute_interrupt_restart_shutdown(sandbox_spec: SandboxSpec) -> None:
    """A sandboxed kernel executes, is interrupted (SIGINT reaches it through bwrap's
    process group), restarts with its home kept, and shuts down leaving nothing."""
    async with start_kernel(kernel_spec=sandbox_spec(), ready_timeout=READY) as km:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        async with km.client() as kc:
            await kc.execute("open('kept', 'w').write('yes')", timeout=READY)
            started = anyio.Event()

            def hook(msg: Any) -> None:
                if "started" in msg.content.get("text", ""):
                    started.set()

            results = []
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    code = "print('started', flush=True)\nimport time\ntime.sleep(60)"
                    results.append(await kc.execute(code, timeout=READY, output_hook=hook))

                tg.start_soon(run)
                with anyio.fail_after(READY):
                    await started.wait()
                await km.interrupt_kernel()
            assert results[0].error["ename"] == "KeyboardInterrupt"
            await km.restart_kernel()
            result = await kc.execute("print(open('kept').read())", timeout=READY)
            assert result.stdout == "yes\n"
    assert not left_of(info)


async def test_the_kernel_outlives_the_thread_that_started_it(sandbox_spec: SandboxSpec) -> None:
    """A sandboxed kernel still runs after the thread that started it has retired: trio starts
    processes from worker threads, which exit after 10 idle seconds, and bwrap's
    --die-with-parent follows that thread, so it is not used there."""
    spec = sandbox_spec()
    spec = type(spec)(
        **{**spec.__dict__, "argv": [sys.executable, "-c", "import time; time.sleep(600)"]}
    )
    async with SandboxProvisioner(kernel_spec=spec) as provisioner:
        kw = await provisioner.pre_launch()
        await provisioner.launch_kernel(kw.pop("cmd"), **kw)
        await anyio.sleep(12)  # nothing else here uses a thread meanwhile
        assert await provisioner.poll() is None


@pytest.mark.usefixtures("cgroups", "fresh_guardian")
async def test_start_and_shutdown_never_block_the_event_loop(sandbox_spec: SandboxSpec) -> None:
    """A sandboxed start with limits (its folder, its cgroups, the process's first guardian)
    and its shutdown (cgroups and folder removed) run no spawn nor file work on the event
    loop's thread, and never pause it long (tests/helpers/loop_watch.py)."""
    spec = sandbox_spec(limits={"memory": "512m", "pids": 64, "file_size": "10m"})
    async with watch_loop() as watch:
        await start_and_stop(spec, ready_timeout=READY)
    watch.check()


async def test_a_pool_of_sandboxed_kernels(sandbox_spec: SandboxSpec) -> None:
    """A KernelPool keeps sandboxed kernels warm and hands them out; each is confined (no
    network) and nothing is left when the pool closes."""
    infos = []
    async with KernelPool(kernel_spec=sandbox_spec(), size=1, ready_timeout=READY) as pool:
        for _ in range(2):
            async with pool.take() as km:
                infos.append(await km.provisioner.get_provisioner_info())  # type: ignore[union-attr]
                found = await run_json(
                    km, "import json, socket\nprint(json.dumps(socket.if_nameindex()))"
                )
                assert [name for _index, name in found] == ["lo"]
    assert infos[0]["sandbox"]["folder"] != infos[1]["sandbox"]["folder"]
    for info in infos:
        assert not left_of(info)


async def test_an_idle_sandboxed_kernel_is_culled(sandbox_spec: SandboxSpec) -> None:
    """A KernelNursery culls an idle sandboxed kernel as any other, and nothing of its
    sandbox is left."""
    async with KernelNursery(cull_idle_timeout=1) as nursery:
        km = await nursery.start_kernel(kernel_spec=sandbox_spec(), ready_timeout=READY)
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        async with km.events() as events:
            with anyio.fail_after(READY):
                kinds = [event.kind async for event in events]
    assert kinds[-2:] == ["culling", "shutdown"]
    assert not left_of(info)


async def test_opened_up_deliberately(sandbox_spec: SandboxSpec, tmp_path: Path) -> None:
    """Each confinement opens where configured: the host's network (a tcp kernel that reaches
    the test's port), an extra read-only folder, a writable one, the host's pid namespace."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("given")
    out = tmp_path / "out"
    out.mkdir()
    spec = sandbox_spec(
        network="host",
        transport="tcp",
        read_only=[f"{shared}:/data"],
        writable=[str(out)],
        share_namespaces=["pid"],
    )
    code = (
        "import json, os, socket\n"
        "socket.create_connection(('127.0.0.1', PORT), timeout=5).close()\n"
        f"open({str(out / 'written')!r}, 'w').write('out')\n"
        f"print(json.dumps([open('/data/data').read(), {os.getpid()} in "
        "[int(p) for p in os.listdir('/proc') if p.isdigit()]]))"
    )
    with tcp_server() as port:
        async with start_kernel(kernel_spec=spec, ready_timeout=READY, transport="tcp") as km:
            assert km.connection_info["transport"] == "tcp"
            found = await run_json(km, f"PORT = {port}\n" + code)
    assert found == ["given", True]
    assert (out / "written").read_text() == "out"


@pytest.mark.usefixtures("cgroups")
async def test_a_failed_launch_leaves_nothing(
    sandbox_spec: SandboxSpec, jupyter_dirs: dict[str, Path]
) -> None:
    """A kernel program the sandbox cannot run (its folder is not mounted) dies at start, and
    a missing bwrap is a LaunchError; neither leaves a folder or a cgroup."""
    spec = sandbox_spec(limits={"pids": 50})
    spec = type(spec)(**{**spec.__dict__, "argv": [str(jupyter_dirs["runtime"]), "x"]})
    with pytest.raises(KernelDiedError):
        async with start_kernel(kernel_spec=spec, ready_timeout=READY, autorestart=False):
            pass
    with pytest.raises(LaunchError, match="'/nonexistent/bwrap' not found"):
        async with start_kernel(kernel_spec=sandbox_spec(bwrap="/nonexistent/bwrap")):
            pass


@pytest.mark.usefixtures("cgroups")
async def test_a_cancelled_start_leaves_nothing(sandbox_spec: SandboxSpec) -> None:
    """A start cancelled while the kernel starts leaves no process, folder or cgroup (the
    runtime directory is checked by the fixtures)."""
    spec = sandbox_spec(limits={"pids": 50})
    with anyio.move_on_after(0.3):
        async with start_kernel(kernel_spec=spec, ready_timeout=READY):
            pytest.fail("the kernel cannot be ready this soon")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"limits": {"memroy": "1g"}}, r"unknown limit 'memroy'"),
        ({"limits": {"memory": "lots"}}, r"limits\['memory'\] must be a size in bytes"),
        ({"read_only": ["relative/path"]}, r"read_only entry 'relative/path': give an absolute"),
        ({"writable": ["/nonexistent/x"]}, r"writable entry '/nonexistent/x': /nonexistent/x does"),
        ({"work_dir": "/nonexistent/x"}, r"work_dir '/nonexistent/x' is not a folder"),
        ({"independent": True}, r"independent is not supported"),
        (
            {"limits": {"pids": 10}, "limit_enforcement": "rlimit"},
            r"cannot enforce pids here: it needs a cgroup",
        ),
    ],
)
async def test_bad_config_is_a_one_line_error(
    sandbox_spec: SandboxSpec, config: dict[str, Any], message: str
) -> None:
    """A bad setting is a one-line ProvisionerConfigError naming it, and leaves nothing."""
    with pytest.raises(ProvisionerConfigError, match=message) as caught:
        async with start_kernel(kernel_spec=sandbox_spec(**config)):
            pass
    assert "\n" not in str(caught.value)


async def test_rlimits_when_asked(sandbox_spec: SandboxSpec) -> None:
    """limit_enforcement 'rlimit' puts memory in an address-space rlimit (an allocation past it
    fails, the kernel lives), and say so in the info."""
    spec = sandbox_spec(limits={"memory": "1g", "open_files": 200}, limit_enforcement="rlimit")
    async with start_kernel(kernel_spec=spec, ready_timeout=READY) as km:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
        assert info["sandbox"]["cgroups"] == []
        assert info["sandbox"]["limits"]["memory"]["enforced"].startswith("rlimit AS")
        async with km.client() as kc:
            result = await kc.execute("x = bytearray(2 * 1024**3)", timeout=READY)
            assert result.error["ename"] == "MemoryError", result.error
            result = await kc.execute(
                "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))",
                timeout=READY,
            )
            assert result.stdout == "(200, 200)\n"


async def test_limits_not_enforceable_are_said_so(
    sandbox_spec: SandboxSpec, caplog: pytest.LogCaptureFixture
) -> None:
    """With require_limits off, a limit that cannot be enforced (pids and cpus without a
    cgroup) does not stop the launch: the log line is a warning saying so, and the info too."""
    spec = sandbox_spec(
        limits={"pids": 30, "cpus": 0.5}, limit_enforcement="rlimit", require_limits=False
    )
    async with start_kernel(kernel_spec=spec, ready_timeout=READY) as km:
        info = await km.provisioner.get_provisioner_info()  # type: ignore[union-attr]
    limits = info["sandbox"]["limits"]
    assert limits == {
        "pids": {"value": 30, "enforced": "not enforced"},
        "cpus": {"value": 0.5, "enforced": "not enforced"},
    }
    [line] = [r for r in caplog.records if "is sandboxed" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert "pids 30 processes (not enforced)" in line.getMessage()


def test_the_entry_point_names_it() -> None:
    """The provisioner is registered as 'sandbox'."""
    from importlib.metadata import entry_points

    [ep] = entry_points(group="kernel_nursery.provisioners", name="sandbox")
    assert ep.load() is SandboxProvisioner
    assert sys.platform.startswith("linux")


#: A managing program: starts a sandboxed kernel, prints what the test needs, then waits to be
#: killed.
MANAGER = r"""
import json, subprocess, sys, anyio
from kernel_nursery import KernelSpec, start_kernel
from kernel_nursery.provisioning import _guardian

async def main():
    spec = KernelSpec(**json.loads(sys.argv[1]))
    kernel_output = {"stdout": subprocess.DEVNULL}  # this program's stdout is for the test
    async with start_kernel(kernel_spec=spec, ready_timeout=60, **kernel_output) as km:
        info = await km.provisioner.get_provisioner_info()
        info["guardian"] = _guardian.guardian_pid()
        print(json.dumps(info), flush=True)
        await anyio.sleep_forever()

anyio.run(main, backend=sys.argv[2])
"""


@pytest.mark.usefixtures("cgroups")
async def test_a_killed_manager_leaves_nothing(
    sandbox_spec: SandboxSpec, anyio_backend: str
) -> None:
    """SIGKILL of the managing process: its guardian kills the sandboxed kernel, removes its
    cgroup and its folder (with what the kernel wrote) and its connection file."""
    spec = sandbox_spec(limits={"memory": "256m", "pids": 50})
    fields = {k: v for k, v in spec.__dict__.items() if k != "resource_dir"}
    argv = [sys.executable, "-c", MANAGER, json.dumps(fields), anyio_backend]
    process = await anyio.open_process(argv, stdout=-1, stderr=None, start_new_session=True)
    async with process:
        try:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(2 * READY):
                async for chunk in process.stdout:
                    line += chunk
                    if b"\n" in line:
                        break
            info = json.loads(line)
        finally:
            process.send_signal(signal.SIGKILL)
            with anyio.CancelScope(shield=True):
                await process.wait()
    assert len(info["sandbox"]["cgroups"]) == 2
    assert Path(info["sandbox"]["folder"], "home").is_dir()
    await gone(info["guardian"])  # it exits once it has cleaned up
    assert not is_running(info["pid"])
    assert not left_of(info)
