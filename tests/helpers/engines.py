"""Real engines (sshd, Slurm, ...) that some tests need, and what to do where one is absent.

Where an engine's binaries are missing its tests are skipped with the reason, unless the
comma-separated ``KERNEL_NURSERY_REQUIRE`` environment variable names the engine (``.ci/run``
sets it for every engine it installs): then the missing engine fails the test instead, so a CI
machine that lost a package cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["engine_required", "need_binaries"]


def engine_required(engine: str) -> bool:
    """Whether ``KERNEL_NURSERY_REQUIRE`` names ``engine`` (case-insensitive)."""
    names = os.environ.get("KERNEL_NURSERY_REQUIRE", "")
    return engine.lower() in {n.strip().lower() for n in names.split(",") if n.strip()}


def need_binaries(engine: str, *binaries: str) -> dict[str, str]:
    """Return the absolute path of each binary, or skip (or fail, if required) the test.

    A name containing ``/`` is checked as a path; any other is looked up on ``PATH`` and then in
    ``/usr/sbin`` and ``/sbin`` (daemons such as ``sshd`` live there, often off a user's PATH).
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for binary in binaries:
        if "/" in binary:
            path = binary if os.access(binary, os.X_OK) else None
        else:
            search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
            path = shutil.which(binary, path=search)
        if path is None:
            missing.append(binary)
        else:
            found[binary] = path
    if missing:
        reason = f"{engine}: {', '.join(missing)} not installed"
        if engine_required(engine):
            pytest.fail(f"{reason}, and KERNEL_NURSERY_REQUIRE names {engine!r}")
        pytest.skip(reason)
    return found
