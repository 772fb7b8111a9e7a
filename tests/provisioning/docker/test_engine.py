"""The container provisioner's owner labels (provisioning/docker/_engine.py), without an engine."""

from __future__ import annotations

import os
import subprocess
import sys

from kernel_nursery.provisioning.docker._engine import _where, owner_gone, owner_label


def test_a_live_owner_is_not_gone() -> None:
    """This process, as an owner label, is alive."""
    assert not owner_gone(owner_label())


def test_an_ended_owner_is_gone() -> None:
    """A process that has ended (its pid and start time) is gone."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(done.stdout)
    assert owner_gone(f"{_where()}:{pid}:1")  # whatever now runs with that pid started later


def test_owners_elsewhere_are_never_judged() -> None:
    """An owner of another boot, of another pid namespace, 'independent', or a label that is
    not one, is never called gone."""
    boot, namespace = _where().split(":")
    pid, start = owner_label().split(":")[2:]
    assert not owner_gone(f"0123456789abcdef:{namespace}:{os.getpid()}:0")
    assert not owner_gone(f"{boot}:1:{pid}:0")  # another pid namespace: its pid means nothing
    assert not owner_gone("independent")
    assert not owner_gone(f"{boot}:{namespace}:x:{start}")
