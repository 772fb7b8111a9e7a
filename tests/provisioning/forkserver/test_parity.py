"""Parity: the same spec spawned and forked, compared by what the kernel sees from inside.

Every difference found must be one docs/forkserver.md lists: the pid and parent pid, the
connection file's name (a new kernel id), and the descriptors' numbers (their kinds match).
"""

from __future__ import annotations

import collections
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_nursery import KernelSpec, start_kernel
from kernel_nursery.provisioning import ForkServerProvisioner, hold_fork_templates

from .conftest import ForkSpec

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

PROBE = (Path(__file__).parent / "probe.py").read_text()

#: What may differ, each listed in docs/forkserver.md ("Parity").
DOCUMENTED = {"pid", "ppid", "pgid", "sid", "argv", "orig_argv", "descriptors", "standard"}


@pytest.fixture
def ignoring_sigusr2() -> Iterator[None]:
    """This process ignores SIGUSR2 meanwhile: a spawned kernel inherits that through exec."""
    before = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGUSR2, before)


async def seen_by(spec: KernelSpec, **launch: Any) -> dict[str, Any]:
    """What a kernel of *spec* sees (see probe.py), with how it was started."""
    async with start_kernel(kernel_spec=spec, **launch) as km, km.client() as kc:
        result = await kc.execute(PROBE, timeout=60)
        assert result.error is None, result.error
        seen: dict[str, Any] = json.loads(result.stdout)
        p = km.provisioner
        seen["connection_file"] = p.connection_file  # type: ignore[attr-defined]
        seen["forked"] = isinstance(p, ForkServerProvisioner) and p.forked
        seen["template"] = getattr(p, "template_pid", None)
        return seen


def kinds(descriptors: dict[str, str]) -> collections.Counter[str]:
    """How many descriptors of each kind (a socket's kind, pipe, a file's path...). Not
    counted: connected tcp sockets (one per client connection, which comes and goes), and
    what SQLite opens for a moment as IPython's history writes: its journal, and the folder
    that holds it (opened to sync the journal's removal)."""
    return collections.Counter(
        k
        for k in descriptors.values()
        if not k.endswith(("-journal", "tcp connected")) and not _sqlite_folder(k)
    )


def _sqlite_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "history.sqlite"))


@pytest.mark.usefixtures("ignoring_sigusr2")
async def test_spawned_and_forked_kernels_see_the_same(
    python3_spec: KernelSpec, fork_spec: ForkSpec, tmp_path: Path
) -> None:
    """Environment (the launch's env included), cwd, sys.argv, sys.path, sys.executable,
    flags, signal dispositions and mask, descriptors, session and group, rlimits, umask,
    JPY_PARENT_PID: the same for a spawned and a forked kernel, but for the documented
    differences."""
    launch = {"env": {**os.environ, "KN_PARITY": "from the launch"}, "cwd": str(tmp_path)}
    spawned = await seen_by(python3_spec, **launch)
    forked = await seen_by(fork_spec(), **launch)
    assert forked["forked"] and not spawned["forked"]
    differing = {k for k in spawned if spawned[k] != forked[k]}
    differing -= {"connection_file", "forked", "template"}
    assert differing <= DOCUMENTED, {k: (spawned[k], forked[k]) for k in differing - DOCUMENTED}
    assert forked["environ"]["KN_PARITY"] == "from the launch"
    assert forked["environ"]["JPY_PARENT_PID"] == str(os.getpid())
    assert forked["cwd"] == str(tmp_path) and forked["path"][0] == spawned["path"][0]
    assert forked["signals"][str(int(signal.SIGUSR2))] == "ignore"
    # The documented differences, as documented:
    assert forked["ppid"] == forked["template"] and spawned["ppid"] == os.getpid()
    for seen in (spawned, forked):
        assert seen["pid"] == seen["pgid"] == seen["sid"]
        file = seen["connection_file"]
        assert seen["argv"][1:] == ["-f", file] and seen["orig_argv"][-1] == file
    assert spawned["argv"][0] == forked["argv"][0]
    assert spawned["orig_argv"][:-1] == forked["orig_argv"][:-1]
    assert kinds(spawned["descriptors"]) == kinds(forked["descriptors"])
    assert spawned["standard"]["0"] == forked["standard"]["0"] == "/dev/null"
    for fd in ("1", "2"):  # ipykernel puts pipes of its own there, to capture output
        assert spawned["standard"][fd].split(":")[0] == forked["standard"][fd].split(":")[0]


async def test_forked_kernels_reseed_numpy(fork_spec: ForkSpec) -> None:
    """With numpy preloaded, two forked kernels' numpy.random draws differ."""
    pytest.importorskip("numpy")
    drawn = []
    async with hold_fork_templates():
        for _ in range(2):
            spec = fork_spec(preload=["numpy"])
            async with start_kernel(kernel_spec=spec) as km, km.client() as kc:
                assert km.provisioner.forked  # type: ignore[attr-defined]
                code = "import numpy; print(numpy.random.random())"
                drawn.append((await kc.execute(code, timeout=30)).stdout)
    assert drawn[0] != drawn[1]
