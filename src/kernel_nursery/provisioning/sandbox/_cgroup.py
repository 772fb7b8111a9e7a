"""The cgroups a sandboxed kernel runs in: one set per launch, made before the kernel starts
and removed when it is reaped (or by the guardian, if the managing process dies first).

Two layouts are handled:

- **cgroup v1** (one hierarchy per controller, ``/sys/fs/cgroup/memory``, ``.../pids``,
  ``.../cpu``): a directory ``kn-sandbox-*`` under this process's own cgroup of each
  controller that is mounted and writable (so that a limit on this process's group still
  bounds its kernels). This is the layout of the machines the tests run on.
- **cgroup v2** (one unified hierarchy): a directory ``kn-sandbox-*`` under a *delegated*
  parent: the configured one, or the root of a pure v2 system when this process may write
  it; the controllers the parent enables for its children are used.

Everything here reads and writes a few small files of the cgroup file system (cheap, no I/O
that can block), so it is called directly, or with the rest of the launch's preparation in a
worker thread.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._limits import Limits

__all__ = ["PREFIX", "Cgroup", "CgroupPlace", "find_cgroup_place"]

#: How sandboxes name their cgroups and folders (the guardian removes only those).
PREFIX = "kn-sandbox-"
_ROOT = Path("/sys/fs/cgroup")
#: The v1 controller that enforces each limit a cgroup enforces.
_CONTROLLERS = {"memory": "memory", "pids": "pids", "cpus": "cpu"}
_CFS_PERIOD = 100_000  # microseconds: the kernel's default period for cpu quotas


@dataclass(frozen=True)
class CgroupPlace:
    """Where this process can make cgroups: the parent directory of each usable controller."""

    version: int
    #: controller name -> parent directory (v2: the same directory for every controller)
    parents: Mapping[str, Path]

    def enforces(self, limit: str) -> bool:
        """Whether a cgroup made here enforces *limit* (a name of the limits' vocabulary)."""
        return _CONTROLLERS.get(limit) in self.parents

    def describe(self, limit: str | None = None) -> str:
        """``cgroup v1``, or with *limit* the controller enforcing it: ``cgroup v1 memory``."""
        if limit is None:
            return f"cgroup v{self.version}"
        return f"cgroup v{self.version} {_CONTROLLERS[limit]}"


def find_cgroup_place(parent: str = "") -> CgroupPlace | None:
    """Where cgroups can be made for kernels, or ``None`` where they cannot (no cgroup file
    system, or not writable by this process).

    Args:
        parent: a delegated cgroup v2 directory to use; empty: look for one (v1 hierarchies,
            or the root of a pure v2 system).
    """
    if parent:
        return _v2_place(Path(parent))
    if (_ROOT / "cgroup.controllers").exists():
        return _v2_place(_ROOT)
    own = _own_cgroups()
    parents: dict[str, Path] = {}
    for controller in _CONTROLLERS.values():
        base = _ROOT / controller
        if not (base / "cgroup.procs").exists():
            continue
        for candidate in (base / own.get(controller, "").lstrip("/"), base):
            if candidate.is_dir() and os.access(candidate, os.W_OK):
                parents[controller] = candidate
                break
    return CgroupPlace(1, parents) if parents else None


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path in each v1 hierarchy, by controller."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                _number, controllers, path = line.rstrip("\n").split(":", 2)
                for controller in controllers.split(","):
                    found[controller] = path
    except (OSError, ValueError):
        pass
    return found


def _v2_place(parent: Path) -> CgroupPlace | None:
    """A v2 parent whose children get the controllers it enables (enabling those it can)."""
    control = parent / "cgroup.subtree_control"
    if not os.access(control, os.W_OK):
        return None
    try:
        available = (parent / "cgroup.controllers").read_text().split()
        wanted = [c for c in _CONTROLLERS.values() if c in available]
        enabled = set(control.read_text().split())
        for controller in wanted:
            if controller not in enabled:
                control.write_text(f"+{controller}")
        enabled = set(control.read_text().split())
    except OSError:
        return None
    parents = {c: parent for c in _CONTROLLERS.values() if c in enabled}
    return CgroupPlace(2, parents) if parents else None


@dataclass
class Cgroup:
    """The cgroup directories of one launch: one per v1 controller, or one v2 directory."""

    place: CgroupPlace
    dirs: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, place: CgroupPlace, kernel_id: str, limits: Limits) -> Cgroup:
        """Make the directories and write *limits* (those the place enforces) in them.

        Raises:
            OSError: a directory or a limit could not be written; nothing is left.
        """
        name = f"{PREFIX}{kernel_id[:36]}-{secrets.token_hex(4)}"
        used = [
            place.parents[_CONTROLLERS[limit]]
            for limit, _value in limits.items()
            if place.enforces(limit)
        ]
        made = cls(place)
        try:
            for parent in dict.fromkeys(used):
                path = parent / name
                path.mkdir(mode=0o755)
                made.dirs.append(path)
            made._write_limits(limits)
        except BaseException:
            made.remove()
            raise
        return made

    def _dir(self, controller: str) -> Path:
        """The directory of *controller* (made for a limit it enforces)."""
        found = self._find(controller)
        assert found is not None
        return found

    def _find(self, controller: str) -> Path | None:
        parent = self.place.parents.get(controller)
        return next((d for d in self.dirs if d.parent == parent), None)

    def _write_limits(self, limits: Limits) -> None:
        v2 = self.place.version == 2
        if limits.memory is not None and self.place.enforces("memory"):
            memory = self._dir("memory")
            if v2:
                _write(memory / "memory.max", limits.memory)
                _write(memory / "memory.swap.max", 0, optional=True)
            else:
                _write(memory / "memory.limit_in_bytes", limits.memory)
                # Memory and swap together (present where swap is accounted): no swapping
                # past the limit instead of being stopped at it.
                _write(memory / "memory.memsw.limit_in_bytes", limits.memory, optional=True)
        if limits.pids is not None and self.place.enforces("pids"):
            _write(self._dir("pids") / "pids.max", limits.pids)
        if limits.cpus is not None and self.place.enforces("cpus"):
            quota = max(1000, round(limits.cpus * _CFS_PERIOD))
            cpu = self._dir("cpu")
            if v2:
                _write(cpu / "cpu.max", f"{quota} {_CFS_PERIOD}")
            else:
                _write(cpu / "cpu.cfs_period_us", _CFS_PERIOD)
                _write(cpu / "cpu.cfs_quota_us", quota)

    @property
    def procs_files(self) -> list[str]:
        """The files the kernel's first process writes its pid to, to enter the cgroups."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def oom_kills(self) -> int:
        """Processes the out-of-memory killer has killed in this cgroup (0 if unknown)."""
        memory = self._find("memory")
        if memory is None:
            return 0
        name = "memory.events" if self.place.version == 2 else "memory.oom_control"
        return _counter(memory / name, "oom_kill")

    def pids_refused(self) -> int:
        """Forks refused at the ``pids`` limit (0 if unknown)."""
        pids = self._find("pids")
        return 0 if pids is None else _counter(pids / "pids.events", "max")

    def remove(self) -> bool:
        """Kill whatever is still in the cgroups, then remove them. Returns whether all are
        gone. A process killed here is gone once the OS has reaped it; an empty cgroup can be
        removed at once, so the removal is tried at most a few times, over at most a second
        (only a process stuck in the OS kernel takes longer)."""
        left = []
        for path in self.dirs:
            if not _remove_dir(path):
                left.append(path)
        self.dirs = left
        return not left


def _remove_dir(path: Path) -> bool:
    deadline = time.monotonic() + 1.0
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        # Processes are left (those of a sandbox sharing the host's pid namespace, or one
        # still being torn down): kill them. The cgroup file system tells nothing when it
        # empties (v1), so it is asked again, briefly.
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def _write(path: Path, value: object, *, optional: bool = False) -> None:
    try:
        path.write_text(str(value))
    except FileNotFoundError:
        if not optional:
            raise


def _counter(path: Path, name: str) -> int:
    """The counter *name* of a cgroup's ``key value`` lines file, or 0."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0
