"""DockerProvisioner against a raw floor, on a private dockerd started for the run.

Run by ``nox -s bench-3.11`` after ``bench.py`` (it needs root and Debian's ``docker.io``; without
them it says so and writes nothing). The daemon and the image are the tests' own
(``tests/helpers/dockerd.py``: an imported image that mounts this interpreter read-only). Rows,
each with a real ipykernel:

- ``start_to_ready``: ``start_kernel()`` (stale sweep on the first, ``run -d``, the ``wait``
  client, the kernel answering ``kernel_info``), against the floor of ``docker run -d`` of the
  same image and kernel by hand, on a connection file written beforehand, until the same
  answer;
- ``shutdown_to_gone``: ``shutdown_kernel()`` (the request, the container's exit, ``rm -f``),
  against a ``shutdown_request`` by hand until ``docker wait`` returns;
- ``kill_to_noticed``: an outside ``docker kill`` until ``wait()`` returns, against the same
  ``docker kill`` until a hand-run ``docker wait`` returns.

Results go to ``docs/benchmarks/docker.md`` (included in the benchmarks page) and
``docs/benchmarks/docker.json``.
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

from tests.helpers.dockerd import (  # noqa: E402
    DockerDaemon,
    build_test_image,
    start_dockerd,
    stop_dockerd,
)

from kernel_nursery import (  # noqa: E402
    DockerProvisioner,
    KernelClient,
    KernelManager,
    KernelSpec,
    write_connection_file,
)
from kernel_nursery.connection import new_connection_info, release_connection_info  # noqa: E402

REPS = 5
BINARIES = ("dockerd", "docker", "containerd", "runc")


def spec(daemon: DockerDaemon) -> KernelSpec:
    stanza = {"provisioner_name": "docker", "config": daemon.provisioner_config()}
    return KernelSpec(
        argv=["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        name="docker-python",
        language="python",
        metadata={"kernel_provisioner": stanza},
    )


async def ours(daemon: DockerDaemon) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"start_to_ready": [], "shutdown_to_gone": []}
    rows["kill_to_noticed"] = []
    for _ in range(REPS):
        async with KernelManager(kernel_spec=spec(daemon)) as km:
            t0 = time.perf_counter()
            await km.start_kernel()
            rows["start_to_ready"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await km.shutdown_kernel()
            rows["shutdown_to_gone"].append(time.perf_counter() - t0)
        p = DockerProvisioner(kernel_spec=spec(daemon), **daemon.provisioner_config())
        async with p:
            kw = await p.pre_launch()
            await p.launch_kernel(kw.pop("cmd"), **kw)
            assert p.container_id is not None
            t0 = time.perf_counter()
            await anyio.run_process([*daemon.command, "kill", p.container_id])
            await p.wait()
            rows["kill_to_noticed"].append(time.perf_counter() - t0)
    return rows


def floor_argv(daemon: DockerDaemon, directory: Path, path: Path) -> list[str]:
    """``docker run -d`` of the same image and kernel, by hand."""
    argv = [*daemon.command, "run", "-d", "--network", "host", "--init"]
    argv += ["-v", f"{directory}:{directory}:rw"]
    for mount in daemon.mounts():
        argv += ["-v", mount]
    argv += ["-e", "HOME=/tmp", "kernel-nursery-test:1"]
    config_argv = daemon.provisioner_config()["argv"]
    return argv + [a.replace("{connection_file}", str(path)) for a in config_argv]


async def floor(daemon: DockerDaemon) -> dict[str, list[float]]:
    """ipykernel by hand: ``docker run -d`` on a connection file written here, kernel_info."""
    rows: dict[str, list[float]] = {"start_to_ready": [], "shutdown_to_gone": []}
    rows["kill_to_noticed"] = []
    with tempfile.TemporaryDirectory(prefix="kn-docker-bench-") as tmp:
        for rep in range(2 * REPS):
            path = Path(tmp) / f"kernel-{rep}.json"
            info = new_connection_info(transport="tcp", ip="127.0.0.1", kernel_name="")
            write_connection_file(info, path)
            t0 = time.perf_counter()
            done = await anyio.run_process(floor_argv(daemon, Path(tmp), path))
            cid = done.stdout.decode().strip()
            async with KernelClient(info) as kc:
                await kc.wait_for_ready(timeout=60)
                ready = time.perf_counter() - t0
                async with await anyio.open_process(
                    [*daemon.command, "wait", cid], stderr=subprocess.DEVNULL
                ) as waiter:
                    t0 = time.perf_counter()
                    if rep % 2 == 0:  # graceful: shutdown_request, then the container's end
                        await kc.shutdown(timeout=30)
                    else:
                        await anyio.run_process([*daemon.command, "kill", cid])
                    await waiter.wait()
                    gone = time.perf_counter() - t0
            await anyio.run_process([*daemon.command, "rm", "-f", cid])
            release_connection_info(info)
            rows["start_to_ready"].append(ready)
            rows["shutdown_to_gone" if rep % 2 == 0 else "kill_to_noticed"].append(gone)
    return rows


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def main() -> None:
    search = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if os.geteuid() != 0 or not all(shutil.which(b, path=search) for b in BINARIES):
        print("docker_bench: needs root and docker.io; skipped")
        return
    binaries = {b: str(shutil.which(b, path=search)) for b in BINARIES}
    daemon = start_dockerd(binaries)
    load = [os.getloadavg()[0]]
    try:
        build_test_image(daemon)
        results: dict[str, Any] = {"floor": anyio.run(floor, daemon)}
        for backend in ("asyncio", "trio"):
            results[f"ours-{backend}"] = anyio.run(ours, daemon, backend=backend)
    finally:
        stop_dockerd(daemon)
    load.append(os.getloadavg()[0])
    out = ROOT / "docs" / "benchmarks"
    results["load_average"] = load
    (out / "docker.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "| row | docker run by hand (floor) | ours, asyncio | ours, trio |",
        "|---|---|---|---|",
    ]
    for row in ("start_to_ready", "shutdown_to_gone", "kill_to_noticed"):
        cells = [f"{median_ms(results[k][row])} ms" for k in ("floor", "ours-asyncio", "ours-trio")]
        lines.append(f"| `docker.{row}` | {' | '.join(cells)} |")
    (out / "docker.md").write_text(
        f"Medians of {REPS} runs (the floor: {2 * REPS} starts, {REPS} of each ending); load "
        f"average {min(load):.1f} to {max(load):.1f} on {os.cpu_count()} cores.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
