"""The fork server's rows of benchmarks/bench.py: ipykernels forked from a warm template
against the same spec spawned, in one worker, one after the other.

- start_to_ready_{forked,spawned}: KernelManager.start_kernel to ready (kernel_info answered),
  one kernel at a time; the template is warm (started before the first measured start);
- launch_{forked,spawned}: the provisioner's pre_launch and launch_kernel, until the kernel's
  process exists (the provisioner's own share of a start; the rest is the kernel's start);
- first_execute_{forked,spawned}: a cold start_kernel to its first execute's result, and a
  take from a warm KernelPool of one to the first execute's result (pool_first_execute_*),
  whose refill is forked too;
- up_{forked,spawned}: N kernels started concurrently in a KernelNursery, until all are ready;
- pss_mb_{forked,spawned}: proportional set size per idle kernel (/proc/PID/smaps_rollup)
  after SETTLE seconds of idling, the template's own share counted in the forked one.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

#: Seconds the N kernels idle before their memory is read (imports done, pages settled).
SETTLE = 5.0


def pss_mb(pid: int) -> float:
    """The proportional set size of *pid* in MB (pages shared by k processes count 1/k)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def launch_time(spec: Any) -> float:
    """Seconds from a provisioner's creation to launch_kernel returning (then it is killed)."""
    from kernel_nursery.provisioning import KernelProvisionerFactory

    t0 = time.perf_counter()
    p = KernelProvisionerFactory.instance().create_provisioner_instance("bench", spec, None)
    async with p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        elapsed = time.perf_counter() - t0
        await p.kill()
        await p.wait()
    return elapsed


async def first_execute(spec: Any, label: str, reps: int) -> dict[str, list[float]]:
    """Cold: start_kernel to the first execute's result. Pool: a take from a warm pool of one
    (refilled between takes) to the first execute's result."""
    import anyio

    from kernel_nursery import KernelPool, start_kernel

    cold, pool_times = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        async with start_kernel(kernel_spec=spec) as km, km.client() as kc:
            assert (await kc.execute("1 + 1", timeout=60)).status == "ok"
            cold.append(time.perf_counter() - t0)
    async with KernelPool(kernel_spec=spec, size=1) as pool:
        for _ in range(reps):
            with anyio.fail_after(120):
                await pool.wait_warm()
            t0 = time.perf_counter()
            async with pool.take() as km, km.client() as kc:
                assert (await kc.execute("1 + 1", timeout=60)).status == "ok"
                pool_times.append(time.perf_counter() - t0)
    return {f"first_execute_{label}": cold, f"pool_first_execute_{label}": pool_times}


async def rows(ipykernel: list[str], reps: int, n: int) -> dict[str, list[float]]:
    import anyio

    from kernel_nursery import KernelManager, KernelNursery, KernelSpec
    from kernel_nursery.provisioning import hold_fork_templates

    spawned = KernelSpec(argv=ipykernel, name="python3", language="python")
    stanza = {"kernel_provisioner": {"provisioner_name": "forkserver"}}
    forked = KernelSpec(argv=ipykernel, name="python3", language="python", metadata=stanza)
    out: dict[str, list[float]] = {}
    async with hold_fork_templates():
        async with KernelManager(kernel_spec=forked) as km:
            await km.start_kernel()  # warms the template, which the scope keeps
            template = km.provisioner.template_pid  # type: ignore[union-attr]
        for label, spec in (("forked", forked), ("spawned", spawned)):
            for _ in range(reps):
                async with KernelManager(kernel_spec=spec) as km:
                    t0 = time.perf_counter()
                    await km.start_kernel()
                    out.setdefault(f"start_to_ready_{label}", []).append(time.perf_counter() - t0)
                out.setdefault(f"launch_{label}", []).append(await launch_time(spec))
        for label, spec in (("forked", forked), ("spawned", spawned)):
            out.update(await first_execute(spec, label, reps))
        for label, spec in (("forked", forked), ("spawned", spawned)):
            pids: list[int] = []

            async def start_one(
                nursery: Any, spec: KernelSpec = spec, pids: list[int] = pids
            ) -> None:
                km = await nursery.start_kernel(kernel_spec=spec)
                pids.append(km.provisioner.pid)

            async with KernelNursery() as nursery:
                t0 = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(start_one, nursery)
                out[f"up_{label}"] = [time.perf_counter() - t0]
                await anyio.sleep(SETTLE)  # idling: nothing to await instead
                total = sum(pss_mb(pid) for pid in pids)
                if label == "forked" and template is not None:
                    total += pss_mb(template)
                out[f"pss_mb_{label}"] = [total / n]
                await nursery.shutdown_all()
    for key in ("start_to_ready", "launch", "up", "pss_mb"):
        out[f"{key}_ratio"] = [
            statistics.median(out[f"{key}_spawned"]) / statistics.median(out[f"{key}_forked"])
        ]
    return out
