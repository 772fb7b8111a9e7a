"""Tests for ``kernel-nursery kernels`` (kernel_nursery.cli._kernels): listing the kernels of
the runtime directory and removing the stale ones, on both backends."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import pytest

from kernel_nursery import start_kernel

from .conftest import cli

pytestmark = pytest.mark.timeout(120)


@pytest.mark.anyio
async def test_kernels_alive_stale_new_invalid(
    anyio_backend: str, fake: str, jupyter_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """kernels says which connection files have a live kernel behind them (it echoes a
    heartbeat), which are stale (no echo, and old), new (no echo yet, but young) or invalid;
    --remove-stale removes only the stale ones and prints them."""
    runtime = jupyter_dirs["runtime"]
    async with start_kernel(fake) as km:
        assert km.connection_file is not None
        alive = Path(km.connection_file)
        # ipc endpoints where nothing listens (tcp ports could be taken meanwhile).
        channels = ["shell", "iopub", "stdin", "hb", "control"]
        ports = {f"{c}_port": i for i, c in enumerate(channels, 1)}
        gone = {**ports, "transport": "ipc", "ip": str(tmp_path / "gone"), "key": "k"}
        stale, new, invalid = (runtime / f"kernel-{n}.json" for n in ("stale", "new", "bad"))
        stale.write_text(json.dumps(gone))
        new.write_text(json.dumps(gone))
        invalid.write_text("{not json")
        hour_ago = time.time() - 3600
        os.utime(stale, (hour_ago, hour_ago))
        args = ["--backend", anyio_backend, "--timeout", "3"]
        try:
            listed = await anyio.to_thread.run_sync(lambda: cli("kernels", "--json", *args))
            assert listed.returncode == 0, listed.stderr
            states = {
                Path(k["connection_file"]): k["state"] for k in json.loads(listed.stdout)["kernels"]
            }
            assert states == {alive: "alive", stale: "stale", new: "new", invalid: "invalid"}
            table = await anyio.to_thread.run_sync(lambda: cli("kernels", *args))
            assert ["alive", "fake", str(alive)] in [r.split() for r in table.stdout.splitlines()]
            removed = await anyio.to_thread.run_sync(
                lambda: cli("kernels", "--remove-stale", *args)
            )
            assert removed.returncode == 0, removed.stderr
            assert removed.stdout == f"{stale}\n"
            assert not stale.exists()
            assert alive.exists() and new.exists() and invalid.exists()
        finally:
            for path in (stale, new, invalid):
                path.unlink(missing_ok=True)
