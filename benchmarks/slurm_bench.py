"""SlurmProvisioner against a raw floor, on a single-node Slurm cluster started for the run.

Run by ``nox -s bench-3.11`` after ``bench.py`` (it needs root and Debian's ``slurm-wlm`` and
``munge``; without them it says so and writes nothing). Rows, each with a real ipykernel:

- ``submit_to_ready``: ``start_kernel()`` (submission, the queue, the node side's report, the
  kernel answering ``kernel_info``), against the floor of ``srun``-ing ipykernel by hand on a
  connection file written beforehand and waiting for the same answer;
- ``shutdown_to_gone``: ``shutdown_kernel()`` until the job is gone (srun has exited), against
  a ``shutdown_request`` sent by hand until srun exits;
- ``scancel_to_noticed``: an outside ``scancel`` until ``wait()`` returns, against the same
  ``scancel`` until the hand-run ``srun`` exits.

Results go to ``docs/benchmarks/slurm.md`` (included in the benchmarks page) and
``docs/benchmarks/slurm.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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

REPS = 5
IPYKERNEL = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
BINARIES = ("slurmctld", "slurmd", "munged", "srun", "scancel", "squeue", "scontrol")


def spec(cluster: SlurmCluster) -> KernelSpec:
    stanza = {"provisioner_name": "slurm", "config": {"slurm_conf": str(cluster.conf)}}
    return KernelSpec(
        argv=IPYKERNEL,
        name="slurm-python",
        language="python",
        metadata={"kernel_provisioner": stanza},
    )


async def ours(cluster: SlurmCluster) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"submit_to_ready": [], "shutdown_to_gone": []}
    rows["scancel_to_noticed"] = []
    for _ in range(REPS):
        async with KernelManager(kernel_spec=spec(cluster)) as km:
            t0 = time.perf_counter()
            await km.start_kernel()
            rows["submit_to_ready"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            rows["shutdown_to_gone"].append(time.perf_counter() - t0)
        p = SlurmProvisioner(kernel_spec=spec(cluster), slurm_conf=str(cluster.conf))
        async with p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            assert p.job_id is not None
            t0 = time.perf_counter()
            await anyio.run_process(["scancel", p.job_id], env=cluster.env)
            await p.wait()
            rows["scancel_to_noticed"].append(time.perf_counter() - t0)
    return rows


async def floor(cluster: SlurmCluster) -> dict[str, list[float]]:
    """ipykernel by hand: ``srun`` it on a connection file written here, ask it kernel_info."""
    rows: dict[str, list[float]] = {"submit_to_ready": [], "shutdown_to_gone": []}
    rows["scancel_to_noticed"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2 * REPS):
            path = Path(tmp) / f"kernel-{rep}.json"
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
                    if rep % 2 == 0:  # graceful: shutdown_request, then the job's end
                        await kc.shutdown(timeout=30)
                    else:
                        job = cluster.queue()[0].split()[0]
                        await anyio.run_process(["scancel", job], env=cluster.env)
                    await process.wait()
                    gone = time.perf_counter() - t0
            release_connection_info(info)
            rows["submit_to_ready"].append(ready)
            rows["shutdown_to_gone" if rep % 2 == 0 else "scancel_to_noticed"].append(gone)
    return rows


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def main() -> None:
    if os.geteuid() != 0 or not all(
        shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") for b in BINARIES
    ):
        print("slurm_bench: needs root and slurm-wlm + munge; skipped")
        return
    binaries = {
        b: str(shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"))
        for b in BINARIES
    }
    root = Path(tempfile.mkdtemp(prefix="kn-slurm-bench-"))
    root.chmod(0o755)
    cluster = SlurmCluster(root=root, binaries=binaries)
    cluster.start()
    try:
        results: dict[str, Any] = {"floor": anyio.run(floor, cluster)}
        for backend in ("asyncio", "trio"):
            results[f"ours-{backend}"] = anyio.run(ours, cluster, backend=backend)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    out = ROOT / "docs" / "benchmarks"
    (out / "slurm.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "| row | srun by hand (floor) | ours, asyncio | ours, trio |",
        "|---|---|---|---|",
    ]
    for row in ("submit_to_ready", "shutdown_to_gone", "scancel_to_noticed"):
        cells = [f"{median_ms(results[k][row])} ms" for k in ("floor", "ours-asyncio", "ours-trio")]
        lines.append(f"| `slurm.{row}` | {' | '.join(cells)} |")
    (out / "slurm.md").write_text(
        f"Medians of {REPS} runs (the floor: {2 * REPS} starts, {REPS} of each ending).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
