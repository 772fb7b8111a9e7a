"""``SandboxProvisioner``: a local kernel confined by bubblewrap, with resource limits."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from traitlets import Bool, Dict, Enum, List, Unicode, validate

from ..._errors import LaunchError, ProvisionerConfigError, ProvisionerError
from ...connection import ConnectionInfo, runtime_dir
from .._base import check_kernel_id
from .._limits import Limits, format_limit, parse_limits
from ..local import LocalProvisioner
from ._cgroup import PREFIX, Cgroup, CgroupPlace, find_cgroup_place
from ._command import (
    DEFAULT_SYSTEM,
    ENTER_FAILED,
    HOME,
    Mount,
    SandboxCommand,
    interpreter_paths,
    system_mounts,
)

__all__ = ["SandboxProvisioner"]

#: Environment variables a sandboxed kernel gets from the launching process by default.
DEFAULT_ENV_KEEP = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ")
#: Limits enforced by rlimits (through ``prlimit``) whatever the cgroups, and how.
_RLIMITS = {
    "cpu_time": "rlimit CPU (per process)",
    "file_size": "rlimit FSIZE",
    "open_files": "rlimit NOFILE (per process)",
}
_UNSET = object()


class SandboxProvisioner(LocalProvisioner):
    """Runs the kernel as a local process confined by `bubblewrap <https://github.com/
    containers/bubblewrap>`_ (``bwrap``), with resource limits, and no daemon.

    By default the kernel sees a read-only system limited to what it needs (the system's
    programs and libraries, a few files of ``/etc``, and its interpreter's prefix), a private
    writable folder as its home and working directory (``/home/kernel``, made for it and
    removed with it), a private ``/tmp``, no network (it is reached over ``ipc`` sockets in a
    folder of its own), its own pid, ipc and uts namespaces, no capabilities, and a new session;
    it dies with its launcher. Each of these can be opened deliberately (see the traits).

    Limits (``memory``, ``pids``, ``cpu_time``, ``cpus``, ``file_size``, ``open_files``, the
    vocabulary shared with the container provisioner) are enforced through a cgroup where one
    can be made (v1, or a delegated v2 subtree) and through rlimits otherwise; which limit is
    enforced how is logged at launch and given by :meth:`get_provisioner_info`, and a limit that
    cannot be enforced here fails the launch unless :attr:`require_limits` is off. A kernel
    ended by a limit says so in :attr:`end_limit` and :attr:`end_reason`, which a kernel manager
    passes on in its ``dead`` (or ``restarting``) event.

    Nothing outlives the kernel's owner: the cgroup is removed when the kernel is reaped, the
    folder (unless restarting) at cleanup, and if the managing process dies without cleaning
    up, its guardian kills the kernel and removes both.

    Linux only. Taking a sandboxed kernel over from another process
    (:meth:`load_provisioner_info`) and :attr:`independent` kernels are not supported.

    .. versionadded:: 0.1
    """

    transport = Enum(
        ["tcp", "ipc"],
        default_value="ipc",
        config=True,
        help="Transport of the kernel's sockets. With network 'none' it is always 'ipc' "
        "(Unix sockets in the kernel's own folder; a 'tcp' passed on by a kernel manager is "
        "overridden); with network 'host', 'tcp' (loopback by default) or 'ipc'.",
    )
    network = Enum(
        ["none", "host"],
        default_value="none",
        config=True,
        help="The kernel's network: 'none' (a network namespace of its own, with nothing "
        "but its own loopback: it reaches nothing, and is reached over ipc sockets) or "
        "'host' (the host's network: it can connect anywhere the host can).",
    )
    limits = Dict(
        {},
        config=True,
        help="Resource limits: memory ('512m', '1g'), pids, cpu_time (seconds, '5m'), cpus, "
        "file_size ('10m'), open_files. See the limits' vocabulary in the docs.",
    )
    require_limits = Bool(
        True,
        config=True,
        help="Refuse to launch (ProvisionerConfigError) when a limit cannot be enforced on "
        "this machine (no usable cgroup for memory, pids or cpus). Off: the kernel runs "
        "without it, with a warning in the log.",
    )
    limit_enforcement = Enum(
        ["auto", "cgroup", "rlimit"],
        default_value="auto",
        config=True,
        help="How memory, pids and cpus are enforced: 'auto' (a cgroup where one can be made, "
        "rlimits otherwise), 'cgroup' (fail where none can be made), 'rlimit' (never a "
        "cgroup: memory becomes an address-space rlimit; pids and cpus cannot be enforced).",
    )
    cgroup_parent = Unicode(
        "",
        config=True,
        help="A delegated cgroup v2 directory to make the kernels' cgroups in. Empty: this "
        "process's own cgroups on a v1 system, the root of a v2 system where writable.",
    )
    system_paths = List(
        Unicode(),
        default_value=list(DEFAULT_SYSTEM),
        config=True,
        help="What of the system the kernel sees, read-only, where it exists (a symbolic "
        "link stays one). Replaces the default list; use read_only to add to it.",
    )
    read_only = List(
        Unicode(),
        config=True,
        help="More host paths the kernel sees read-only: 'PATH' (at the same path) or "
        "'SOURCE:TARGET'.",
    )
    writable = List(
        Unicode(),
        config=True,
        help="Host paths the kernel may write: 'PATH' or 'SOURCE:TARGET'.",
    )
    work_dir = Unicode(
        "",
        config=True,
        help="A host folder to show as the kernel's home and working directory "
        f"({HOME}), writable, and left in place. Empty: a private folder made for the "
        "kernel and removed with it.",
    )
    env_keep = List(
        Unicode(),
        default_value=list(DEFAULT_ENV_KEEP),
        config=True,
        help="Environment variables the kernel gets from the launching environment; the "
        "kernel spec's env is always given, the rest is dropped (HOME and TMPDIR are set "
        "for the sandbox).",
    )
    share_namespaces = List(
        Enum(["pid", "ipc", "uts"]),
        config=True,
        help="Namespaces the kernel shares with the host instead of having its own: 'pid' "
        "(it sees the host's processes), 'ipc', 'uts' (host name).",
    )
    die_with_parent = Bool(
        True,
        config=True,
        help="Pass bwrap --die-with-parent where it means 'dies with the launching process' "
        "(asyncio: processes start from the event loop's thread); under trio processes start "
        "from worker threads, whose exit would kill the kernel, so it is not passed and the "
        "guardian alone covers the launcher's death.",
    )
    bwrap = Unicode("bwrap", config=True, help="The bubblewrap program (name or path).")
    bwrap_args = List(
        Unicode(),
        config=True,
        help="More bwrap options, placed after the provisioner's own (before the command).",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._folder: Path | None = None  # kn-sandbox-*: home/ (unless work_dir) and run/
        self._place: Any = _UNSET  # where cgroups can be made (CgroupPlace | None), once found
        self._cgroup: Cgroup | None = None  # this launch's
        self._command: SandboxCommand | None = None
        self._limits = Limits()
        self._enforced: dict[str, str] = {}  # limit -> how it is enforced
        self._end_noted = True  # the current launch's end has been looked into

    @validate("limits")
    def _check_limits(self, proposal: Any) -> dict[str, Any]:
        parse_limits(proposal["value"], where="SandboxProvisioner.limits")
        return dict(proposal["value"])

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check the configuration, make the kernel's folder (``kn-sandbox-*`` in the runtime
        directory, with ``home/`` and ``run/``), write the connection file in ``run/`` and
        build the command; the rest as :meth:`LocalProvisioner.pre_launch`. ``cwd`` is
        ignored: the kernel works in its home.

        Cancelled or failing, it leaves nothing (the folder is removed).

        Raises:
            ProvisionerConfigError: a bad setting (the message names it), or a limit that
                cannot be enforced here while :attr:`require_limits`.
            LaunchError: ``bwrap`` (or ``prlimit``, for rlimits) is not found.
            ProvisionerError: no kernel spec; and as :meth:`LocalProvisioner.pre_launch`.
        """
        if self.kernel_spec is None:
            raise ProvisionerError("SandboxProvisioner needs a kernel_spec to launch a kernel")
        if self.independent:
            raise ProvisionerConfigError(
                "SandboxProvisioner.independent is not supported: a sandboxed kernel's folder "
                "and cgroup belong to the process that launched it"
            )
        if not self.kernel_id:
            self.kernel_id = str(uuid.uuid4())
        check_kernel_id(self.kernel_id)
        self._limits = parse_limits(self.limits, where="SandboxProvisioner.limits")
        kwargs = dict(kwargs)
        if kwargs.pop("cwd", None) is not None:
            self.log.debug("Kernel %s: cwd ignored: it works in its home", self.kernel_id)
        try:
            # Disk work, in a worker thread. Not abandoned on cancellation: the folder it
            # makes is recorded, and removed below.
            await anyio.to_thread.run_sync(self._prepare, _spawns_from_this_thread())
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._point_connection_at_folder()
            result = await super().pre_launch(**kwargs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._discard(folder=True)
            raise
        self._log_confinement()
        return result

    def _prepare(self, spawns_here: bool) -> None:
        """Find the programs and the cgroups, plan the limits, make the folder, build the
        command (in a worker thread: it looks at the file system). The settings are checked
        before anything is looked for or made."""
        mounts = [
            *_parse_mounts(self.read_only, "read_only"),
            *_parse_mounts(self.writable, "writable", writable=True),
        ]
        work_dir = self._checked_work_dir()
        if self._place is _UNSET:
            self._place = (
                None
                if self.limit_enforcement == "rlimit"
                else find_cgroup_place(self.cgroup_parent)
            )
        self._enforced = self._plan_limits(self._place)
        bwrap = _program(self.bwrap, "bubblewrap (install Debian's 'bubblewrap' package)")
        sh = _program("sh", "a POSIX shell")
        needs_prlimit = any(how.startswith("rlimit") for how in self._enforced.values())
        prlimit = _program("prlimit", "prlimit (util-linux)") if needs_prlimit else None
        if self._folder is None:
            self._folder = _make_folder(self.kernel_id or "", private_home=not work_dir)
        spec = self.kernel_spec
        assert spec is not None
        search_path = os.environ.get("PATH", os.defpath)
        program_mounts = [
            Mount(p, p)
            for p in interpreter_paths(
                spec.argv[0], search_path=search_path, system=self.system_paths
            )
        ]
        if spec.resource_dir and any("{resource_dir}" in a for a in spec.argv):
            program_mounts.append(Mount(spec.resource_dir, spec.resource_dir))
        run = str(self._folder / "run")
        self._command = SandboxCommand(
            bwrap=bwrap,
            sh=sh,
            prlimit=prlimit,
            system=system_mounts(self.system_paths),
            mounts=[*program_mounts, Mount(run, run, writable=True), *mounts],
            home=work_dir or str(self._folder / "home"),
            network=self.network == "host",
            share=frozenset(self.share_namespaces),
            die_with_parent=self.die_with_parent and spawns_here,
            extra_args=list(self.bwrap_args),
        )

    def _checked_work_dir(self) -> str:
        if not self.work_dir:
            return ""
        path = os.path.abspath(self.work_dir)
        if not os.path.isdir(path):
            raise ProvisionerConfigError(
                f"SandboxProvisioner.work_dir {self.work_dir!r:.80} is not a folder"
            )
        return path

    def _plan_limits(self, place: CgroupPlace | None) -> dict[str, str]:
        """How each limit set will be enforced.

        Raises:
            ProvisionerConfigError: one cannot be, and :attr:`require_limits`; or there is no
                cgroup and :attr:`limit_enforcement` is ``cgroup``.
        """
        if place is None and self.limit_enforcement == "cgroup":
            raise ProvisionerConfigError(
                "SandboxProvisioner.limit_enforcement is 'cgroup', but no cgroup can be made "
                "here (no writable cgroup v1 hierarchy or delegated v2 subtree)"
            )
        enforced: dict[str, str] = {}
        missing: list[str] = []
        for name, _value in self._limits.items():
            if name in _RLIMITS:
                enforced[name] = _RLIMITS[name]
            elif place is not None and place.enforces(name):
                enforced[name] = place.describe(name)
            elif name == "memory":
                enforced[name] = "rlimit AS (address space per process)"
            else:
                missing.append(name)
        if missing and self.require_limits:
            raise ProvisionerConfigError(
                f"SandboxProvisioner cannot enforce {', '.join(missing)} here: it needs a "
                "cgroup with that controller; set require_limits=False to run without"
            )
        for name in missing:
            enforced[name] = "not enforced"
        return enforced

    def _point_connection_at_folder(self) -> None:
        """The connection file and ipc sockets go in the kernel's ``run/`` folder, which the
        sandbox shows at the same path."""
        assert self._folder is not None
        run = self._folder / "run"
        self.connection_file = str(run / f"kernel-{self.kernel_id}.json")
        if self.network == "none" or self.transport == "ipc":
            self.transport = "ipc"
            self.ip = str(run / "kernel")

    def _log_confinement(self) -> None:
        """One log line saying how the kernel is confined and limited: never silently none."""
        limits = ", ".join(
            f"{name} {format_limit(name, value)} ({self._enforced[name]})"
            for name, value in self._limits.items()
        )
        level = "warning" if "not enforced" in limits else "info"
        getattr(self.log, level)(
            "Kernel %s is sandboxed: network %s, folder %s, limits: %s",
            self.kernel_id,
            self.network,
            self._folder,
            limits or "none set",
        )

    def _finalize_env(self, env: dict[str, str]) -> None:
        """Only :attr:`env_keep` and the kernel spec's env reach the kernel; ``HOME`` and
        ``TMPDIR`` are the sandbox's. No ``JPY_PARENT_PID``: inside its pid namespace the
        kernel's parent is the namespace's init (pid 1), which ipykernel takes for its
        launcher's death; ``--die-with-parent`` and the guardian tie it to its launcher."""
        super()._finalize_env(env)
        spec_names = set(self.kernel_spec.env) if self.kernel_spec is not None else set()
        kept = {k: v for k, v in env.items() if k in spec_names or k in self.env_keep}
        kept.pop("JPY_PARENT_PID", None)
        # The sandbox's own /tmp, a private tmpfs.
        kept.update({"HOME": HOME, "TMPDIR": "/tmp"})  # noqa: S108
        env.clear()
        env.update(kept)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Make the launch's cgroup, then start the kernel in the sandbox (as
        :meth:`LocalProvisioner.launch_kernel`, with the command wrapped).

        If this raises, or is cancelled, nothing is left: no process, cgroup or folder.

        Raises:
            LaunchError: the cgroup cannot be made; and as
                :meth:`LocalProvisioner.launch_kernel`.
        """
        command = self._command
        if command is None:
            raise ProvisionerError("SandboxProvisioner.launch_kernel needs pre_launch first")
        self.end_reason = self.end_limit = None
        try:
            # Writes to the cgroup file system, in a worker thread; not abandoned on
            # cancellation: the cgroup made is recorded there, and removed below.
            await anyio.to_thread.run_sync(self._make_cgroup)
            await anyio.lowlevel.checkpoint_if_cancelled()
            argv = command.argv(
                cmd,
                cgroup_procs=self._cgroup.procs_files if self._cgroup is not None else (),
                limits=self._limits,
                rlimits=[n for n, how in self._enforced.items() if how.startswith("rlimit")],
            )
            self._end_noted = False
            return await super().launch_kernel(argv, **kwargs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.cleanup(restart=False)
            raise

    def _make_cgroup(self) -> None:
        """This launch's cgroup, when a limit is enforced by one (recorded here, in the
        worker thread that makes it, so that a cancelled caller's cleanup finds it).

        Raises:
            LaunchError: it cannot be made (nothing of it is left).
        """
        place = self._place
        uses = [n for n, how in self._enforced.items() if how.startswith("cgroup")]
        if not uses or not isinstance(place, CgroupPlace):
            return
        try:
            self._cgroup = Cgroup.create(place, self.kernel_id or "", self._limits)
        except OSError as exc:
            raise LaunchError(
                f"cannot make the kernel's cgroup in {place.describe()}: {exc.strerror or exc}",
                argv=[],
            ) from exc

    def _guardian_cleanup(self) -> dict[str, Any]:
        """The guardian also removes the launch's cgroups and the kernel's folder."""
        return {
            "cgroups": [str(d) for d in self._cgroup.dirs] if self._cgroup is not None else [],
            "tree": str(self._folder) if self._folder is not None else None,
        }

    # ------------------------------------------------------------------ signals

    async def send_signal(self, signum: int) -> None:
        """Send *signum* to the kernel inside the sandbox; SIGKILL to the whole process group.

        bwrap itself handles no signal: sent SIGINT or SIGTERM with the group, it would die of
        it and take the sandbox with it, so an interrupt would kill the kernel and a polite
        SIGTERM would give it no time to clean up. Those go to the kernel process alone, found
        under bwrap in ``/proc`` (two small reads). Before the kernel is there, or after it has
        gone, the group gets the signal, as for a local kernel."""
        if signum != signal.SIGKILL:
            kernel = self._kernel_pidfd()
            if kernel is not None:
                try:
                    signal.pidfd_send_signal(kernel, signum)
                    return
                except ProcessLookupError:
                    pass
                finally:
                    os.close(kernel)
        await super().send_signal(signum)

    def _kernel_pidfd(self) -> int | None:
        """A pidfd on the kernel process in the sandbox: bwrap's child (the host's pid
        namespace shared) or grandchild (under the namespace's init), or ``None``."""
        parent = pid = self.pid
        depth = 1 if "pid" in self.share_namespaces else 2
        for _level in range(depth):
            if pid is None:
                return None
            children = _children(pid)
            parent, pid = pid, children[0] if len(children) == 1 else None
        if pid is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        # With the pidfd open the number cannot change hands: still the child found?
        if _children(parent or 0)[:1] != [pid]:
            os.close(pidfd)
            return None
        return pidfd

    # ------------------------------------------------------------------ how it ended

    async def poll(self) -> int | None:
        status = await super().poll()
        if status is not None:
            self._note_end(status)
        return status

    async def wait(self) -> int | None:
        """As :meth:`LocalProvisioner.wait`; once the kernel has exited, :attr:`end_reason`
        and :attr:`end_limit` say whether a limit ended it."""
        status = await super().wait()
        self._note_end(status)
        return status

    def _note_end(self, status: int | None) -> None:
        """Tell, once per launch, whether a limit ended the kernel: SIGKILL with an OOM kill
        counted in its cgroup (memory), SIGXCPU (cpu_time), SIGXFSZ (file_size). bwrap reports
        a kernel killed by signal N as exit status 128 + N. Reads a cgroup file: cheap."""
        if self._end_noted or status is None:
            return
        self._end_noted = True
        signum = -status if status < 0 else status - 128 if 128 < status < 160 else None
        limit: str | None = None
        reason: str | None = None
        if signum == signal.SIGKILL and self._cgroup is not None and self._cgroup.oom_kills():
            limit = "memory"
            reason = "killed by the out-of-memory killer at its memory limit"
        elif signum == signal.SIGXCPU and "cpu_time" in self._enforced:
            limit, reason = "cpu_time", "stopped (SIGXCPU) at its cpu_time limit"
        elif signum == signal.SIGXFSZ and "file_size" in self._enforced:
            limit, reason = "file_size", "stopped (SIGXFSZ) at its file_size limit"
        elif status == ENTER_FAILED and self._cgroup is not None:
            reason = "it could not enter its cgroup"
        if limit is not None:
            value = getattr(self._limits, limit)
            reason = f"{reason} of {format_limit(limit, value)}"
            self.log.warning("Kernel %s was %s", self.kernel_id, reason)
        self.end_reason, self.end_limit = reason, limit

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, restart: bool = False) -> None:
        """As :meth:`LocalProvisioner.cleanup`, then the launch's cgroup is removed (anything
        left in it killed first) and, unless *restart*, the kernel's folder with all it holds
        (a configured :attr:`work_dir` stays). Shielded; the removals run in a worker thread:
        the cgroup's within about a second, the folder's as long as deleting what the kernel
        wrote takes (bounded by what it may write: see ``file_size``)."""
        with anyio.CancelScope(shield=True):
            try:
                await super().cleanup(restart)
            finally:
                await self.poll()  # notes how it ended, if nothing did: the cgroup goes next
                await self._discard(folder=not restart)

    async def _discard(self, *, folder: bool) -> None:
        """Remove the launch's cgroup and, if *folder*, the kernel's folder. Idempotent."""
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None and not await anyio.to_thread.run_sync(cgroup.remove):
            self.log.error("Kernel %s: cgroup %s could not be removed", self.kernel_id, cgroup.dirs)
        path = self._folder
        if folder and path is not None:
            self._folder = None
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
            self._command = None

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """As :meth:`LocalProvisioner.get_provisioner_info`, plus ``sandbox``: the network,
        the folder, the cgroup directories, and each limit with how it is enforced."""
        info = await super().get_provisioner_info()
        info["sandbox"] = {
            "network": self.network,
            "folder": str(self._folder) if self._folder is not None else None,
            "cgroups": [str(d) for d in self._cgroup.dirs] if self._cgroup is not None else [],
            "limits": {
                name: {"value": value, "enforced": self._enforced.get(name, "not enforced")}
                for name, value in self._limits.items()
            },
        }
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Not supported for sandboxed kernels.

        Raises:
            ProvisionerError: always.
        """
        raise ProvisionerError("taking over a sandboxed kernel is not supported")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(child) for child in f.read().split()]
    except (OSError, ValueError):
        return []


def _program(name: str, what: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LaunchError(
            f"cannot start a sandboxed kernel: {name!r} not found; it needs {what}", argv=[name]
        )
    return found


def _parse_mounts(entries: list[str], trait: str, *, writable: bool = False) -> list[Mount]:
    """Mounts from ``PATH`` or ``SOURCE:TARGET`` entries, checked.

    Raises:
        ProvisionerConfigError: a path is not absolute, or the source does not exist.
    """
    mounts = []
    for entry in entries:
        source, _, target = entry.partition(":")
        target = target or source
        where = f"SandboxProvisioner.{trait} entry {entry!r:.80}"
        if not (os.path.isabs(source) and os.path.isabs(target)) or target == "/":
            raise ProvisionerConfigError(
                f"{where}: give an absolute PATH or SOURCE:TARGET (not the root)"
            )
        if not os.path.exists(source):
            raise ProvisionerConfigError(f"{where}: {source} does not exist")
        mounts.append(Mount(os.path.normpath(source), os.path.normpath(target), writable))
    return mounts


def _make_folder(kernel_id: str, *, private_home: bool) -> Path:
    """The kernel's folder (mode 0700), in Jupyter's runtime directory unless its ipc socket
    paths would be too long for a Unix socket address there (then in the temporary
    directory)."""
    base = runtime_dir()
    # <base>/kn-sandbox-<8>-<8 random>/run/kernel-<port>: keep it well under 107 bytes.
    if len(str(base)) > 60:
        base = Path(tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kernel_id[:8]}-", dir=base))
    try:
        (folder / "run").mkdir(mode=0o700)
        if private_home:
            (folder / "home").mkdir(mode=0o700)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _spawns_from_this_thread() -> bool:
    """Whether anyio starts processes from the calling thread: under asyncio yes (the event
    loop's thread), under trio no (a worker thread, which exits when idle, and bwrap's
    --die-with-parent follows the thread, not the process).

    backend-specific: which thread forks decides what --die-with-parent means.
    """
    return anyio.get_cancelled_exc_class().__module__.startswith("asyncio")
