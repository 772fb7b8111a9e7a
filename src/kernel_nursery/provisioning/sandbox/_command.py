"""The command that runs a kernel in a sandbox: ``bwrap`` with its mounts and namespaces,
preceded by what enters the cgroups and lowers the rlimits.

Pure functions of what the provisioner decided, except :func:`interpreter_paths` and
:func:`system_mounts`, which look at the file system (a few ``stat`` calls: run with the rest
of the launch's preparation, in a worker thread).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._limits import Limits

__all__ = [
    "DEFAULT_SYSTEM",
    "HOME",
    "Mount",
    "SandboxCommand",
    "interpreter_paths",
    "system_mounts",
]

#: Where the kernel's private folder appears inside the sandbox (its ``HOME`` and working
#: directory).
HOME = "/home/kernel"

#: What of the system a kernel sees by default (read-only; those that exist): programs and
#: libraries, and the few files of ``/etc`` that programs need to start (dynamic linker,
#: users and groups by name, time zone, name service and TLS certificates), never all of
#: ``/etc``, home folders, ``/root``, ``/tmp`` or ``/var``.
DEFAULT_SYSTEM = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/mime.types",
)

# Entering the cgroups must happen before the kernel's first fork, so the process that
# becomes bwrap writes its own pid to each cgroup.procs file given before "--", then execs
# the rest; 125 (as env(1) and docker use) says it could not.
_ENTER = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
#: The exit status of the wrapper when the kernel could not enter its cgroups.
ENTER_FAILED = 125


@dataclass(frozen=True)
class Mount:
    """A folder or file of the host shown inside the sandbox."""

    source: str
    target: str
    writable: bool = False

    def args(self) -> list[str]:
        return ["--bind" if self.writable else "--ro-bind", self.source, self.target]


@dataclass(frozen=True, kw_only=True)
class SandboxCommand:
    """What a sandboxed kernel's command is made of."""

    bwrap: str
    sh: str
    prlimit: str | None
    #: ``--symlink``/``--ro-bind`` arguments for the system (see :func:`system_mounts`).
    system: Sequence[str]
    mounts: Sequence[Mount]  # the interpreter, the folders, the configured extras, in order
    home: str  # the host folder shown at HOME
    network: bool  # share the host's network
    share: frozenset[str]  # namespaces shared with the host: pid, ipc, uts
    die_with_parent: bool
    extra_args: Sequence[str] = ()

    def argv(
        self,
        kernel_argv: Sequence[str],
        *,
        cgroup_procs: Sequence[str],
        limits: Limits,
        rlimits: Sequence[str],
    ) -> list[str]:
        """The whole command: the cgroup entry (when there are cgroups), ``prlimit`` (when
        there are rlimits), ``bwrap`` and its options, then *kernel_argv*.

        Args:
            cgroup_procs: the cgroups' ``cgroup.procs`` files.
            limits: the kernel's limits.
            rlimits: the names of the limits enforced by rlimits.
        """
        argv: list[str] = []
        if cgroup_procs:
            argv += [self.sh, "-c", _ENTER, "kn-sandbox", *cgroup_procs, "--"]
        options = prlimit_options(limits, rlimits)
        if options:
            assert self.prlimit is not None
            argv += [self.prlimit, *options, "--"]
        return [*argv, self.bwrap, *self.bwrap_options(), "--", *kernel_argv]

    def bwrap_options(self) -> list[str]:
        options = ["--unshare-cgroup-try"]
        for namespace in ("pid", "ipc", "uts"):
            if namespace not in self.share:
                options.append(f"--unshare-{namespace}")
        if not self.network:
            options.append("--unshare-net")
        if "uts" not in self.share:
            options += ["--hostname", "sandbox"]
        # Run as root, bwrap would keep every capability (mount, ptrace, raw I/O...).
        options += ["--cap-drop", "ALL"]
        if self.die_with_parent:
            options.append("--die-with-parent")
        options += list(self.system)
        # A private /tmp: a tmpfs of the sandbox's own, not the host's.
        options += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
        options += ["--bind", self.home, HOME]
        for mount in self.mounts:
            options += mount.args()
        # The root itself is a tmpfs bwrap made: read-only, so nothing is written outside the
        # folders mounted writable.
        options += ["--remount-ro", "/", "--chdir", HOME, *self.extra_args]
        return options


def prlimit_options(limits: Limits, rlimits: Sequence[str]) -> list[str]:
    """``prlimit`` options for the limits enforced by rlimits (soft and hard alike, except
    ``cpu_time``: its soft limit sends SIGXCPU, which tells the limit apart, and its hard limit,
    a second later, SIGKILL for a process that ignores it)."""
    options = []
    if "cpu_time" in rlimits and limits.cpu_time is not None:
        options.append(f"--cpu={limits.cpu_time}:{limits.cpu_time + 1}")
    if "file_size" in rlimits and limits.file_size is not None:
        options.append(f"--fsize={limits.file_size}")
    if "open_files" in rlimits and limits.open_files is not None:
        options.append(f"--nofile={limits.open_files}")
    if "memory" in rlimits and limits.memory is not None:
        options.append(f"--as={limits.memory}")
    return options


def system_mounts(paths: Sequence[str]) -> list[str]:
    """bwrap arguments showing each of *paths* that exists: a symbolic link as the same link
    (``/bin`` -> ``usr/bin`` on merged-/usr systems), anything else read-only."""
    args: list[str] = []
    for path in paths:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def interpreter_paths(program: str, *, search_path: str, system: Sequence[str]) -> list[str]:
    """The folders a kernel program needs beyond the system: the prefix it is installed in
    (``<prefix>/bin/<program>``), that of the file it links to, and for a Python virtual
    environment its base interpreter's prefix (``pyvenv.cfg``'s ``home``). Folders inside
    *system* are left out; so is a program not found (bwrap then says so).
    """
    found = program if os.sep in program else shutil.which(program, path=search_path)
    if found is None:
        return []
    paths: list[str] = []
    for exe in (os.path.abspath(found), os.path.realpath(found)):
        prefix = Path(exe).parent.parent
        paths.append(str(prefix))
        home = _venv_home(prefix)
        if home is not None:
            paths.append(str(home.parent if home.name == "bin" else home))
            paths.append(str(Path(os.path.realpath(home)).parent))
    kept: list[str] = []
    for path in dict.fromkeys(paths):
        if path != "/" and not any(_inside(path, s) for s in system) and os.path.isdir(path):
            kept.append(path)
    return kept


def _venv_home(prefix: Path) -> Path | None:
    try:
        text = (prefix / "pyvenv.cfg").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home" and value.strip():
            return Path(value.strip())
    return None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
