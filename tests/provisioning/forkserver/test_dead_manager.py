"""A managing process SIGKILLed with forked kernels: its kernels and its template are gone
soon after (through the guardian, and through the template's own watch on its manager)."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest

from kernel_nursery.provisioning import _guardian

from ...helpers.procs import gone, is_running, parent_of, process_group_members
from ..test_guardian import managing_program

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not _guardian.SUPPORTED, reason="the guardian needs Linux pidfds"),
]

# Starts forked python3 kernels on command; answers each with their pids and file.
PROGRAM = textwrap.dedent(
    """
    import json, subprocess, sys
    from contextlib import AsyncExitStack
    import anyio, anyio.to_thread
    from traitlets.config import Config
    from kernel_nursery import start_kernel
    from kernel_nursery.provisioning import _guardian

    CONFIG = Config({"KernelProvisionerFactory": {"default_provisioner_name": "forkserver"}})

    async def main():
        stack = AsyncExitStack()
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                await anyio.sleep_forever()
            config = Config(CONFIG)
            config.ForkServerProvisioner.independent = json.loads(line).get("independent", False)
            # Not our stdout: an independent ipykernel prints how to connect to it there.
            kernel = start_kernel("python3", config=config, stdout=subprocess.DEVNULL)
            km = await stack.enter_async_context(kernel)
            p = km.provisioner
            reply = {"pid": p.pid, "template": p.template_pid, "file": p.connection_file,
                     "forked": p.forked, "guardian": _guardian.guardian_pid()}
            print(json.dumps(reply), flush=True)

    anyio.run(main, backend=sys.argv[1])
    """
)


@pytest.mark.parametrize("guardian_killed_too", [False, True], ids=["guardian", "no-guardian"])
async def test_forked_kernels_and_template_go_with_a_killed_manager(
    tmp_path: Path, anyio_backend: str, guardian_killed_too: bool
) -> None:
    """SIGKILL of a manager with two forked kernels: the kernels (their groups) and the
    template are gone soon after, and the connection files with the guardian; without a
    guardian, the template stops its kernels itself (their files then stay: the limit the
    local provisioner documents too)."""
    async with managing_program(tmp_path, anyio_backend, PROGRAM) as manager:
        kernels = [await manager.send("start"), await manager.send("start")]
        template = kernels[0]["template"]
        assert all(k["forked"] and k["template"] == template for k in kernels)
        assert parent_of(template) == manager.process.pid
        if guardian_killed_too:
            os.kill(kernels[0]["guardian"], signal.SIGKILL)
            await gone(kernels[0]["guardian"])
        await manager.kill()
        for kernel in kernels:
            await gone(kernel["pid"])
            assert not process_group_members(kernel["pid"])
        await gone(template)
        assert not is_running(template)
        for kernel in kernels:
            path = Path(kernel["file"])
            if guardian_killed_too:
                path.unlink()  # nobody was left to remove it
            else:
                await gone(kernel["guardian"])
                assert not path.exists()


async def test_an_independent_forked_kernel_outlives_its_manager(
    tmp_path: Path, anyio_backend: str
) -> None:
    """An independent kernel is left running when its manager is SIGKILLed and its template
    goes (nothing ties it to them: no JPY_PARENT_PID, no guardian)."""
    async with managing_program(tmp_path, anyio_backend, PROGRAM) as manager:
        kernel = await manager.send("start", independent=True)
        assert kernel["forked"]
        await manager.kill()
        await gone(kernel["template"])
        try:
            assert is_running(kernel["pid"])
        finally:
            os.killpg(kernel["pid"], signal.SIGKILL)
            await gone(kernel["pid"])
            Path(kernel["file"]).unlink()
