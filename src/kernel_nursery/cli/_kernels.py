"""``kernel-nursery kernels``: the kernels whose connection files are in the runtime directory."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Float, Unicode

from .._errors import KernelNurseryError
from ..messaging import KernelClient
from ..provisioning import remove_stale_containers
from ._base import KernelNurseryCommand
from ._output import say
from ._specs import table

__all__ = ["KernelsApp"]

#: How many kernels are asked at once.
_AT_ONCE = 32
#: A connection file younger than this may belong to a kernel still starting (it has not
#: bound its ports yet): it is never called stale.
NEW_FILE_AGE = 60.0


class KernelsApp(KernelNurseryCommand):
    """kernel-nursery kernels: list the kernels in the runtime directory, remove stale files."""

    name = "kernel-nursery-kernels"
    usage = (
        "Usage: kernel-nursery kernels [--json] [--remove-stale [--engine COMMAND]] "
        "[--timeout SECONDS]"
    )
    description = (
        "List the kernels whose connection files (kernel-*.json) are in Jupyter's runtime "
        "directory, asking each whether it is alive (a heartbeat, echoed within --timeout; a "
        "kernel busy running code echoes too). STATE is 'alive', 'stale' (no echo: the kernel "
        "is gone, or hangs), 'new' "
        f"(the file is younger than {NEW_FILE_AGE:.0f} s: the kernel may still be starting) or "
        "'invalid' (not a connection file). --remove-stale removes the stale files and prints "
        "each one removed; with --engine (docker, podman, or the client with its options) it "
        "also removes the kernel containers of that engine whose owner process has ended, and "
        "prints their ids."
    )
    examples = """
kernel-nursery kernels
kernel-nursery kernels --json
kernel-nursery kernels --remove-stale
kernel-nursery kernels --remove-stale --engine docker
"""
    json_output = Bool(False, config=True, help="Print JSON, for scripts.")
    remove_stale = Bool(False, config=True, help="Remove the connection files of stale kernels.")
    timeout = Float(2.0, config=True, help="How long to wait for each kernel's answer, in s.")
    engine = Unicode(
        "",
        config=True,
        help="With --remove-stale: a container engine's client (docker, podman, or one with "
        "its options, e.g. 'docker --host unix:///run/d.sock') whose stale kernel containers "
        "are removed too.",
    )
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **KernelNurseryCommand.aliases,
        "timeout": "KernelsApp.timeout",
        "engine": "KernelsApp.engine",
    }
    flags: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **KernelNurseryCommand.flags,
        "json": ({"KernelsApp": {"json_output": True}}, "Print JSON, for scripts."),
        "remove-stale": (
            {"KernelsApp": {"remove_stale": True}},
            "Remove the connection files of stale kernels.",
        ),
    }

    def start(self) -> None:
        if self.extra_args:
            self.fail(f"kernels takes no arguments (got {' '.join(self.extra_args)!r})")
        if self.timeout <= 0:
            self.fail(f"--timeout must be positive (got {self.timeout})")
        if self.engine and not self.remove_stale:
            self.fail("--engine goes with --remove-stale")
        files = sorted(Path(jupyter_runtime_dir()).glob("kernel-*.json"))
        self.run(lambda: self._list(files))

    async def _list(self, files: list[Path]) -> int:
        limiter = anyio.CapacityLimiter(_AT_ONCE)
        rows: dict[Path, dict[str, Any]] = {}
        async with anyio.create_task_group() as tg:
            for path in files:
                tg.start_soon(self._examine, path, rows, limiter)
        status = 0
        for path in files:
            row = rows[path]
            if self.remove_stale and row["state"] == "stale":
                try:
                    path.unlink()
                    row["removed"] = True
                except FileNotFoundError:
                    row["removed"] = True
                except OSError as exc:
                    say(f"kernel-nursery: cannot remove {path}: {exc.strerror or exc}")
                    status = 1
        containers: list[str] = []
        if self.engine:
            containers, failed = await self._remove_stale_containers()
            status = status or failed
        if self.json_output:
            listing: dict[str, Any] = {"kernels": [rows[p] for p in files]}
            if self.engine:
                listing["removed_containers"] = containers
            print(json.dumps(listing, indent=2))
        elif self.remove_stale:
            for path in files:
                if rows[path].get("removed"):
                    print(path)
            for cid in containers:
                print(f"container {cid}")
        else:
            table(
                ["STATE", "KERNEL", "CONNECTION FILE"],
                [[rows[p]["state"], rows[p]["kernel_name"], str(p)] for p in files],
            )
        return status

    async def _remove_stale_containers(self) -> tuple[list[str], int]:
        """The ids of the stale kernel containers removed from :attr:`engine`, and 1 if the
        engine could not be asked (said on stderr), else 0."""
        try:
            return await remove_stale_containers(shlex.split(self.engine)), 0
        except (KernelNurseryError, ValueError) as exc:
            say(f"kernel-nursery: cannot remove stale containers: {exc}")
            return [], 1

    async def _examine(
        self, path: Path, rows: dict[Path, dict[str, Any]], limiter: anyio.CapacityLimiter
    ) -> None:
        row: dict[str, Any] = {"connection_file": str(path), "kernel_name": "", "state": ""}
        rows[path] = row
        try:
            kc = KernelClient.from_connection_file(path)
        except KernelNurseryError:
            row["state"] = "invalid"
            return
        row["kernel_name"] = kc.connection_info.get("kernel_name", "")
        # The heartbeat, not a request on shell: a kernel busy running code for an hour
        # answers nothing on shell meanwhile, but echoes heartbeats (and must not be called
        # stale). The limiter bounds the sockets open at once (five per kernel).
        async with limiter:
            try:
                async with kc:
                    alive = await kc.heartbeat(timeout=self.timeout)
            except (KernelNurseryError, OSError):
                alive = False
        if alive:
            row["state"] = "alive"
        else:
            row["state"] = "new" if _age(path) < NEW_FILE_AGE else "stale"


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0
