"""Tests for kernel_nursery.provisioning.sandbox._command and _cgroup: the sandbox's command line
and where cgroups can be made (no bwrap needed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kernel_nursery.provisioning._limits import parse_limits
from kernel_nursery.provisioning.sandbox._cgroup import find_cgroup_place
from kernel_nursery.provisioning.sandbox._command import (
    HOME,
    Mount,
    SandboxCommand,
    interpreter_paths,
    prlimit_options,
    system_mounts,
)


def command(**changes: object) -> SandboxCommand:
    fields: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "sh": "/bin/sh",
        "prlimit": "/usr/bin/prlimit",
        "system": ["--ro-bind", "/usr", "/usr"],
        "mounts": [Mount("/k/run", "/k/run", writable=True)],
        "home": "/k/home",
        "network": False,
        "share": frozenset(),
        "die_with_parent": True,
    }
    return SandboxCommand(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_defaults_confine() -> None:
    """By default: every namespace of its own, no network, no capabilities, a private /tmp,
    its home writable, the root read-only, and it dies with its parent."""
    options = command().bwrap_options()
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"):
        assert flag in options
    assert options[options.index("--cap-drop") + 1] == "ALL"
    assert "--die-with-parent" in options
    joined = " ".join(options)
    assert "--tmpfs /tmp" in joined
    assert f"--bind /k/home {HOME}" in joined
    assert "--bind /k/run /k/run" in joined
    assert joined.index("--tmpfs /tmp") < joined.index("--bind /k/run")  # binds over the tmpfs
    assert options[-4:] == ["--remount-ro", "/", "--chdir", HOME]


def test_openings() -> None:
    """The host's network and namespaces are shared when asked, and extra options follow."""
    options = command(
        network=True, share=frozenset({"pid", "uts"}), die_with_parent=False, extra_args=["--x"]
    ).bwrap_options()
    assert "--unshare-net" not in options
    assert "--unshare-pid" not in options and "--unshare-uts" not in options
    assert "--unshare-ipc" in options
    assert "--hostname" not in options and "--die-with-parent" not in options
    assert options[-1] == "--x"


def test_the_whole_command() -> None:
    """The cgroups are entered first (by sh), then prlimit lowers the rlimits, then bwrap
    runs the kernel's argv after '--'."""
    limits = parse_limits({"memory": "1g", "cpu_time": 10, "file_size": "1m"}, where="x")
    argv = command().argv(
        ["python", "-m", "k"],
        cgroup_procs=["/cg/a/cgroup.procs"],
        limits=limits,
        rlimits=["cpu_time", "file_size"],
    )
    assert argv[:2] == ["/bin/sh", "-c"]
    assert argv[3:7] == ["kn-sandbox", "/cg/a/cgroup.procs", "--", "/usr/bin/prlimit"]
    assert argv[7:10] == ["--cpu=10:11", f"--fsize={1024**2}", "--"]
    assert argv[10] == "/usr/bin/bwrap"
    assert argv[-4:] == ["--", "python", "-m", "k"]
    plain = command().argv(["k"], cgroup_procs=[], limits=parse_limits({}, where="x"), rlimits=[])
    assert plain[0] == "/usr/bin/bwrap"


def test_prlimit_options() -> None:
    """Each rlimit in bytes or counts; memory as address space."""
    limits = parse_limits({"memory": "1m", "open_files": 300}, where="x")
    assert prlimit_options(limits, ["memory", "open_files"]) == [
        "--nofile=300",
        f"--as={1024**2}",
    ]


def test_system_mounts_keep_symlinks(tmp_path: Path) -> None:
    """A symbolic link is shown as the same link, a folder read-only, a missing path not."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    args = system_mounts([str(tmp_path / "link"), str(tmp_path / "real"), str(tmp_path / "no")])
    assert args == [
        "--symlink",
        "real",
        str(tmp_path / "link"),
        "--ro-bind",
        str(tmp_path / "real"),
        str(tmp_path / "real"),
    ]


def test_interpreter_paths_of_this_python() -> None:
    """This interpreter's prefix (a virtual environment's and its base's) is what it needs."""
    paths = interpreter_paths(sys.executable, search_path="", system=["/usr"])
    assert os.path.realpath(sys.prefix) in {os.path.realpath(p) for p in paths}
    assert os.path.realpath(sys.base_prefix) in {os.path.realpath(p) for p in paths} or (
        sys.base_prefix.startswith("/usr")
    )
    assert interpreter_paths("no-such-program-here", search_path="", system=[]) == []


@pytest.mark.parametrize("parent", ["/nonexistent/cgroup", "/sys/fs/cgroup/unified"])
def test_no_cgroup_place_in_a_parent_without_controllers(parent: str) -> None:
    """A configured v2 parent that is missing, or has none of the limits' controllers (the
    hybrid hierarchy here holds only hugetlb), gives no place."""
    controllers = Path(parent, "cgroup.controllers")
    if parent.startswith("/sys") and not controllers.exists():
        pytest.skip(f"{parent} is not a cgroup v2 directory here")
    found = set(controllers.read_text().split()) if controllers.exists() else set()
    if found & {"memory", "pids", "cpu"}:
        pytest.skip(f"{parent} has the controllers of limits here")
    assert find_cgroup_place(parent) is None
