"""SlurmProvisioner against a raw floor, on a single-node Slurm cluster started for the run.

    python benchmarks/slurm_bench.py [--reps N]

Run by ``nox -s bench-3.11`` after ``bench.py`` (it needs root and Debian's ``slurm-wlm`` and
``munge``; without them it says so and writes nothing). Rows, each with a real ipykernel:

- ``submit_to_ready``: ``start_kernel()`` (submission, the queue, the node side's report, the
  kernel answering ``kernel_info``), against the floor of ``srun``-ing ipykernel by hand on a
  connection file written beforehand and waiting for the same answer (the same client);
- ``shutdown_to_gone``: ``shutdown_kernel()`` until the job is gone (srun has exited), against
  a ``shutdown_request`` sent by hand until srun exits;
- ``scancel_to_noticed``: an outside ``scancel`` until ``wait()`` returns, against the same
  ``scancel`` until the hand-run ``srun`` exits.

Paired: each repetition runs the floor and ours on both backends one after another (in an
order that turns each repetition, so that a drift of the machine's load favours none), and the
"less floor" columns are the medians of each repetition's difference to its floor. A first
repetition warms the cluster and the page cache up and is not counted. A loaded
machine hides or inflates constant costs: the page says the load average seen during the run.

Results go to ``docs/benchmarks/slurm.md`` (included in the benchmarks page) and
``docs/benchmarks/slurm.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.slurm import SlurmCluster  # noqa: E402

from kernel_nursery import (  # noqa: E402
    KernelClient,
    KernelManager,
    KernelSpec,
    SlurmProvisioner,
    write_connection_file,
)
from kernel_nursery.connection import (  # noqa: E402
    new_connection_info,
    release_connection_info,
)

IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
BINARIES = ("slurmctld", "slurmd", "munged", "srun", "scancel", "squeue", "scontrol")
ROWS = ("submit_to_ready", "shutdown_to_gone", "scancel_to_noticed")
IMPLS = ("floor", "ours-asyncio", "ours-trio")


def spec(cluster: SlurmCluster) -> KernelSpec:
    stanza = {"provisioner_name": "slurm", "config": {"slurm_conf": str(cluster.conf)}}
    return KernelSpec(
        argv=IPYKERNEL,
        name="slurm-python",
        language="python",
        metadata={"kernel_provisioner": stanza},
    )


async def ours_graceful(cluster: SlurmCluster) -> dict[str, float]:
    """One start to ready and one graceful shutdown through a KernelManager."""
    async with KernelManager(kernel_spec=spec(cluster)) as km:
        t0 = time.perf_counter()
        await km.start_kernel()
        ready = time.perf_counter() - t0
        t0 = time.perf_counter()
        await km.shutdown_kernel()
        return {"submit_to_ready": ready, "shutdown_to_gone": time.perf_counter() - t0}


async def ours_scancel(cluster: SlurmCluster) -> dict[str, float]:
    """One launch, then an outside scancel until the provisioner's wait() returns."""
    p = SlurmProvisioner(kernel_spec=spec(cluster), slurm_conf=str(cluster.conf))
    async with p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        assert p.job_id is not None
        t0 = time.perf_counter()
        await anyio.run_process(["scancel", p.job_id], env=cluster.env)
        await p.wait()
        return {"scancel_to_noticed": time.perf_counter() - t0}


async def floor(cluster: SlurmCluster, graceful: bool) -> dict[str, float]:
    """ipykernel by hand: ``srun`` it on a connection file written here, ask it kernel_info,
    then end it (a shutdown_request, or scancel)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.json"
        info = new_connection_info(transport="tcp", ip="127.0.0.1", kernel_name="")
        write_connection_file(info, path)
        argv = ["srun", "--nodes=1", "--ntasks=1", "--job-name=floor", "--"]
        argv += [a.replace("{connection_file}", str(path)) for a in IPYKERNEL]
        t0 = time.perf_counter()
        async with await anyio.open_process(
            argv, env=cluster.env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ) as process:
            async with KernelClient(info) as kc:
                await kc.wait_for_ready(timeout=60)
                ready = time.perf_counter() - t0
                t0 = time.perf_counter()
                if graceful:  # shutdown_request, then the job's end
                    await kc.shutdown(timeout=30)
                else:
                    job = cluster.queue()[0].split()[0]
                    await anyio.run_process(["scancel", job], env=cluster.env)
                await process.wait()
                gone = time.perf_counter() - t0
        release_connection_info(info)
    if graceful:
        return {"submit_to_ready": ready, "shutdown_to_gone": gone}
    return {"scancel_to_noticed": gone}


def one_repetition(cluster: SlurmCluster, rep: int) -> dict[str, dict[str, float]]:
    """The floor and ours on both backends, each once with each ending; the order turns with
    *rep*."""
    runs: dict[str, list[Callable[[], dict[str, float]]]] = {
        "floor": [
            lambda: anyio.run(floor, cluster, True),
            lambda: anyio.run(floor, cluster, False),
        ],
        **{
            f"ours-{backend}": [
                lambda b=backend: anyio.run(ours_graceful, cluster, backend=b),
                lambda b=backend: anyio.run(ours_scancel, cluster, backend=b),
            ]
            for backend in ("asyncio", "trio")
        },
    }
    order = IMPLS[rep % 3 :] + IMPLS[: rep % 3]
    measured: dict[str, dict[str, float]] = {impl: {} for impl in IMPLS}
    for ending in (0, 1):
        for impl in order:
            measured[impl].update(runs[impl][ending]())
    return measured


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if os.geteuid() != 0 or not all(shutil.which(b, path=search) for b in BINARIES):
        print("slurm_bench: needs root and slurm-wlm + munge; skipped")
        return
    binaries = {b: str(shutil.which(b, path=search)) for b in BINARIES}
    root = Path(tempfile.mkdtemp(prefix="kn-slurm-bench-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root=root, binaries=binaries)
    cluster.start()
    results: dict[str, Any] = {impl: {row: [] for row in ROWS} for impl in IMPLS}
    loads = [os.getloadavg()[0]]
    try:
        # Not counted: the cluster's first jobs, and the first starts of each program (its
        # files not yet in the page cache), take seconds longer than the rest.
        one_repetition(cluster, 0)
        for rep in range(args.reps):
            for impl, rows in one_repetition(cluster, rep).items():
                for row, value in rows.items():
                    results[impl][row].append(value)
            loads.append(os.getloadavg()[0])
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    results["load"] = {"min": min(loads), "max": max(loads), "cores": os.cpu_count()}
    write(results, args.reps)


def write(results: dict[str, Any], reps: int) -> None:
    """slurm.json and slurm.md: medians, and the medians of the paired differences."""
    out = ROOT / "docs" / "benchmarks"
    (out / "slurm.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "| row | srun by hand (floor) | ours, asyncio | ours, trio "
        "| asyncio less floor (paired) | trio less floor (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        cells = [f"{median_ms(results[impl][row])} ms" for impl in IMPLS]
        floor_samples = results["floor"][row]
        for impl in IMPLS[1:]:
            paired = [a - b for a, b in zip(results[impl][row], floor_samples, strict=True)]
            cells.append(f"{median_ms(paired):+} ms")
        lines.append(f"| `slurm.{row}` | {' | '.join(cells)} |")
    load = results["load"]
    (out / "slurm.md").write_text(
        f"Medians of {reps} repetitions (after one not counted), each running the floor and "
        f"ours on both backends one after another; load average {load['min']:.1f} to "
        f"{load['max']:.1f} on {load['cores']} cores during the run.\n\n" + "\n".join(lines) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
