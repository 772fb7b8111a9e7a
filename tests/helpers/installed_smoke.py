"""Smoke check of an installed wheel, run by ``nox -s build`` in a fresh virtual environment.

Run as a script from a temporary directory, never from the source tree: it checks that
``kernel_nursery`` comes from the environment's site-packages, then on asyncio and on trio
starts a real kernel, executes code in it, and checks that the kernel's guardian runs the
script the wheel installed (``provisioning/_scripts/guardian.py``). Exits non-zero on failure.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

import anyio

import kernel_nursery
from kernel_nursery.provisioning import _guardian


def installed_here() -> Path:
    """The package's folder, which must be in this environment's site-packages."""
    package = Path(kernel_nursery.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if package.parent != site:
        sys.exit(f"kernel_nursery was imported from {package}, not from {site}")
    return package


def check_guardian(package: Path) -> None:
    """The guardian runs, from the installed script (Linux; elsewhere there is none)."""
    if not _guardian.SUPPORTED:
        print("guardian: not supported on this platform")
        return
    pid = _guardian.guardian_pid()
    if pid is None:
        sys.exit("no guardian runs while a kernel does")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    script = str(package / "provisioning" / "_scripts" / "guardian.py").encode()
    if script not in argv:
        sys.exit(f"the guardian ({pid}) does not run {script!r}: {argv!r}")
    print(f"guardian: pid {pid} runs the installed script")


async def main() -> None:
    """Start a kernel, run code in it, and check the guardian while it runs."""
    package = installed_here()
    with anyio.fail_after(120):  # generous: a loaded machine, a cold kernel start
        async with kernel_nursery.start_kernel("python3") as km, km.client() as kc:
            result = await kc.execute("print(6 * 7)", timeout=60)
            if result.stdout.strip() != "42":
                sys.exit(f"the kernel printed {result.stdout!r}, not 42")
            check_guardian(package)


if __name__ == "__main__":
    for backend in ("asyncio", "trio"):
        anyio.run(main, backend=backend)
        print(f"{backend}: a kernel started, executed and stopped")
