"""kernel-nursery against jupyter_client, measured in one run on one machine.

    nox -s bench-3.11                # or: python benchmarks/bench.py --reps 5
    python benchmarks/bench.py --render-only   # the page again from results.json alone

For every scenario, a fresh worker process per implementation (kernel-nursery on asyncio,
kernel-nursery on trio, jupyter_client) measures REPS repetitions; this driver reports the
median and the interquartile range, and the ratio to jupyter_client. Results go to
docs/benchmarks/ (results.json, results.md, results.svg), which the docs include.

Scenarios:
  floor        bare anyio.open_process of a trivial process (the physical floor of a launch)
  launch       provisioner creation, pre_launch (ports, connection file) and launch_kernel of a
               trivial process, until it returns (jupyter_client: as AsyncKernelManager does)
  kill         SIGKILL to the exit being detected (wait() returning)
  ipykernel    start to ready, graceful shutdown, shutdown(now=True), restart to ready; and,
               in each worker alongside, the raw floors (bare subprocess and blocking pyzmq):
               floor_start_to_ready (spawn to a kernel_info reply, iopub delivering) and
               floor_graceful_shutdown (shutdown_request to the kernel's exit), with each
               repetition's distance to them (*_over_floor)
  many-N       N minimal kernels started (to ready) and shut down concurrently: wall time,
               peak RSS and open fds of the managing process
  idle         CPU time and context switches of the managing process over 10 s, 20 idle kernels
               (each implementation's supervision on: our supervisor, jupyter_client's restarter)
  scale-N      N minimal kernels (300 by default, --scale) in one process under a soft limit
               of 1,024 open files: wall time to start them all, to stop them all, failed
               starts, open fds and peak RSS of the managing process, and its CPU time over
               10 s of idling (supervision on, as in idle); --scale-reps workers each, each
               bounded in time (--scale-timeout): a run that does not complete (out of time,
               or crashed) is counted (incomplete_runs), its kernels killed, and the cells of
               an implementation none of whose runs completed say why
  forkserver-N ipykernels forked from a warm template against the same spec spawned
               (benchmarks/forkserver_bench.py): start to ready one at a time, the launch
               alone, the first execute (cold and from a pool), N up at once (--forkserver,
               20 by default), proportional set size per idle kernel
  ssh, ssh-floor  remote kernels over SSH against a throwaway sshd on loopback, with a raw
               floor (benchmarks/ssh_bench.py; skipped where sshd is not installed)
  bridge       jupyter_client's AsyncKernelManager with ipykernel, once with its own
               LocalProvisioner and once with ours through kernel_nursery.compat
               (kernel-nursery-local): start to ready, restart to ready, graceful shutdown,
               shutdown(now=True), kill() to wait() returning, and its floor: SIGKILL to the
               exit seen through a pidfd, no manager involved
  restarter    jupyter_client's AsyncIOLoopKernelManager (jupyter_server's kind) with ipykernel:
               SIGKILL to the restarted kernel answering, with its own LocalProvisioner and
               restarter (a poll every 3 s) and with kernel-nursery-local and
               kernel_nursery.compat.AsyncNurseryRestarter (the exit awaited)
  first-execute  ipykernel: from asking for a kernel to the first execute's result, cold
               (start_kernel) and from a warm KernelPool; jupyter_client has no pool, its cold
               start is in both rows; the warm take alone; and, on the warm kernel, the steady
               round trip after that first execute and the first's distance to it (paired)
  pool-100     100 takes in a row (each given back at once) from a KernelPool of 4 ipykernels:
               time of each take, and how many found no warm kernel (cold takes: each
               started one and took the first ready, that one or a refill)
  encryption   ipykernel in clear and with CurveZMQ (transport_encryption 'disabled' and
               'required'), each repetition both ways: start to ready, the round trip of a small
               execute (median of EXEC_REPS), and of one printing 1 MB; with, as the raw floor,
               a 1 MB round trip between two bare pyzmq sockets on loopback, each way
  sandbox      ipykernel in the sandbox provisioner (bubblewrap, no network, ipc) against a
               local one: start to ready, each both ways; and the execute round trip (as in
               execute, collected) over tcp and ipc to a local kernel and over ipc to a
               sandboxed one (skipped where bwrap is not installed; ours only)
  execute      one execute round trip on one ipykernel (reply and idle status, outputs
               collected), the mean of EXECUTE_ROUNDS per sample: ours collected (execute) and
               streamed (execute_stream), jupyter_client's execute_interactive, and a floor:
               blocking pyzmq with the same signing and decoding (Session), no event loop;
               collect_cpu is the CPU time the client's process spends per round trip
               (all its threads), which a busy machine disturbs less than wall time
  busy-shutdown  a graceful shutdown_kernel() of an ipykernel busy in time.sleep(100), from
               the call to its return (a busy kernel runs a shutdown request only once its
               code is over: each manager interrupts it first)

The minimal kernel is tests/helpers/fake_kernel.py (stdlib + pyzmq), the same for everyone.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import platform
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKE_KERNEL = str(ROOT / "tests" / "helpers" / "fake_kernel.py")
TRIVIAL = [sys.executable, "-c", "import time; time.sleep(600)", "{connection_file}"]
IMPLS = ["ours-asyncio", "ours-trio", "jupyter_client", "jupyter_client+kernel-nursery-local"]
#: The implementation that is jupyter_client's manager with our provisioner (bridge rows only).
BRIDGED = IMPLS[3]
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
IDLE_SECONDS = 10.0
IDLE_KERNELS = 20
#: Idle time before the idle window opens: trio starts processes from worker threads that retire
#: after 10 s without work, a one-off that is start-up's cost, not supervision's.
IDLE_SETTLE = 12.0
#: Executes per repetition of the encryption scenario (the median is kept).
EXEC_REPS = 30
#: Code of the execute scenario (one stream output), round trips per sample, and warm-up ones.
EXECUTE_CODE = "print(1)"
EXECUTE_ROUNDS = 200
EXECUTE_WARMUP = 50
#: Executes after a warm pool's first, whose median is that kernel's steady round trip.
WARM_STEADY = 10
#: The scale scenario: its soft limit on open files (that of many desktops, containers and CI
#: runners), and its idle window.
SCALE_NOFILE = 1024
SCALE_IDLE = 10.0
#: Where the driver tells a worker its time bound (--scale-timeout), in seconds.
SCALE_TIMEOUT_ENV = "KN_BENCH_SCALE_TIMEOUT"
SCALE_KEYS = ("start", "stop", "failed", "fds", "rss_mb", "idle_cpu_s")


# ====================================================================== workers


def zmq_round_trip(curve: bool, size: int = 1_000_000, n: int = 10) -> float:
    """Median seconds for *size* bytes to go and come back between two bare pyzmq sockets
    on loopback, in clear or with CurveZMQ: the floor under any encrypted kernel traffic."""
    import zmq

    ctx = zmq.Context.instance()
    server, client = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    if curve:
        public, secret = zmq.curve_keypair()
        server.curve_secretkey, server.curve_publickey, server.curve_server = secret, public, True
        client.curve_secretkey, client.curve_publickey = secret, public
        client.curve_serverkey = public
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client.connect(f"tcp://127.0.0.1:{port}")
    payload = b"x" * size
    times = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        client.send(payload)
        server.send(server.recv())
        client.recv()
        times.append(time.perf_counter() - t0)
    server.close(linger=0)
    client.close(linger=0)
    return statistics.median(times[1:])  # the first includes the connection


def rusage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw + r.ru_nivcsw


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError as exc:  # no descriptor left to list them with: all are in use
        if exc.errno != errno.EMFILE:
            raise
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_floors(out: dict[str, list[float]]) -> None:
    """Measure the ipykernel floors once (see :func:`ipykernel_floor`) and add them to *out*,
    with this repetition's distance to them: the same conditions, in the same worker."""
    ready, graceful = ipykernel_floor()
    out.setdefault("floor_start_to_ready", []).append(ready)
    out.setdefault("floor_graceful_shutdown", []).append(graceful)
    out.setdefault("start_over_floor", []).append(out["start_to_ready"][-1] - ready)
    out.setdefault("graceful_over_floor", []).append(out["graceful_shutdown"][-1] - graceful)


def scale_bound() -> float:
    return float(os.environ.get(SCALE_TIMEOUT_ENV, "120"))


def ipykernel_floor() -> tuple[float, float]:
    """The raw floors of an ipykernel's start and graceful shutdown: no manager, no event loop,
    a bare subprocess and blocking pyzmq sockets, signed by the same Session.

    Ready: from choosing ports (and writing the connection file) to a ``kernel_info`` reply on
    shell with iopub delivering (a message has arrived on a subscribed iopub socket), asking
    again every 200 ms while it does not. Graceful: from sending ``shutdown_request`` on control
    (its first use, as a manager's) to the kernel's exit, seen through a pidfd.
    """
    import socket

    import zmq

    from kernel_nursery.wire import Session

    holders = [socket.socket() for _ in range(5)]
    tmp = tempfile.mkdtemp(prefix="kn-floor-")
    path = Path(tmp) / "kernel.json"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sockets: list[zmq.Socket[bytes]] = []
    proc = None
    try:
        t0 = time.perf_counter()
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
        names = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        ports = {name: h.getsockname()[1] for name, h in zip(names, holders, strict=True)}
        for holder in holders:
            holder.close()
        key = os.urandom(16).hex()
        info = {**ports, "ip": "127.0.0.1", "transport": "tcp", "key": key}
        info |= {"signature_scheme": "hmac-sha256", "kernel_name": "python3"}
        path.write_text(json.dumps(info))

        def connect(kind: int, port: str) -> zmq.Socket[bytes]:
            sock = ctx.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 10)  # as our clients: the kernel binds later
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"tcp://127.0.0.1:{info[port]}")
            sockets.append(sock)
            return sock

        shell, iopub = connect(zmq.DEALER, "shell_port"), connect(zmq.SUB, "iopub_port")
        control = connect(zmq.DEALER, "control_port")
        argv = [a.replace("{connection_file}", str(path)) for a in IPYKERNEL]
        proc = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
        session = Session(key=key, signature_scheme="hmac-sha256")
        poller = zmq.Poller()
        poller.register(shell, zmq.POLLIN)
        poller.register(iopub, zmq.POLLIN)
        replied = delivering = False
        give_up = time.perf_counter() + 60
        while not (replied and delivering):
            if time.perf_counter() > give_up or proc.poll() is not None:
                raise RuntimeError(f"the floor's ipykernel did not answer (status {proc.poll()})")
            # Asked again while iopub's subscription has not reached the kernel (its status
            # messages for the first request go nowhere), as every client must.
            shell.send_multipart(session.serialize(session.new_message("kernel_info_request")))
            deadline = time.perf_counter() + 0.2
            while not (replied and delivering) and time.perf_counter() < deadline:
                remaining = max(deadline - time.perf_counter(), 0)
                for sock, _ in poller.poll(remaining * 1000):
                    sock.recv_multipart()
                    replied, delivering = replied or sock is shell, delivering or sock is iopub
        ready = time.perf_counter() - t0
        time.sleep(0.2)  # as settled as a manager's kernel when it is asked to shut down
        pidfd = os.pidfd_open(proc.pid)
        try:
            t0 = time.perf_counter()
            control.send_multipart(
                session.serialize(session.new_message("shutdown_request", {"restart": False}))
            )
            select.select([pidfd], [], [])
            graceful = time.perf_counter() - t0
        finally:
            os.close(pidfd)
        return ready, graceful
    finally:
        for sock in sockets:
            sock.close()
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its group: nothing of it outlives this
            proc.wait()
        path.unlink(missing_ok=True)
        os.rmdir(tmp)


async def ours(scenario: str, reps: int, n: int) -> dict[str, Any]:
    import anyio

    from kernel_nursery import (
        KernelManager,
        KernelNursery,
        KernelNurseryError,
        KernelPool,
        KernelSpec,
        start_kernel,
    )
    from kernel_nursery.provisioning import KernelProvisionerFactory

    if scenario.startswith("ssh"):
        import ssh_bench

        return await ssh_bench.ours(scenario, reps)
    trivial = KernelSpec(argv=TRIVIAL, name="trivial")
    fake = KernelSpec(argv=[sys.executable, FAKE_KERNEL, "{connection_file}"], name="fake")
    out: dict[str, Any] = {}
    if scenario == "floor":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            proc = await anyio.open_process(TRIVIAL[:3], stdin=None, stdout=None, stderr=None)
            times.append(time.perf_counter() - t0)
            proc.kill()
            await proc.wait()
        out["spawn"] = times
    elif scenario in ("launch", "kill"):
        launch, kill = [], []
        factory = KernelProvisionerFactory.instance()
        for i in range(reps):
            t0 = time.perf_counter()
            p = factory.create_provisioner_instance(f"k{i}", trivial, None)
            async with p:
                kw = await p.pre_launch()  # reserves ports, writes the connection file
                await p.launch_kernel(kw.pop("cmd"), **kw)
                t1 = time.perf_counter()
                await p.kill()
                await p.wait()
                t2 = time.perf_counter()
            launch.append(t1 - t0)
            kill.append(t2 - t1)
        out = {"launch": launch} if scenario == "launch" else {"kill": kill}
    elif scenario == "forkserver":
        import forkserver_bench

        return await forkserver_bench.rows(IPYKERNEL, reps, n)
    elif scenario == "ipykernel":
        keys = ("start_to_ready", "graceful_shutdown", "now_shutdown", "restart_to_ready")
        out = {k: [] for k in keys}
        for _ in range(reps):
            async with KernelManager(kernel_name="python3") as km:
                t0 = time.perf_counter()
                await km.start_kernel()
                out["start_to_ready"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await km.restart_kernel()
                out["restart_to_ready"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await km.shutdown_kernel()
                out["graceful_shutdown"].append(time.perf_counter() - t0)
            async with KernelManager(kernel_name="python3") as km:
                await km.start_kernel()
                t0 = time.perf_counter()
                await km.shutdown_kernel(now=True)
                out["now_shutdown"].append(time.perf_counter() - t0)
            add_floors(out)
    elif scenario == "many":
        t0 = time.perf_counter()
        async with KernelNursery() as nursery:
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(lambda: nursery.start_kernel(kernel_spec=fake))
            out["fds"] = [open_fds()]
            await nursery.shutdown_all()
        out["wall"] = [time.perf_counter() - t0]
        out["rss_mb"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    elif scenario == "scale":
        failed = 0

        async def start_one(nursery: KernelNursery) -> None:
            nonlocal failed
            try:
                await nursery.start_kernel(kernel_spec=fake)
            except KernelNurseryError as exc:
                failed += 1
                print(f"start failed: {exc}", file=sys.stderr)

        with anyio.move_on_after(scale_bound()) as bound:
            t0 = time.perf_counter()
            async with KernelNursery() as nursery:
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(start_one, nursery)
                out["start"] = [time.perf_counter() - t0]
                out["failed"] = [failed]
                out["fds"] = [open_fds()]
                cpu0 = rusage()[0]
                await anyio.sleep(SCALE_IDLE)
                out["idle_cpu_s"] = [rusage()[0] - cpu0]
                t0 = time.perf_counter()
                await nursery.shutdown_all()
            out["stop"] = [time.perf_counter() - t0]
        if bound.cancelled_caught:
            return {"incomplete": [f"did not complete within {scale_bound():g} s"]}
        out["rss_mb"] = [peak_rss_mb()]
    elif scenario == "encryption":
        out = {}
        for _ in range(reps):
            for policy, tag in (("disabled", "clear"), ("required", "curve")):
                async with KernelManager(kernel_name="python3", transport_encryption=policy) as km:
                    t0 = time.perf_counter()
                    await km.start_kernel()
                    out.setdefault(f"start_to_ready_{tag}", []).append(time.perf_counter() - t0)
                    async with km.client() as kc:
                        await kc.execute("pass", timeout=60)  # the first waits for iopub

                        async def timed(code: str, client: Any = kc) -> float:
                            t0 = time.perf_counter()
                            await client.execute(code, timeout=60)
                            return time.perf_counter() - t0

                        small = [await timed("pass") for _ in range(EXEC_REPS)]
                        out.setdefault(f"execute_{tag}", []).append(statistics.median(small))
                        big = [await timed("print('x' * 1_000_000)") for _ in range(5)]
                        out.setdefault(f"output_1mb_{tag}", []).append(statistics.median(big))
                    await km.shutdown_kernel()
            out.setdefault("zmq_1mb_clear", []).append(zmq_round_trip(False))
            out.setdefault("zmq_1mb_curve", []).append(zmq_round_trip(True))
    elif scenario == "execute":
        out: dict[str, list[float]] = {
            "collect": [],
            "collect_cpu": [],
            "stream": [],
            "stream_cpu": [],
            "floor_pyzmq": [],
        }
        async with KernelManager(kernel_name="python3") as km:
            await km.start_kernel()
            async with km.client() as kc:
                for _ in range(EXECUTE_WARMUP):
                    await kc.execute(EXECUTE_CODE)
                for _ in range(reps):
                    t0, cpu0 = time.perf_counter(), rusage()[0]
                    for _ in range(EXECUTE_ROUNDS):
                        result = await kc.execute(EXECUTE_CODE)
                    out["collect"].append((time.perf_counter() - t0) / EXECUTE_ROUNDS)
                    out["collect_cpu"].append((rusage()[0] - cpu0) / EXECUTE_ROUNDS)
                    assert result.stdout == "1\n", result
                    t0, cpu0 = time.perf_counter(), rusage()[0]
                    for _ in range(EXECUTE_ROUNDS):
                        async with kc.execute_stream(EXECUTE_CODE) as stream:
                            async for _ in stream:
                                pass
                    out["stream"].append((time.perf_counter() - t0) / EXECUTE_ROUNDS)
                    out["stream_cpu"].append((rusage()[0] - cpu0) / EXECUTE_ROUNDS)
                out["floor_pyzmq"] = execute_floor(dict(km.connection_info), reps)
    elif scenario == "idle":
        async with KernelNursery() as nursery:
            async with anyio.create_task_group() as tg:
                for _ in range(IDLE_KERNELS):
                    tg.start_soon(lambda: nursery.start_kernel(kernel_spec=fake))
            await anyio.sleep(IDLE_SETTLE)
            cpu0, sw0 = rusage()
            await anyio.sleep(IDLE_SECONDS)
            cpu1, sw1 = rusage()
        out = {"cpu_s": [cpu1 - cpu0], "switches": [sw1 - sw0]}
    elif scenario == "first-execute":
        out = {"cold_start": [], "warm_pool": [], "warm_take": []}
        for _ in range(reps):
            t0 = time.perf_counter()
            async with start_kernel("python3") as km, km.client() as kc:
                assert (await kc.execute("1 + 1", timeout=60)).status == "ok"
                out["cold_start"].append(time.perf_counter() - t0)
        out.update(await warm_first_execute(reps))
    elif scenario == "sandbox":
        out = await sandbox_rows(reps)
    elif scenario == "pool":
        takes = []
        async with KernelPool("python3", size=4) as pool:
            await pool.wait_warm()
            for _ in range(n):
                t0 = time.perf_counter()
                async with pool.take():
                    takes.append(time.perf_counter() - t0)
            status = pool.status
        out = {"take": takes, "cold_takes": [status.cold_takes]}
    elif scenario == "busy-shutdown":
        out = {"busy_shutdown": await ours_busy_shutdown(reps)}
    return out


#: What the busy-shutdown scenario's kernel runs: a line saying it has begun, then a long sleep.
BUSY_CODE = "print('busy', flush=True); import time; time.sleep(100)"


async def ours_busy_shutdown(reps: int) -> list[float]:
    """shutdown_kernel() of an ipykernel that runs BUSY_CODE, from the call to its return."""
    from kernel_nursery import KernelManager

    times = []
    for _ in range(reps):
        async with KernelManager(kernel_name="python3") as km:
            await km.start_kernel()
            async with km.client() as kc, kc.execute_stream(BUSY_CODE) as outputs:
                async for _ in outputs:
                    break  # its first output: the kernel is busy in the sleep
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            times.append(time.perf_counter() - t0)
    return times


async def theirs_busy_shutdown(reps: int) -> list[float]:
    """jupyter_client's shutdown_kernel() of an ipykernel that runs BUSY_CODE."""
    from jupyter_client import AsyncKernelManager

    times = []
    for _ in range(reps):
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        kc.execute(BUSY_CODE)
        while (await kc.get_iopub_msg(timeout=60))["msg_type"] != "stream":
            pass  # its first output: the kernel is busy in the sleep
        kc.stop_channels()
        t0 = time.perf_counter()
        await km.shutdown_kernel()
        times.append(time.perf_counter() - t0)
    return times


async def warm_first_execute(reps: int) -> dict[str, list[float]]:
    """From a warm pool of one: the take alone, the take and a new client's first execute, and,
    on the same kernel and client right after, the steady round trip (the median of
    WARM_STEADY executes) and the first execute's distance to it, paired."""
    from kernel_nursery import KernelPool

    out: dict[str, list[float]] = {"warm_pool": [], "warm_take": [], "warm_steady": []}
    out["warm_over_steady"] = []
    async with KernelPool("python3", size=1) as pool:
        for _ in range(reps):
            await pool.wait_warm()
            t0 = time.perf_counter()
            async with pool.take() as km:
                t1 = time.perf_counter()
                async with km.client() as kc:
                    assert (await kc.execute("1 + 1", timeout=60)).status == "ok"
                    first = time.perf_counter() - t0
                    steady = []
                    for _ in range(WARM_STEADY):
                        t2 = time.perf_counter()
                        await kc.execute("1 + 1", timeout=60)
                        steady.append(time.perf_counter() - t2)
            out["warm_take"].append(t1 - t0)
            out["warm_pool"].append(first)
            out["warm_steady"].append(statistics.median(steady))
            out["warm_over_steady"].append(first - statistics.median(steady))
    return out


async def theirs(scenario: str, reps: int, n: int, *, bridged: bool = False) -> dict[str, Any]:
    import asyncio  # jupyter_client is asyncio-only

    from jupyter_client import AsyncKernelManager
    from jupyter_client.ioloop import AsyncIOLoopKernelManager

    if scenario.startswith("ssh"):
        import ssh_bench

        return await ssh_bench.theirs(scenario, reps)
    out: dict[str, Any] = {}

    async def ready(km: Any) -> Any:
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        return kc

    if scenario in ("launch", "kill"):
        launch, kill = [], []
        for _ in range(reps):
            # As its AsyncKernelManager does it: provisioner, ports, connection file, launch.
            km = AsyncKernelManager(kernel_name="trivial")
            t0 = time.perf_counter()
            cmd, kw = await km._async_pre_start_kernel()
            await km.provisioner.launch_kernel(cmd, **kw)
            t1 = time.perf_counter()
            p = km.provisioner
            await p.kill()
            await p.wait()
            t2 = time.perf_counter()
            await p.cleanup()
            km.cleanup_connection_file()
            launch.append(t1 - t0)
            kill.append(t2 - t1)
        out = {"launch": launch} if scenario == "launch" else {"kill": kill}
    elif scenario == "ipykernel":
        keys = ("start_to_ready", "graceful_shutdown", "now_shutdown", "restart_to_ready")
        out = {k: [] for k in keys}
        for _ in range(reps):
            km = AsyncKernelManager(kernel_name="python3")
            t0 = time.perf_counter()
            await km.start_kernel()
            kc = await ready(km)
            out["start_to_ready"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await km.restart_kernel()
            await kc.wait_for_ready(timeout=60)
            out["restart_to_ready"].append(time.perf_counter() - t0)
            kc.stop_channels()
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            out["graceful_shutdown"].append(time.perf_counter() - t0)
            km = AsyncKernelManager(kernel_name="python3")
            await km.start_kernel()
            kc = await ready(km)
            kc.stop_channels()
            t0 = time.perf_counter()
            await km.shutdown_kernel(now=True)
            out["now_shutdown"].append(time.perf_counter() - t0)
            add_floors(out)
    elif scenario == "bridge":
        # The same kernel command either way; only the kernel spec's provisioner differs.
        name = "ipy-nursery" if bridged else "ipy-jupyter"
        keys = (
            "start_to_ready",
            "restart_to_ready",
            "graceful_shutdown",
            "now_shutdown",
            "kill",
            "kill_floor",
        )
        out = {k: [] for k in keys}
        for _ in range(reps):
            km = AsyncKernelManager(kernel_name=name)
            t0 = time.perf_counter()
            await km.start_kernel()
            kc = await ready(km)
            out["start_to_ready"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await km.restart_kernel()
            await kc.wait_for_ready(timeout=60)
            out["restart_to_ready"].append(time.perf_counter() - t0)
            kc.stop_channels()
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            out["graceful_shutdown"].append(time.perf_counter() - t0)
            km = AsyncKernelManager(kernel_name=name)
            await km.start_kernel()
            (await ready(km)).stop_channels()
            t0 = time.perf_counter()
            await km.shutdown_kernel(now=True)
            out["now_shutdown"].append(time.perf_counter() - t0)
            km = AsyncKernelManager(kernel_name=name)
            await km.start_kernel()
            (await ready(km)).stop_channels()
            p = km.provisioner
            t0 = time.perf_counter()
            await p.kill()
            await p.wait()
            out["kill"].append(time.perf_counter() - t0)
            await km.shutdown_kernel(now=True)
            # The floor: SIGKILL to the kernel's group until its exit, seen through a pidfd
            # (blocking, no manager, no reaping), for the same kernel started the same way.
            km = AsyncKernelManager(kernel_name=name)
            await km.start_kernel()
            (await ready(km)).stop_channels()
            pid = km.provisioner.pid
            pidfd = os.pidfd_open(pid)
            t0 = time.perf_counter()
            os.killpg(pid, signal.SIGKILL)
            select.select([pidfd], [], [])
            out["kill_floor"].append(time.perf_counter() - t0)
            os.close(pidfd)
            await km.shutdown_kernel(now=True)
    elif scenario == "restarter":
        out = {"kill_to_ready": await restarter_rows(reps, bridged=bridged, ready=ready)}
    elif scenario == "many":
        t0 = time.perf_counter()
        kms = [AsyncKernelManager(kernel_name="fake") for _ in range(n)]

        async def start(km: Any) -> None:
            await km.start_kernel()
            (await ready(km)).stop_channels()

        await asyncio.gather(*(start(km) for km in kms))
        out["fds"] = [open_fds()]
        await asyncio.gather(*(km.shutdown_kernel() for km in kms))
        out["wall"] = [time.perf_counter() - t0]
        out["rss_mb"] = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    elif scenario == "scale":
        # As in idle, its supervision on: each manager's restarter, once the kernels are up.
        kms = [AsyncIOLoopKernelManager(kernel_name="fake") for _ in range(n)]
        failed = 0

        async def start(km: Any) -> None:
            nonlocal failed
            try:
                await km.start_kernel()
                (await ready(km)).stop_channels()
            except Exception as exc:  # a failed start is counted, as ours are
                failed += 1
                print(f"start failed: {exc!r}", file=sys.stderr)

        async def stop(km: Any) -> None:
            try:
                await km.shutdown_kernel()
            except Exception as exc:
                print(f"stop failed: {exc!r}", file=sys.stderr)

        try:
            async with asyncio.timeout(scale_bound()):
                t0 = time.perf_counter()
                await asyncio.gather(*(start(km) for km in kms))
                out["start"] = [time.perf_counter() - t0]
                out["failed"] = [failed]
                out["fds"] = [open_fds()]
                for km in kms:
                    if km.has_kernel:
                        km.start_restarter()
                cpu0 = rusage()[0]
                await asyncio.sleep(SCALE_IDLE)
                out["idle_cpu_s"] = [rusage()[0] - cpu0]
                t0 = time.perf_counter()
                for km in kms:
                    km.stop_restarter()
                # Failed starts may have left a kernel running: stopped too.
                await asyncio.gather(*(stop(km) for km in kms if km.has_kernel))
                out["stop"] = [time.perf_counter() - t0]
        except TimeoutError:
            return {"incomplete": [f"did not complete within {scale_bound():g} s"]}
        finally:
            for km in kms:  # what is left, gone; the driver sweeps up any it lost track of
                process = getattr(km.provisioner, "process", None)
                # Only a child not yet reaped: its pid (and group) cannot name another's.
                if process is not None and process.poll() is None:
                    with contextlib.suppress(OSError):
                        os.killpg(process.pid, signal.SIGKILL)
        out["rss_mb"] = [peak_rss_mb()]
    elif scenario == "encryption":
        out = {}
        for _ in range(reps):
            for policy, tag in (("disabled", "clear"), ("required", "curve")):
                km = AsyncKernelManager(kernel_name="python3", transport_encryption=policy)
                t0 = time.perf_counter()
                await km.start_kernel()
                kc = await ready(km)
                out.setdefault(f"start_to_ready_{tag}", []).append(time.perf_counter() - t0)
                await kc.execute_interactive("pass", timeout=60)

                async def timed(code: str, client: Any = kc) -> float:
                    t0 = time.perf_counter()
                    await client.execute_interactive(code, timeout=60, output_hook=lambda m: None)
                    return time.perf_counter() - t0

                small = [await timed("pass") for _ in range(EXEC_REPS)]
                out.setdefault(f"execute_{tag}", []).append(statistics.median(small))
                big = [await timed("print('x' * 1_000_000)") for _ in range(5)]
                out.setdefault(f"output_1mb_{tag}", []).append(statistics.median(big))
                kc.stop_channels()
                await km.shutdown_kernel()
    elif scenario == "execute":
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = await ready(km)
        outputs: list[Any] = []
        for _ in range(EXECUTE_WARMUP):
            await kc.execute_interactive(EXECUTE_CODE, output_hook=outputs.append, timeout=60)
        out = {"collect": [], "collect_cpu": []}
        for _ in range(reps):
            t0, cpu0 = time.perf_counter(), rusage()[0]
            for _ in range(EXECUTE_ROUNDS):
                outputs = []
                await kc.execute_interactive(EXECUTE_CODE, output_hook=outputs.append, timeout=60)
            out["collect"].append((time.perf_counter() - t0) / EXECUTE_ROUNDS)
            out["collect_cpu"].append((rusage()[0] - cpu0) / EXECUTE_ROUNDS)
            assert any(m["msg_type"] == "stream" for m in outputs), outputs
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    elif scenario == "idle":
        kms = [AsyncIOLoopKernelManager(kernel_name="fake") for _ in range(IDLE_KERNELS)]
        for km in kms:
            await km.start_kernel()
            km.start_restarter()
        await asyncio.sleep(IDLE_SETTLE)
        cpu0, sw0 = rusage()
        await asyncio.sleep(IDLE_SECONDS)
        cpu1, sw1 = rusage()
        for km in kms:
            km.stop_restarter()
        await asyncio.gather(*(km.shutdown_kernel(now=True) for km in kms))
        out = {"cpu_s": [cpu1 - cpu0], "switches": [sw1 - sw0]}
    elif scenario == "first-execute":
        cold = []
        for _ in range(reps):
            t0 = time.perf_counter()
            km = AsyncKernelManager(kernel_name="python3")
            await km.start_kernel()
            kc = await ready(km)
            # Its default output hook prints the result; ours only collects it.
            reply = await kc.execute_interactive("1 + 1", timeout=60, output_hook=lambda m: None)
            assert reply["content"]["status"] == "ok"
            cold.append(time.perf_counter() - t0)
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
        out = {"cold_start": cold, "warm_pool": cold}  # no pool: its cold start, side by side
    elif scenario == "busy-shutdown":
        out = {"busy_shutdown": await theirs_busy_shutdown(reps)}
    return out


async def sandbox_rows(reps: int) -> dict[str, list[float]]:
    """The sandbox scenario: starts to ready, local and sandboxed, alternating; then execute
    round trips (the mean of EXECUTE_ROUNDS per sample) local over tcp and ipc, sandboxed
    over ipc."""
    from kernel_nursery import KernelManager, KernelSpec

    local = KernelSpec(argv=IPYKERNEL, name="local", language="python")
    metadata = {"kernel_provisioner": {"provisioner_name": "sandbox"}}
    sandboxed = KernelSpec(argv=IPYKERNEL, name="sandboxed", language="python", metadata=metadata)
    out: dict[str, list[float]] = {}
    for _ in range(reps):
        for tag, spec, transport in (("local", local, "tcp"), ("sandbox", sandboxed, "ipc")):
            async with KernelManager(kernel_spec=spec, transport=transport) as km:
                t0 = time.perf_counter()
                await km.start_kernel()
                out.setdefault(f"start_to_ready_{tag}", []).append(time.perf_counter() - t0)
                await km.shutdown_kernel()
    for key, spec, transport in (
        ("execute_tcp", local, "tcp"),
        ("execute_ipc", local, "ipc"),
        ("execute_ipc_sandbox", sandboxed, "ipc"),
    ):
        async with KernelManager(kernel_spec=spec, transport=transport) as km:
            await km.start_kernel()
            async with km.client() as kc:
                for _ in range(EXECUTE_WARMUP):
                    await kc.execute(EXECUTE_CODE)
                for _ in range(reps):
                    t0 = time.perf_counter()
                    for _ in range(EXECUTE_ROUNDS):
                        await kc.execute(EXECUTE_CODE)
                    out.setdefault(key, []).append((time.perf_counter() - t0) / EXECUTE_ROUNDS)
    return out


async def restarter_rows(reps: int, *, bridged: bool, ready: Any) -> list[float]:
    """jupyter_client's AsyncIOLoopKernelManager (jupyter_server's kind) with ipykernel: from
    SIGKILL to the restarted kernel answering. Stock: its LocalProvisioner and restarter, which
    polls every 3 s; bridged: kernel-nursery-local and AsyncNurseryRestarter, which awaits the
    exit."""
    import asyncio

    from jupyter_client.ioloop import AsyncIOLoopKernelManager
    from traitlets.config import Config

    config = Config()
    if bridged:
        restarter = "kernel_nursery.compat.AsyncNurseryRestarter"
        config.AsyncIOLoopKernelManager.restarter_class = restarter
    name = "ipy-nursery" if bridged else "ipy-jupyter"
    samples = []
    for _ in range(reps):
        km = AsyncIOLoopKernelManager(kernel_name=name, config=config)
        await km.start_kernel()
        (await ready(km)).stop_channels()
        restarted = asyncio.Event()
        km.add_restart_callback(restarted.set, "restart")
        pid = km.provisioner.pid
        t0 = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(restarted.wait(), 60)
        while km.provisioner.pid in (None, pid):  # noqa: ASYNC110 (the restart says nothing)
            await asyncio.sleep(0.001)
        kc = await ready(km)
        samples.append(time.perf_counter() - t0)
        kc.stop_channels()
        km.stop_restarter()
        await km.shutdown_kernel(now=True)
    return samples


def execute_floor(info: dict[str, Any], reps: int) -> list[float]:
    """The execute round trip over blocking pyzmq sockets: the same messages, signed and
    checked by the same Session, waited for with zmq.Poller, with no event loop at all."""
    import zmq

    from kernel_nursery.wire import Session

    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    shell, iopub = ctx.socket(zmq.DEALER), ctx.socket(zmq.SUB)
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    shell.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    iopub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
    poller = zmq.Poller()
    poller.register(shell, zmq.POLLIN)
    poller.register(iopub, zmq.POLLIN)

    def round_trip() -> None:
        msg = session.new_message(
            "execute_request",
            {
                "code": EXECUTE_CODE,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        shell.send_multipart(session.serialize(msg))
        replied = idle = False
        outputs = []
        while not (replied and idle):
            for sock, _ in poller.poll():
                got = session.deserialize(sock.recv_multipart())
                if got.parent_id != msg.msg_id:
                    continue
                if sock is shell:
                    replied = True
                elif got.msg_type == "status":
                    idle = got.content["execution_state"] == "idle"
                else:
                    outputs.append(got)
        assert outputs, "no output"

    # iopub's subscription takes a moment to reach the kernel (slow joiner): warm up until a
    # round trip completes at all, then as many again as the others get.
    poller_ready = False
    while not poller_ready:
        request = session.new_message("kernel_info_request")
        shell.send_multipart(session.serialize(request))
        poller_ready = bool(iopub.poll(200))
    for _ in range(EXECUTE_WARMUP):
        round_trip()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(EXECUTE_ROUNDS):
            round_trip()
        times.append((time.perf_counter() - t0) / EXECUTE_ROUNDS)
    shell.close(linger=0)
    iopub.close(linger=0)
    return times


def worker(impl: str, scenario: str, reps: int, n: int) -> None:
    if scenario == "scale":
        # The ordinary soft limit, for everyone, before anything opens a descriptor.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft = SCALE_NOFILE if hard == resource.RLIM_INFINITY else min(SCALE_NOFILE, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if impl.startswith("jupyter_client"):
        import asyncio

        result = asyncio.run(theirs(scenario, reps, n, bridged=impl == BRIDGED))
    else:
        import anyio

        result = anyio.run(ours, scenario, reps, n, backend=impl.split("-")[1])
    print("RESULT " + json.dumps(result), flush=True)


# ====================================================================== driver


def run_worker(
    impl: str, scenario: str, reps: int, n: int, env: dict[str, str], *, timeout: float = 900
) -> dict[str, Any]:
    # Files, not pipes: kernels inherit the worker's output, and a worker that left some
    # running (at its time bound) would keep a pipe open, and its reader waiting, until they end.
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        try:
            subprocess.run(
                [sys.executable, __file__, "--worker", impl, scenario, str(reps), str(n)],
                stdout=stdout,
                stderr=stderr,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            if scenario != "scale":
                raise
            # Killed; sweep() ends its kernels.
            return {"incomplete": [f"did not complete within {timeout:g} s"]}
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    failures = [line for line in err.splitlines() if line.startswith("start failed")]
    if failures:
        first = failures[0][:300]
        print(f"  {impl}: {len(failures)} failed starts, the first: {first}", flush=True)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    if scenario == "scale" and err.strip():
        # Out of descriptors, libzmq may abort the process (an assertion): that is a result.
        return {"incomplete": [f"crashed: {err.strip().splitlines()[-1][:120]}"]}
    raise RuntimeError(f"{impl} {scenario} failed:\n{err[-3000:]}")


def sweep(marker: str) -> int:
    """SIGKILL every process whose command line holds *marker* (this run's own temporary
    directory, in the kernels' connection file paths): kernels that a worker killed at its time
    bound left behind. Returns how many there were."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            pidfd = os.pidfd_open(int(entry.name))  # first: the pid cannot be reused under us
        except OSError:
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed += 1
        except OSError:
            pass  # gone meanwhile
        finally:
            os.close(pidfd)
    return killed


def summary(samples: list[float]) -> dict[str, float]:
    q = (
        statistics.quantiles(samples, n=4, method="inclusive")
        if len(samples) > 1
        else ([samples[0]] * 3)
    )
    return {"median": statistics.median(samples), "q1": q[0], "q3": q[2], "n": len(samples)}


def machine() -> dict[str, str]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(dist)
        except PackageNotFoundError:
            return "-"

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": platform.python_version(),
        **{
            d: version(d)
            for d in ("kernel-nursery", "jupyter_client", "ipykernel", "anyio", "trio", "pyzmq")
        },
        "date": time.strftime("%Y-%m-%d"),
    }


def measured_by(scenario: str, impl: str) -> bool:
    """Whether *impl* has rows in *scenario*."""
    import ssh_bench

    if scenario in ("floor", "ssh-floor") and impl != "ours-asyncio":
        return False
    if scenario == "pool" and impl == "jupyter_client":
        return False
    if scenario == "forkserver" and not impl.startswith("ours"):
        return False  # jupyter_client forks no kernel: forked and spawned side by side
    if scenario == "sandbox" and impl.startswith("jupyter_client"):
        return False  # a provisioner of ours: nothing of theirs to compare
    if scenario == "ssh" and impl == "jupyter_client":
        return False  # sshpyk runs a remote kernel spec: compared in ssh-ipykernel
    if scenario == "ssh-ipykernel" and impl == "jupyter_client":
        return ssh_bench.sshpyk_available()
    # The bridge rows compare jupyter_client's manager with itself, provisioners (and
    # restarters) apart.
    bridge_rows = scenario in ("bridge", "restarter")
    if (impl == BRIDGED or bridge_rows) and impl not in IMPLS[2:]:
        return False
    return not (impl == BRIDGED and not bridge_rows)


def run_scenario(
    scenario: str,
    n: int,
    args: argparse.Namespace,
    env: dict[str, str],
    tmp: str,
    results: dict[str, Any],
    loads: list[float],
) -> None:
    """Run *scenario*'s workers, one implementation after another, into *results* (and the
    load average after each worker into *loads*)."""
    for impl in IMPLS:
        if not measured_by(scenario, impl):
            continue
        reps = args.reps if scenario not in ("many", "idle", "pool", "scale") else 1
        repeats = {"many": args.reps, "scale": args.scale_reps}.get(scenario, 1)
        # A scale worker bounds itself; the driver's bound is the last resort.
        timeout = args.scale_timeout + 60 if scenario == "scale" else 900
        merged: dict[str, list[float]] = {}
        incomplete: list[str] = []  # why each run that did not complete did not
        for _ in range(repeats):
            # jupyter_client writes its connection files as temporary files: here
            # too, where sweep() finds the kernels of a worker that crashed or was
            # killed at its bound by their command lines (not for ssh: socket paths
            # must stay short).
            worker_env = env if scenario.startswith("ssh") else {**env, "TMPDIR": tmp}
            try:
                measured = run_worker(impl, scenario, reps, n, worker_env, timeout=timeout)
            except RuntimeError as exc:
                if not scenario.startswith("ssh"):
                    raise
                print(f"{scenario} {impl}: failed, left out: {exc}", flush=True)
                measured = {}
            finally:
                if sweep(tmp):
                    print(f"{scenario} {impl}: killed the kernels it left", flush=True)
            loads.append(os.getloadavg()[0])
            if "incomplete" in measured:
                incomplete.append(measured["incomplete"][0])
                print(f"{scenario} {impl}: {incomplete[-1]}", flush=True)
                continue
            for key, values in measured.items():
                merged.setdefault(key, []).extend(values)
        sized = scenario in ("many", "pool", "scale", "forkserver")
        prefix = f"{scenario}-{n}" if sized else scenario
        if scenario == "scale":
            merged["incomplete_runs"] = [len(incomplete)]
            if incomplete:
                results.setdefault("incomplete", {})[f"{prefix} {impl}"] = incomplete
            if incomplete and not merged.keys() - {"incomplete_runs"}:  # none completed
                for key in SCALE_KEYS:
                    results["metrics"].setdefault(f"{prefix}.{key}", {})[impl] = {
                        "incomplete": incomplete[-1]
                    }
        for key, values in merged.items():
            name = f"{prefix}.{key}"
            results["metrics"].setdefault(name, {})[impl] = summary(values)
            print(f"{name:32} {impl:15} median {statistics.median(values):.4g}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", nargs=4, metavar=("IMPL", "SCENARIO", "REPS", "N"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    parser.add_argument("--many", default="1,10,50")
    parser.add_argument("--scale", type=int, default=300, help="kernels of the scale scenario")
    parser.add_argument(
        "--scale-timeout",
        type=float,
        default=120.0,
        help="seconds each scale worker may take to start, idle and stop its kernels",
    )
    parser.add_argument("--scale-reps", type=int, default=3, help="workers per implementation")
    parser.add_argument(
        "--forkserver",
        type=int,
        default=20,
        help="ipykernels up at once in the forkserver scenario (forked, then spawned)",
    )
    parser.add_argument(
        "--scenarios",
        "--only",
        default="",
        help="comma-separated scenarios to run; their rows replace those in the existing "
        "results, the others are kept",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: write results.md and results.svg again from results.json",
    )
    args = parser.parse_args()
    if args.render_only:
        out = Path(args.out)
        write_outputs(json.loads((out / "results.json").read_text()), out)
        return
    if args.worker:
        impl, scenario, reps, n = args.worker
        worker(impl, scenario, int(reps), int(n))
        return

    import ssh_bench

    results: dict[str, Any] = {"machine": machine(), "metrics": {}}
    loads = [os.getloadavg()[0]]  # the 1-minute load average before and after each worker
    with tempfile.TemporaryDirectory(prefix="kn-bench-") as tmp:
        nursery = {"kernel_provisioner": {"provisioner_name": "kernel-nursery-local"}}
        for name, argv, language, metadata in (
            ("fake", [sys.executable, FAKE_KERNEL, "{connection_file}"], "fake", {}),
            ("trivial", TRIVIAL, "trivial", {}),
            ("ipy-jupyter", IPYKERNEL, "python", {}),
            ("ipy-nursery", IPYKERNEL, "python", nursery),
        ):
            folder = Path(tmp) / "kernels" / name
            folder.mkdir(parents=True)
            spec = {"argv": argv, "display_name": name, "language": language, "metadata": metadata}
            (folder / "kernel.json").write_text(json.dumps(spec))
        env = {**os.environ, "JUPYTER_PATH": tmp, "JUPYTER_RUNTIME_DIR": str(Path(tmp) / "rt")}
        env[SCALE_TIMEOUT_ENV] = str(args.scale_timeout)
        plan: list[tuple[str, str, int]] = (
            [
                ("floor", "spawn", 0),
                ("launch", "launch", 0),
                ("kill", "kill", 0),
                ("ipykernel", "", 0),
                ("execute", "", 0),
            ]
            + [("many", "", int(n)) for n in args.many.split(",")]
            + [("idle", "", 0), ("encryption", "", 0), ("bridge", "", 0), ("restarter", "", 0)]
            + [("first-execute", "", 0)]
            + [("pool", "", 100), ("scale", "", args.scale), ("busy-shutdown", "", 0)]
            + [("forkserver", "", args.forkserver)]
        )
        if ssh_bench.available():
            plan += [("ssh", "", 0), ("ssh-floor", "", 0), ("ssh-ipykernel", "", 0)]
        if shutil.which("bwrap"):
            plan.append(("sandbox", "", 0))
        if args.scenarios:
            plan = [step for step in plan if step[0] in args.scenarios.split(",")]
        for scenario, _, n in plan:
            with contextlib.ExitStack() as services:
                # Each scenario starts what it needs, so that any runs alone: the ssh ones an
                # sshd of their own (outside tmp, whose processes sweep() kills after workers).
                scenario_env = dict(env)
                if scenario.startswith("ssh"):
                    scenario_env.update(services.enter_context(ssh_bench.serving(Path(tmp))))
                run_scenario(scenario, n, args, scenario_env, tmp, results, loads)
    out = Path(args.out)
    # Other work on the machine disturbs every number: the page says how much there was.
    low, high, cores = min(loads), max(loads), os.cpu_count()
    results["load"] = {"min": low, "max": high, "cores": cores}
    if args.scenarios and (out / "results.json").exists():
        # Some scenarios re-run alone: keep the other rows, and say which rows are newer.
        previous = json.loads((out / "results.json").read_text())
        previous["metrics"].update(results["metrics"])
        previous.setdefault("incomplete", {}).update(results.get("incomplete", {}))
        when = results["machine"]["date"]
        when += f" (load average {low:.1f} to {high:.1f} on {cores} cores)"
        for scenario in args.scenarios.split(","):
            previous.setdefault("reruns", {})[scenario] = when
        results = previous
    write_outputs(results, out)


UNITS = {
    "cpu_s": ("s", 1),
    "switches": ("", 1),
    "rss_mb": ("MB", 1),
    "fds": ("", 1),
    "cold_takes": ("", 1),
    "idle_cpu_s": ("s", 1),
    "failed": ("", 1),
    "incomplete_runs": ("", 1),
    "pss_mb_forked": ("MB", 1),
    "pss_mb_spawned": ("MB", 1),
    "start_to_ready_ratio": ("", 1),
    "launch_ratio": ("", 1),
    "up_ratio": ("", 1),
    "pss_mb_ratio": ("", 1),
}


def fmt(metric: str, value: float, *, unit: bool = True) -> str:
    """*value* in the metric's unit (ms for times), with the unit unless *unit* is false."""
    key = metric.split(".")[-1]
    name, scale = UNITS.get(key, ("ms", 1000))
    number = value * scale
    text = f"{number:.3g}" if number < 1000 else f"{number:,.0f}"
    return f"{text} {name}".strip() if unit else text


#: The headline: what a user chooses on, at most 8 rows. Each: its name, our metric,
#: jupyter_client's (None: the same), the floor's (None: none), and what it means.
HEADLINE: list[tuple[str, str, str | None, str | None, str]] = [
    (
        "start a kernel, to ready",
        "ipykernel.start_to_ready",
        None,
        "ipykernel.floor_start_to_ready",
        "ipykernel until it answers; floor: Popen and blocking pyzmq, no manager",
    ),
    (
        "first execute of a kernel from a warm pool",
        "first-execute.warm_pool",
        "first-execute.cold_start",
        "first-execute.warm_steady",
        "take, new client, `1 + 1`; jupyter_client has no pool (its cold start); floor: a "
        "steady round trip on that kernel",
    ),
    (
        "one execute round trip",
        "execute.collect",
        None,
        "execute.floor_pyzmq",
        "`print(1)`, reply and idle status; floor: blocking pyzmq, no event loop",
    ),
    (
        "graceful shutdown",
        "ipykernel.graceful_shutdown",
        None,
        "ipykernel.floor_graceful_shutdown",
        "mostly ipykernel's own time to exit after it answers",
    ),
    (
        "shutdown now",
        "ipykernel.now_shutdown",
        None,
        "bridge.kill_floor",
        "`shutdown_kernel(now=True)`; floor: SIGKILL until the exit is seen, no manager",
    ),
    (
        "a kernel's death noticed",
        "kill.kill",
        None,
        None,
        "SIGKILL to `wait()` returning: awaited by us, polled every 100 ms by jupyter_client",
    ),
    (
        "supervising 20 idle kernels",
        "idle.cpu_s",
        None,
        None,
        "CPU time of the managing process over 10 s",
    ),
    (
        "300 kernels under 1,024 open files",
        "scale-300.failed",
        None,
        None,
        "failed starts of 300, in one process whose soft limit on open files is 1,024",
    ),
]

#: The details, a table per section: its title and the scenarios (row-name prefixes) in it.
SECTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("Launching and killing a trivial process", ("floor", "launch", "kill")),
    ("ipykernel: start, restart, shutdown, and their floors", ("ipykernel",)),
    ("Executing code", ("execute",)),
    ("The first execute, and warm pools", ("first-execute", "pool-100")),
    ("Many kernels, and idle ones", ("many-1", "many-10", "many-50", "idle")),
    ("300 kernels in one process", ("scale-300",)),
    ("Transport encryption (CurveZMQ)", ("encryption",)),
    ("jupyter_client's manager with our provisioner (and restarter)", ("bridge", "restarter")),
    ("Remote kernels over SSH", ("ssh", "ssh-floor", "ssh-ipykernel")),
    ("A busy kernel's shutdown", ("busy-shutdown",)),
    ("Sandboxed kernels (bubblewrap)", ("sandbox",)),
    ("Kernels forked from a warm template", ("forkserver-20",)),
]

#: Readable names of rows, by the part after the scenario (``ipykernel.start_to_ready``).
ROW_NAMES = {
    "kill_to_ready": "restarter: SIGKILL to the restarted kernel ready",
    "spawn": "spawn, bare `anyio.open_process` (the floor of a launch)",
    "launch": "launch through a provisioner",
    "kill": "SIGKILL to the exit noticed",
    "start_to_ready": "start to ready",
    "restart_to_ready": "restart to ready",
    "graceful_shutdown": "graceful shutdown",
    "now_shutdown": "shutdown now",
    "floor_start_to_ready": "floor: start to ready, no manager",
    "floor_graceful_shutdown": "floor: graceful shutdown, no manager",
    "start_over_floor": "start to ready less its floor (paired)",
    "graceful_over_floor": "graceful shutdown less its floor (paired)",
    "wall": "started and stopped together, wall time",
    "fds": "open descriptors",
    "rss_mb": "peak resident memory",
    "cpu_s": "CPU time over 10 s",
    "switches": "context switches over 10 s",
    "collect": "round trip, outputs collected (`execute`)",
    "collect_cpu": "CPU per round trip, collected",
    "stream": "round trip, outputs streamed (`execute_stream`)",
    "stream_cpu": "CPU per round trip, streamed",
    "floor_pyzmq": "floor: blocking pyzmq round trip",
    "cold_start": "cold: start, client, first execute",
    "warm_pool": "warm: take, new client, first execute",
    "warm_take": "warm: the take alone",
    "warm_steady": "warm: a steady round trip on that kernel",
    "warm_over_steady": "warm: the first execute less a steady one (paired)",
    "take": "a take (100 in a row, pool of 4)",
    "cold_takes": "takes that found no warm kernel",
    "start": "all started",
    "stop": "all stopped",
    "failed": "failed starts",
    "idle_cpu_s": "CPU while idle, 10 s",
    "incomplete_runs": "runs that did not complete",
    "kill_floor": "floor: SIGKILL to the exit seen, no manager",
    "now": "shutdown now",
    "graceful": "graceful shutdown",
    "kill_noticed": "remote SIGKILL to the exit noticed",
    "start_1st": "start to ready, the 1st kernel",
    "start_10th": "start to ready, the 10th (shared connection)",
    "start_mux": "floor: start through a control master",
    "zmq_1mb_clear": "floor: 1 MB there and back, bare pyzmq, clear",
    "zmq_1mb_curve": "floor: 1 MB there and back, bare pyzmq, CurveZMQ",
    "start_to_ready_local": "start to ready, a local kernel (tcp)",
    "start_to_ready_sandbox": "start to ready, a sandboxed kernel (ipc)",
    "execute_tcp": "round trip, a local kernel over tcp",
    "execute_ipc": "round trip, a local kernel over ipc",
    "execute_ipc_sandbox": "round trip, a sandboxed kernel over ipc",
    "busy_shutdown": "graceful shutdown of a kernel busy in `time.sleep(100)`",
}
#: Column headers of the implementations.
IMPL_NAMES = {
    "ours-asyncio": "ours, asyncio",
    "ours-trio": "ours, trio",
    "jupyter_client": "jupyter_client",
    BRIDGED: "jupyter_client + kernel-nursery-local",
}

#: Column headers of the ratios.
RATIO_NAMES = {
    "ours-asyncio": "ratio, asyncio",
    "ours-trio": "ratio, trio",
    BRIDGED: "ratio, kernel-nursery-local",
}


def row_name(metric: str) -> str:
    """A row's readable name: ``many-10.wall`` is "10 kernels: started and stopped..."."""
    scenario, _, key = metric.partition(".")
    for prefix in ("encryption",):
        if scenario == prefix:
            for tag in ("_clear", "_curve"):
                if key.endswith(tag) and not key.startswith("zmq"):
                    base = key.removesuffix(tag).replace("_", " ")
                    return f"{base}, {'in clear' if tag == '_clear' else 'CurveZMQ'}"
    name = ROW_NAMES.get(key, key.replace("_", " "))
    if scenario.startswith("many-"):
        count = scenario.split("-", 1)[1]
        return f"{count} kernel{'s' if count != '1' else ''}: {name}"
    if scenario == "idle":
        return f"20 idle kernels: {name}"
    if scenario.startswith("ssh-ipykernel"):
        return f"ipykernel: {name}"
    if scenario == "ssh" and not name.startswith("start"):
        return f"minimal kernel: {name}"
    return name


def cell(metric: str, s: dict[str, Any] | None, *, spread: bool = True) -> str:
    """One implementation's cell: its median (and interquartile range), or why there is none."""
    if s is None:
        return "—"
    if "incomplete" in s:
        return str(s["incomplete"])
    if s["n"] > 1 and spread:
        iqr = f"{fmt(metric, s['q1'], unit=False)} to {fmt(metric, s['q3'], unit=False)}"
        return f"{fmt(metric, s['median'])} ({iqr})"
    return fmt(metric, s["median"])


def ratio(results: dict[str, Any], metric: str, impl: str, base_metric: str) -> str:
    """jupyter_client's median over ours (above 1: ours is faster or cheaper), or ""."""
    metrics = results["metrics"]
    ours = metrics.get(metric, {}).get(impl, {})
    base = metrics.get(base_metric, {}).get("jupyter_client", {})
    if ours.get("median", 0) <= 0 or base.get("median", 0) <= 0:
        return ""
    # Where starts failed (scale rows), the failures' times compare with nothing.
    failed = metrics.get(metric.split(".")[0] + ".failed", {})
    if any(failed.get(i, {}).get("median", 0) for i in ("jupyter_client", impl)):
        return ""
    value = base["median"] / ours["median"]
    return f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def floor_median(results: dict[str, Any], metric: str | None) -> float | None:
    """A floor's median: the median of the medians measured in each worker."""
    by_impl = results["metrics"].get(metric or "", {})
    medians = [s["median"] for s in by_impl.values() if "median" in s]
    return statistics.median(medians) if medians else None


def headline(results: dict[str, Any]) -> list[str]:
    """The headline table: ours against jupyter_client's and the floor, what a user chooses on."""
    lines = [
        "| | ours, asyncio | ours, trio | jupyter_client | floor | what it is |",
        "|---|---|---|---|---|---|",
    ]
    metrics = results["metrics"]
    for name, ours, theirs, floor, meaning in HEADLINE:
        if ours not in metrics:
            continue
        cells = []
        for impl in IMPLS[:2]:
            text = cell(ours, metrics[ours].get(impl), spread=False)
            times = ratio(results, ours, impl, theirs or ours)
            cells.append(f"{text} (**{times}**)" if times else text)
        cells.append(
            cell(ours, metrics.get(theirs or ours, {}).get("jupyter_client"), spread=False)
        )
        low = floor_median(results, floor)
        cells.append(fmt(ours, low) if low is not None else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {meaning} |")
    return lines


def details(results: dict[str, Any]) -> list[str]:
    """Every row, a table per section; a column with nothing in it is left out."""
    metrics = results["metrics"]
    listed = {p for _, prefixes in SECTIONS for p in prefixes}
    others = tuple(sorted({m.split(".")[0] for m in metrics} - listed))
    lines: list[str] = []
    for title, prefixes in [*SECTIONS, ("Other rows", others)]:
        rows = [m for p in prefixes for m in metrics if m.split(".")[0] == p]
        if not rows:
            continue
        impls = [i for i in IMPLS if any(i in metrics[m] for m in rows)]
        with_ratio = [
            i
            for i in (*IMPLS[:2], BRIDGED)
            if i in impls and any(ratio(results, m, i, m) for m in rows if not is_floor(m))
        ]
        header = [IMPL_NAMES[i] for i in impls] + [RATIO_NAMES[i] for i in with_ratio]
        lines += ["", f"### {title}", "", "| | " + " | ".join(header) + " |"]
        lines.append("|---" * (len(header) + 1) + "|")
        for m in rows:
            cells = [cell(m, metrics[m].get(i)) for i in impls]
            cells += [("" if is_floor(m) else ratio(results, m, i, m)) or "—" for i in with_ratio]
            lines.append(f"| {row_name(m)} | " + " | ".join(cells) + " |")
    return lines


def is_floor(metric: str) -> bool:
    """Floors are measured the same way in each worker: no ratio to draw."""
    key = metric.split(".")[-1]
    return key.startswith("floor") or key.endswith("_floor") or key.startswith("zmq_")


def when_and_load(results: dict[str, Any]) -> str:
    """Where the numbers come from: one run and its load, or which scenarios came later."""
    load = results.get("load")
    python = ".".join(str(results.get("machine", {}).get("python", "3.11")).split(".")[:2])
    text = (
        f"One run of `nox -s bench-{python}`, load average {load['min']:.1f} to "
        f"{load['max']:.1f} on {load['cores']} cores during it."
        if load
        else "The load during the run was not recorded."
    )
    reruns = results.get("reruns", {})
    if reruns:
        later = "; ".join(f"`{name}` {when}" for name, when in sorted(reruns.items()))
        text += f" Some rows come from later runs of their scenarios alone: {later}."
    return text


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """results.json, then results.md (the headline, the plot, the details) and results.svg."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_page(results, out / "results.md")
    plot(results, out / "results.svg")


def write_page(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    negative = any(
        s.get("median", 0) < 0 for by_impl in results["metrics"].values() for s in by_impl.values()
    )
    lines = [
        f"Measured {m['date']} on {m['cpu'] or 'an unknown CPU'} ({m['cores']} cores), "
        f"{m['os']}, Python {m['python']}; kernel-nursery {m['kernel-nursery']}, jupyter_client "
        f"{m['jupyter_client']}, ipykernel {m['ipykernel']}, anyio {m['anyio']}, trio "
        f"{m['trio']}, pyzmq {m['pyzmq']}. {when_and_load(results)}",
        "",
        "Medians. In bold, jupyter_client's median divided by ours: above 1, ours is faster or "
        "cheaper.",
        "",
        *headline(results),
        "",
        "![Medians of the headline rows, log scale](results.svg)",
        "",
        "## Every row",
        "",
        "Median (interquartile range); a ratio is jupyter_client's median divided by ours.",
    ]
    if negative:
        lines += [
            "",
            "A median below zero is a paired difference (each repetition's time less the floor "
            "or steady time measured right after it, in the same worker) that falls within the "
            "run's noise: the share it measures is smaller than what the machine varies by.",
        ]
    lines += details(results)
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict[str, Any], path: Path) -> None:
    """The headline rows that are times, as bars: ours on each backend, jupyter_client's, the
    floor's (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = results["metrics"]
    rows = [h for h in HEADLINE if h[1] in metrics and h[1].split(".")[-1] not in UNITS]
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(rows) + 1.5))
    bars = {
        "ours, asyncio": ("#3b7dd8", lambda h: metrics[h[1]].get("ours-asyncio")),
        "ours, trio": ("#2a9d8f", lambda h: metrics[h[1]].get("ours-trio")),
        "jupyter_client": (
            "#e76f51",
            lambda h: metrics.get(h[2] or h[1], {}).get("jupyter_client"),
        ),
        "floor": ("#9a9a9a", lambda h: {"median": floor_median(results, h[3]) or 0}),
    }
    height = 0.8 / len(bars)
    for i, (label, (colour, pick)) in enumerate(bars.items()):
        ys = [j + (i - (len(bars) - 1) / 2) * height for j in range(len(rows))]
        xs = [((pick(h) or {}).get("median") or 0) * 1000 for h in rows]
        ax.barh(ys, xs, height=height, label=label, color=colour)
    ax.set_yticks(range(len(rows)), [h[0] for h in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (median, log scale; shorter is better)")
    ax.legend(loc="lower right")
    ax.set_title("kernel-nursery and jupyter_client, one machine")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
