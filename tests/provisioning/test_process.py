"""Tests for kernel_nursery.provisioning._process: the shielded spawn SSH and Slurm share."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_nursery import LaunchError, LaunchFileNotFoundError, LaunchPermissionError
from kernel_nursery.provisioning._process import spawn_shielded

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("program", "builtin", "kind"),
    [
        ("/nonexistent/ssh", FileNotFoundError, LaunchFileNotFoundError),
        (str(Path(__file__)), PermissionError, LaunchPermissionError),
    ],
)
async def test_a_program_that_cannot_run_is_also_the_os_error(
    program: str, builtin: type[OSError], kind: type[LaunchError]
) -> None:
    """A missing program is a LaunchFileNotFoundError (a FileNotFoundError), one not
    executable a LaunchPermissionError (a PermissionError), naming the program, with the argv
    shown (not the one run) and the program as filename."""
    with pytest.raises(kind, match="cannot run ssh") as raised:
        await spawn_shielded([program, "-V"], program="ssh", shown=[program, "(shown)"])
    assert isinstance(raised.value, builtin)
    assert raised.value.argv == [program, "(shown)"]
    assert raised.value.filename == program
