"""Tests for ``kernel-nursery specs`` and ``provisioners`` (kernel_nursery.cli._specs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from jupyter_core.paths import SYSTEM_JUPYTER_PATH

from kernel_nursery.cli._specs import kernels_folder

from ..conftest import FAKE_KERNEL, write_kernel
from .conftest import cli

pytestmark = pytest.mark.timeout(120)

REMOTE = {"argv": ["x"], "metadata": {"kernel_provisioner": {"provisioner_name": "remote-prov"}}}


def test_specs_table_and_json(kernels: Path, fake: str) -> None:
    """specs lists each kernel with its provisioner and whether it is available; --json
    says the same for scripts; a broken spec is named with its problem and left out."""
    write_kernel(kernels, "remote", REMOTE)
    write_kernel(kernels, "broken", "{not json")
    table = cli("specs")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "DISPLAY"]
    row = next(line for line in lines if line.startswith("fake "))
    assert "Fake Kernel" in row and "local-provisioner" in row and " yes " in row
    remote = next(line for line in lines if line.startswith("remote "))
    assert "remote-prov" in remote and " no " in remote
    assert "skipping broken:" in table.stderr and "not valid JSON" in table.stderr
    assert "Traceback" not in table.stderr
    data = json.loads(cli("specs", "list", "--json").stdout)["kernelspecs"]
    assert data["fake"]["available"] is True
    assert data["remote"]["available"] is False
    assert data["fake"]["spec"]["display_name"] == "Fake Kernel"


def test_specs_show(fake: str, kernels: Path) -> None:
    """specs show NAME prints the checked spec and its folder as JSON."""
    out = cli("specs", "show", fake)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["name"] == "fake" and shown["display_name"] == "Fake Kernel"
    assert shown["resource_dir"] == str(kernels / "fake")


def test_specs_install_and_remove(tmp_path: Path, jupyter_dirs: dict[str, Path]) -> None:
    """specs install copies a checked spec folder into the user's kernels folder (refusing to
    replace one unless --replace) and prints where; specs remove removes it; bad specs and
    names are one-line errors that install nothing."""
    source = tmp_path / "My-Kernel"
    write_kernel(
        tmp_path, "My-Kernel", {"argv": [sys.executable, FAKE_KERNEL, "{connection_file}"]}
    )
    user_kernels = jupyter_dirs["data"] / "kernels"
    out = cli("specs", "install", str(source))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(user_kernels / "my-kernel")
    assert (
        json.loads((user_kernels / "my-kernel" / "kernel.json").read_text())["argv"][1]
        == FAKE_KERNEL
    )
    again = cli("specs", "install", str(source))
    assert again.returncode == 2 and "already installed" in again.stderr
    assert cli("specs", "install", str(source), "--replace").returncode == 0
    named = cli("specs", "install", str(source), "--name", "other", "--user")
    assert named.stdout.strip() == str(user_kernels / "other")
    assert {"my-kernel", "other"} <= set(json.loads(cli("specs", "--json").stdout)["kernelspecs"])

    write_kernel(tmp_path, "bad", {"argv": []})
    bad = cli("specs", "install", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "argv" in bad.stderr and len(bad.stderr.splitlines()) == 1
    badname = cli("specs", "install", str(source), "--name", "a b")
    assert badname.returncode == 2 and "not a kernel name" in badname.stderr
    assert sorted(p.name for p in user_kernels.iterdir()) == ["my-kernel", "other"]

    missing = cli("specs", "remove", "my-kernel", "nope")
    assert missing.returncode == 2 and "no kernel named 'nope'" in missing.stderr
    assert (user_kernels / "my-kernel").exists()  # nothing removed unless every name is found
    removed = cli("specs", "remove", "my-kernel", "other")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.split() == [str(user_kernels / "my-kernel"), str(user_kernels / "other")]
    assert list(user_kernels.iterdir()) == []


def test_install_locations(jupyter_dirs: dict[str, Path]) -> None:
    """--user, --sys-prefix and --system install where Jupyter looks for kernels."""
    assert kernels_folder("user") == str(jupyter_dirs["data"] / "kernels")
    assert kernels_folder("sys-prefix") == os.path.join(sys.prefix, "share", "jupyter", "kernels")
    assert kernels_folder("system") == os.path.join(SYSTEM_JUPYTER_PATH[0], "kernels")


def test_provisioners_marks_the_default() -> None:
    """provisioners lists local-provisioner as the default."""
    out = cli("provisioners")
    assert out.returncode == 0
    row = next(line for line in out.stdout.splitlines() if line.startswith("local-provisioner"))
    assert "kernel_nursery.provisioning:LocalProvisioner" in row and row.endswith("*")
