"""``DockerProvisioner``: a kernel in a container, through the engine's command-line client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from traitlets import Bool, Dict, Enum, Float, List, Unicode

from ..._errors import LaunchError, ProvisionerError, ProvisionerInfoError
from ...connection import (
    PORT_NAMES,
    ConnectionInfo,
    new_connection_info,
    release_connection_info,
    validate_connection_info,
    write_connection_file,
)
from ...connection._ports import hold_ports
from .. import _guardian
from .._base import KILL_WAIT_TIME, KernelProvisionerBase, check_kernel_id
from .._command import bad_launch_arguments, pop_env
from .._encryption import ENCRYPTION_POLICIES, curve_keys_for_launch
from .._limits import format_limit, parse_limits
from .._process import UNKNOWN_EXIT_STATUS
from ._config import NETWORKS, ContainerConfig, check_config
from ._engine import (
    LABEL_KERNEL,
    LABEL_OWNER,
    RUNTIME_PREFIX,
    engine_env,
    owner_label,
    reason_of,
    remove_runtime_dir,
    remove_stale_containers,
    run_engine,
)

__all__ = ["DockerProvisioner"]

# Variables of the caller's ``env`` passed into the container: those Jupyter servers set for
# their kernels. The rest of this process's environment stays out.
_FORWARDED_ENV = re.compile(r"^(JPY_|KERNEL_)")
_CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")
_FIELD = re.compile(r"\{connection_file\}")
#: How many times a ``wait`` client that fails (the engine restarting) is run again.
_WAIT_ATTEMPTS = 3
# Engines whose stale containers were looked for by this process (once each).
_swept: set[tuple[str, ...]] = set()


class DockerProvisioner(KernelProvisionerBase):
    """Runs the kernel in a container, with Docker's or Podman's command-line client.

    The container is created (``run -d``) with a cid file and labels naming the kernel and
    this process, and with the kernel's runtime directory (its connection file, and its ipc
    sockets with ``network: none``) bind-mounted at the same path. A ``wait`` client per
    container is the local handle of the kernel: its end, with the exit status, is the
    kernel's, noticed as it happens; nothing polls. A kernel ended by one of its limits (the
    out-of-memory killer at its memory limit, its cpu_time or file_size rlimit) says so in
    :attr:`end_reason` and :attr:`end_limit`, which a kernel manager puts in its events.

    The container is removed (``rm -f``) in every ending: at :meth:`cleanup`, when the launch
    fails or is cancelled, and, when this process dies without cleaning up, by its guardian.
    Containers whose owner is gone are removed at the first launch on each engine (and by
    ``kernel-nursery kernels --remove-stale --engine docker``).

    Configure it in a kernel spec's ``metadata.kernel_provisioner`` (``provisioner_name``
    ``docker``); see the containers page of the documentation.

    .. versionadded:: 0.1
    """

    command = Unicode("docker", config=True, help="The engine's client: docker or podman.")
    command_args = List(
        Unicode(),
        config=True,
        help="Global options of the client, before its subcommand (e.g. ['--host', "
        "'unix:///run/docker.sock'], or Podman's ['--runtime', 'runc']).",
    )
    image = Unicode("", config=True, help="The image to run the kernel in (required).")
    argv = List(
        Unicode(),
        config=True,
        help="The kernel's command inside the container ({connection_file} is replaced by the "
        "connection file's path); the spec's argv by default.",
    )
    mounts = List(
        Unicode(),
        config=True,
        help="Host paths bind-mounted into the container, each 'SOURCE:TARGET[:ro|rw]'.",
    )
    env = Dict(
        value_trait=Unicode(),
        config=True,
        help="Environment variables for the kernel, on top of the spec's env (this process's "
        "own environment does not enter the container).",
    )
    workdir = Unicode("", config=True, help="The kernel's working directory inside.")
    user = Unicode("", config=True, help="The user (name or uid[:gid]) the kernel runs as.")
    limits = Dict(
        {},
        config=True,
        help="Resource limits, in the vocabulary the confining provisioners share: memory "
        "('512m', '1g'; swap included), pids, cpus, cpu_time (seconds, '5m'), file_size "
        "('10m'), open_files. See the containers page.",
    )
    network = Enum(
        NETWORKS,
        default_value="host",
        config=True,
        help="'host': the kernel binds the host's loopback; 'none': no network, the ipc "
        "transport through the runtime directory; 'published': the engine's bridge, with "
        "the ports published on 127.0.0.1 only (and CurveZMQ as transport_encryption says).",
    )
    init = Bool(
        True,
        config=True,
        help="Run an init process (--init) as the container's process 1: it passes signals on "
        "to the kernel and reaps what the kernel starts.",
    )
    engine_args = List(Unicode(), config=True, help="More options for the engine's run command.")
    independent = Bool(
        False,
        config=True,
        help="Whether the container may outlive this process (for a hand-over through "
        "get_provisioner_info/load_provisioner_info): no guardian, no owner label.",
    )
    launch_timeout = Float(
        120.0, config=True, help="Seconds the engine may take to create and start the container."
    )
    transport_encryption = Enum(
        ENCRYPTION_POLICIES,
        default_value="auto",
        config=True,
        help="CurveZMQ for the kernel's ports: 'auto' encrypts with network 'published' (the "
        "ports are reachable on the bridge), 'required' always, 'disabled' never.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config: ContainerConfig | None = None
        self._directory: Path | None = None  # the runtime directory, kept across restarts
        self._cid: str | None = None  # the container's id
        self._waiter: anyio.abc.Process | None = None  # the `wait` client
        self._status: int | None = None
        self._last_status: int | None = None
        self._owns_ports = False
        self._guard_token: int | None = None
        self._launching = False
        self._wait_lock = anyio.Lock()
        self._wait_output = b""  # what the `wait` client printed so far

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._cid is not None

    @property
    def container_id(self) -> str | None:
        """The container's id, or ``None`` before launch and after cleanup."""
        return self._cid

    async def poll(self) -> int | None:
        """``None`` while the container runs; its exit status once it has exited (as the engine
        reports it: 137 for a kernel killed by SIGKILL, 0 when no kernel was ever launched).
        Never waits for the kernel (only, once it has ended, for the engine's last word)."""
        if self._cid is None:
            return self._last_status if self._last_status is not None else 0
        if self._status is None and self._waiter is not None and self._waiter.returncode is None:
            return None
        return await self.wait()

    async def wait(self) -> int | None:
        """Wait until the container has exited and return its exit status (as :meth:`poll`).

        Awaits the ``wait`` client's answer, which the engine gives when the container ends.
        If that client fails (the engine restarting), the engine is asked once whether the
        container still runs, and a new client waits; a container that cannot be found any
        more has :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`. Cancelling it
        affects only this waiter."""
        if self._cid is None:
            return await self.poll()
        async with self._wait_lock:
            attempts = 0
            while self._status is None:
                status = await self._await_waiter()
                attempts += 1
                if status is None and attempts < _WAIT_ATTEMPTS and await self._still_running():
                    await self._start_waiter()
                    continue
                self._status = UNKNOWN_EXIT_STATUS if status is None else status
                await self._find_end_reason()
        self._last_status = self._status
        return self._status

    async def _await_waiter(self) -> int | None:
        """The exit status the ``wait`` client prints (kept as it comes: a waiter cancelled
        meanwhile loses nothing), or ``None`` when it failed. Hold the wait lock."""
        waiter = self._waiter
        if waiter is None:
            return None
        assert waiter.stdout is not None
        try:
            async for chunk in waiter.stdout:
                self._wait_output += chunk
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        await waiter.wait()
        text, self._wait_output = self._wait_output.decode(errors="replace").strip(), b""
        return int(text) if waiter.returncode == 0 and text.isdigit() else None

    async def _still_running(self) -> bool:
        assert self._config is not None
        assert self._cid is not None
        result = await run_engine(
            self._config.command, "inspect", "--format", "{{.State.Running}}", self._cid
        )
        return result.returncode == 0 and result.stdout.strip() == "true"

    async def _find_end_reason(self) -> None:
        """Whether a limit ended the kernel: a SIGKILL with a memory limit set (was it the OOM
        killer? only then is the engine asked, one ``inspect``), SIGXCPU with cpu_time set,
        SIGXFSZ with file_size set (the exit status of the init process, 128 + the signal)."""
        config, status = self._config, self._status
        if config is None or status is None or self._cid is None:
            return
        limits, limit, reason = config.limits, None, ""
        if status == 128 + signal.SIGKILL and limits.memory is not None:
            result = await run_engine(
                config.command, "inspect", "--format", "{{.State.OOMKilled}}", self._cid
            )
            if result.stdout.strip() == "true":
                limit, reason = "memory", "killed by the out-of-memory killer at its memory limit"
        elif status == 128 + signal.SIGXCPU and limits.cpu_time is not None:
            limit, reason = "cpu_time", "stopped (SIGXCPU) at its cpu_time limit"
        elif status == 128 + signal.SIGXFSZ and limits.file_size is not None:
            limit, reason = "file_size", "stopped (SIGXFSZ) at its file_size limit"
        if limit is not None:
            reason = f"{reason} of {format_limit(limit, getattr(limits, limit))}"
            self.log.warning("Kernel %s was %s", self.kernel_id, reason)
            self.end_reason, self.end_limit = reason, limit

    # ------------------------------------------------------------------ signals

    async def send_signal(self, signum: int) -> None:
        """Send *signum* to the kernel (``kill --signal``; with :attr:`init` the init process
        passes it on to the kernel). Nothing happens when the container has exited."""
        try:
            name = signal.Signals(signum).name
        except ValueError:
            raise ProvisionerError(f"unknown signal number {signum}") from None
        await self._engine_to_running("kill", "--signal", name)

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the container: the kernel and every process in it."""
        await self._engine_to_running("kill", "--signal", "SIGKILL")

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM to the kernel (``kill --signal SIGTERM``): the engine's ``stop``, with the
        manager's escalation in place of the engine's timer. The manager then waits its
        shutdown wait time for the container's end, and kills it if it has not come; so
        this returns at once, and the wait is the manager's, bounded by its settings."""
        await self._engine_to_running("kill", "--signal", "SIGTERM")

    async def _engine_to_running(self, *args: str) -> None:
        """``COMMAND ARGS CID`` for a running container, bounded (a hung engine is logged).
        Cancelling it ends the client: the signal was then sent or not, never half."""
        config, cid = self._config, self._cid
        if config is None or cid is None or self._status is not None:
            return
        try:
            await run_engine(config.command, *args, cid, seconds=KILL_WAIT_TIME)
        except ProvisionerError as exc:
            self.log.warning("Kernel %s: %s", self.kernel_id, exc)

    # ------------------------------------------------------------------ launch

    def _checked_config(self) -> ContainerConfig:
        return check_config(
            command=self.command,
            command_args=self.command_args,
            image=self.image,
            mounts=self.mounts,
            env=self.env,
            workdir=self.workdir,
            user=self.user,
            limits=parse_limits(self.limits, where="DockerProvisioner.limits"),
            network=self.network,
            init=self.init,
            engine_args=self.engine_args,
        )

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check the configuration, make the runtime directory, reserve the ports (or ipc
        endpoints), write the connection file and build the kernel's command.

        The kernel's environment is the spec's ``env``, :attr:`env`, and the ``JPY_*`` and
        ``KERNEL_*`` variables of the ``env`` given; nothing else of this process's. ``cwd``
        is ignored (use :attr:`workdir`). At the first launch on each engine, containers of
        owners that have ended are removed.

        Cancelled, it leaves nothing: the directory is removed and the ports released.

        Raises:
            ProvisionerConfigError: a setting is missing or wrong (one line naming it).
            ProvisionerError: there is no kernel spec.
            InvalidKernelIdError: the kernel id cannot name files.
        """
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError("DockerProvisioner needs a kernel_spec to launch a kernel")
        config = self._checked_config()
        if not self.kernel_id:
            self.kernel_id = str(uuid.uuid4())
        check_kernel_id(self.kernel_id)
        kwargs = dict(kwargs)
        extra_arguments = [str(a) for a in kwargs.pop("extra_arguments", None) or ()]
        given_env = pop_env(kwargs)
        kwargs.pop("cwd", None)
        self._config = config
        await self._sweep_once(config)
        try:
            path = await self._prepare_files(config)
            cmd = [_FIELD.sub(str(path), a) for a in self.argv or spec.argv] + extra_arguments
            result = await super().pre_launch(cmd=cmd, env={}, **kwargs)
        except BaseException:
            with anyio.CancelScope(shield=True):  # bounded: a directory of a few files
                await self._release()
            raise
        env = dict(result["env"])
        for name, value in (given_env or {}).items():
            if isinstance(name, str) and isinstance(value, str) and _FORWARDED_ENV.match(name):
                env[name] = value
        env.update(self.env)
        result["env"] = env
        return result

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        env.pop("JPY_PARENT_PID", None)  # a pid of this host means nothing inside

    async def _sweep_once(self, config: ContainerConfig) -> None:
        """Remove the containers of ended owners, once per engine and process (a failure is
        only logged: the launch then says whether the engine works)."""
        key = tuple(config.command)
        if key in _swept:
            return
        _swept.add(key)
        try:
            removed = await remove_stale_containers(config.command)
        except ProvisionerError as exc:
            self.log.warning("Cannot look for stale kernel containers: %s", exc)
            return
        if removed:
            self.log.warning("Removed %d stale kernel container(s): %s", len(removed), removed)

    async def _prepare_files(self, config: ContainerConfig) -> Path:
        """The runtime directory (kept across restarts), the connection info (the host's
        view) and the connection file (the kernel's view); returns the file's path."""
        spec = self.kernel_spec
        assert spec is not None
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix=RUNTIME_PREFIX))  # 0700
        if self.connection_info:
            info = validate_connection_info(self.connection_info)
        else:
            if config.network == "none":
                info = new_connection_info(
                    transport="ipc", ip=str(self._directory / "kernel"), kernel_name=spec.name
                )
            else:
                curve = curve_keys_for_launch(
                    self.transport_encryption,
                    spec=spec,
                    transport="tcp",
                    ip="0.0.0.0" if config.network == "published" else "127.0.0.1",  # noqa: S104
                )
                info = new_connection_info(ip="127.0.0.1", kernel_name=spec.name)
                info = validate_connection_info({**info, **curve})
            self._owns_ports = True
            self.connection_info = dict(info)
        inside = dict(info)
        if config.network == "published":
            inside["ip"] = "0.0.0.0"  # noqa: S104  (the container's own interfaces: see docs)
        path = self._directory / "kernel.json"
        checked = validate_connection_info(inside)
        await anyio.to_thread.run_sync(write_connection_file, checked, path)
        return path

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Create and start the container, and start the ``wait`` client that stands for it;
        return the connection info (loopback or ipc, as seen from this host).

        Returns once the engine has started the container (not yet ready: the manager waits
        for that). If this raises or is cancelled, nothing is left: a container the engine
        created is removed (a cancelled ``run`` client is first given
        :data:`~kernel_nursery.provisioning.KILL_WAIT_TIME` to finish, so that the container it
        asked for is known and can be removed), and, unless a restart keeps them, the
        ports and runtime directory are released.

        Raises:
            LaunchError: the engine could not create or start the container (no such image,
                a command not found inside...), or the client cannot be run; the message
                gives the engine's last line. Or an argument or environment variable holds
                what no OS takes (a NUL byte, '=' in a name).
            ProvisionerError: this provisioner already runs a kernel.
        """
        if self._launching or (self._cid is not None and await self.poll() is None):
            raise ProvisionerError(
                f"kernel {self.kernel_id} is still running; stop it before launching again"
            )
        self._launching = True
        try:
            await self._launch(list(cmd), kwargs)
        finally:
            self._launching = False
        self.log.debug("Launched kernel %s in container %s", self.kernel_id, self._cid)
        return validate_connection_info(self.connection_info)

    async def _launch(self, cmd: list[str], kwargs: dict[str, Any]) -> None:
        config, directory = self._config, self._directory
        if config is None or directory is None:
            raise ProvisionerError("launch_kernel() needs pre_launch() first")
        env = dict(kwargs.get("env") or {})
        problem = bad_launch_arguments(cmd, env, None)
        if problem is not None:  # what the OS would refuse, named, before anything runs
            raise LaunchError(f"cannot start kernel {self.kernel_id}: {problem}", argv=cmd)
        if self._cid is not None:
            with anyio.CancelScope(shield=True):  # bounded: each engine call is
                await self._remove_container()  # the previous (restarted) kernel's
        cid_file = directory / "cid"
        cid_file.unlink(missing_ok=True)  # the client refuses an existing one
        self.end_reason = self.end_limit = None
        self._status = None
        info = validate_connection_info(self.connection_info)
        owner = "independent" if self.independent else owner_label()
        argv = config.run_argv(
            cid_file=str(cid_file),
            kernel_id=str(self.kernel_id),
            owner=owner,
            directory=str(directory),
            ports=[info[name] for name in PORT_NAMES] if info["transport"] == "tcp" else [],
            env_names=sorted(env),
        )
        argv += cmd
        try:
            if not self.independent:
                await self._guard(cid_file, directory)
            self._cid = await self._run(argv, env, cid_file)
            await self._start_waiter()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if self._cid is None:
                    self._cid = await self._find_by_labels(owner)
                await self._remove_container()
                await self._release()
            raise

    async def _find_by_labels(self, owner: str) -> str | None:
        """The container this launch created, found by its labels, when its id is not known
        (the ``run`` client was killed before it wrote the cid file). Bounded; ``None`` when
        there is none, or the engine cannot say."""
        config = self._config
        assert config is not None
        try:
            result = await run_engine(
                config.command,
                *("ps", "-aq", "--no-trunc", "--filter", f"label={LABEL_KERNEL}={self.kernel_id}"),
                *("--filter", f"label={LABEL_OWNER}={owner}"),
            )
        except ProvisionerError:
            return None
        found = [cid for cid in result.stdout.split() if _CONTAINER_ID.fullmatch(cid)]
        return found[0] if found else None

    async def _run(self, argv: list[str], env: dict[str, str], cid_file: Path) -> str:
        """Run ``run -d`` to its end; return the container's id. On failure or cancellation
        the container (if the engine made one) is left for the caller to remove: its id is
        read from the cid file into :attr:`_cid` first."""
        client_env = {**os.environ, **env}
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=client_env,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(
                f"cannot run the container engine's client {argv[0]!r}: {exc.strerror or exc}",
                argv=argv,
            ) from exc
        async with process:
            try:
                with anyio.fail_after(self.launch_timeout):
                    stdout, stderr = await _communicate(process)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await _end_client(process)
                    self._cid = await _read_cid(cid_file)
                raise
        if process.returncode != 0:
            self._cid = await _read_cid(cid_file)
            reason = reason_of(stderr.decode(errors="replace"))
            raise LaunchError(
                f"cannot start kernel {self.kernel_id} in a container of {self.image}: "
                + (reason or f"exit status {process.returncode}"),
                argv=argv,
            )
        cid = stdout.decode(errors="replace").strip().splitlines()[-1:]
        if not cid or not _CONTAINER_ID.fullmatch(cid[0]):
            self._cid = await _read_cid(cid_file)
            raise LaunchError(f"the engine answered {cid!r:.80}, not a container id", argv=argv)
        return cid[0]

    async def _start_waiter(self) -> None:
        config, cid = self._config, self._cid
        assert config is not None
        assert cid is not None
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            with anyio.CancelScope(shield=True):
                await _end_client(waiter)
        argv = [*config.command, "wait", cid]
        self._wait_output = b""
        # Spawning is quick (fork and exec) and shielded: a cancelled spawn would leave a client
        # we have no handle on.
        with anyio.CancelScope(shield=True):
            try:
                self._waiter = await anyio.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as exc:
                raise LaunchError(
                    f"cannot run {argv[0]!r} wait: {exc.strerror or exc}", argv=argv
                ) from exc

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, restart: bool = False) -> None:
        """Remove the container (``rm -f``: stopped first if it still runs), end the ``wait``
        client, and unless *restart* release the ports and remove the runtime directory (with
        the connection file). Shielded from cancellation and bounded (about 15 s at worst:
        see ``_remove_container``)."""
        with anyio.CancelScope(shield=True):
            await self._remove_container()
            if restart:
                info = self.connection_info
                if self._owns_ports and info and info.get("transport") == "tcp":
                    hold_ports(transport="tcp", ip=info["ip"], ports=[info[n] for n in PORT_NAMES])
            else:
                await self._release()

    async def _remove_container(self) -> None:
        """``rm -f`` the container, take the ``wait`` client's answer and end it, let the
        guardian go. Shielded by the caller; each of its three steps is bounded by
        :data:`KILL_WAIT_TIME`, so it ends within three times that (15 s, the budget a kernel
        manager gives ``cleanup`` with its default settings).

        A container the engine could not remove (it is down, restarting) stays registered with
        this process's guardian, with its runtime directory (which holds its cid file): the
        guardian removes both when this process ends; a restart gets a new directory."""
        cid, config = self._cid, self._config
        removed = True
        if cid is not None and config is not None:
            removed = await self._rm(config, cid)
            if self._waiter is not None and self._status is None:
                with anyio.move_on_after(KILL_WAIT_TIME):
                    await self.wait()  # the client answers as the container goes
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            await _end_client(waiter, grace=0)  # it was given its time just above
        if self._status is not None:
            self._last_status = self._status
        self._cid = None
        token, self._guard_token = self._guard_token, None
        if removed and token is not None:
            _guardian.unregister(token, log=self.log)
        elif token is not None:
            self.log.warning(
                "Kernel %s: container %s is left to this process's guardian", self.kernel_id, cid
            )
            self._directory = None  # the guardian's now (it holds the cid file)

    async def _rm(self, config: ContainerConfig, cid: str) -> bool:
        """``rm -f`` (bounded); whether the container is gone."""
        try:
            result = await run_engine(config.command, "rm", "-f", cid, seconds=KILL_WAIT_TIME)
        except ProvisionerError as exc:
            reason = str(exc)
        else:
            if not result.returncode or "no such container" in result.stderr.lower():
                return True
            reason = result.last_line()
        self.log.error("Kernel %s: cannot remove container %s: %s", self.kernel_id, cid, reason)
        return False

    async def _release(self) -> None:
        """Release the ports and remove the runtime directory (in a worker thread, not
        abandoned: a cancellation is delivered once it is gone). Bounded: a few files."""
        if self._owns_ports and self.connection_info:
            release_connection_info(validate_connection_info(self.connection_info))
            self._owns_ports = False
            self.connection_info = {}
        directory, self._directory = self._directory, None
        if directory is not None:
            await anyio.to_thread.run_sync(remove_runtime_dir, str(directory))

    async def _guard(self, cid_file: Path, directory: Path) -> None:
        """Register the container (by its cid file) and its runtime directory with this
        process's guardian, without blocking the event loop (the first registration starts
        the guardian: see :func:`~kernel_nursery.provisioning._guardian.register_off_loop`)."""
        config = self._config
        assert config is not None

        def guard() -> None:
            self._guard_token = _guardian.register_container(
                config.command,
                env=engine_env(),
                cid_file=str(cid_file),
                directory=str(directory),
                log=self.log,
            )

        await _guardian.register_off_loop(guard)

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """The base info plus the ``container_id``, the engine's ``command`` and the
        ``runtime_dir`` that holds the connection file."""
        info = await super().get_provisioner_info()
        info.update(
            {
                "container_id": self._cid,
                "command": None if self._config is None else list(self._config.command),
                "runtime_dir": None if self._directory is None else str(self._directory),
            }
        )
        return info

    async def release(self) -> dict[str, Any]:
        """Hand the running container over: let go of it so that it outlives this provisioner
        and this process, and return what another process needs to take it over with
        :meth:`load_provisioner_info` (:meth:`get_provisioner_info`).

        Only for an :attr:`independent` container (no guardian watches it, and its owner label
        is none, so no stale sweep removes it). The ``wait`` client is ended and the runtime
        directory (with the connection file) left to the new owner, who removes it at its own
        cleanup; the ports reserved here are released for this process (the kernel keeps them
        bound). Afterwards this provisioner manages no kernel.

        Not for a provisioner a :class:`~kernel_nursery.KernelManager` runs: its supervisor
        would take the kernel for dead. Shielded and bounded.

        Raises:
            ProvisionerError: no container runs, or it is not independent.

        .. versionadded:: 0.1
        """
        if self._cid is None or self._status is not None or self._launching:
            raise ProvisionerError("no running container to hand over")
        if not self.independent:
            raise ProvisionerError(
                "only an independent container can be handed over (set independent: true)"
            )
        info = await self.get_provisioner_info()
        with anyio.CancelScope(shield=True):
            waiter, self._waiter = self._waiter, None
            if waiter is not None:
                waiter.kill()
                await _end_client(waiter)
        self._cid = None
        self._status = self._last_status = UNKNOWN_EXIT_STATUS
        self._directory = None  # the new owner's now
        if self._owns_ports and self.connection_info:
            release_connection_info(validate_connection_info(self.connection_info))
            self._owns_ports = False
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the container described by *provisioner_info*, possibly saved by another
        process: this provisioner, configured for the same engine, waits for it, signals it and
        removes it at :meth:`cleanup`; unless :attr:`independent`, this process's guardian
        removes it if this process dies. The runtime directory becomes this provisioner's.

        The container must be one of ours for that kernel (its kernel-id label), or nothing is
        done. Launch it with ``independent=True`` and hand it over with :meth:`release`:
        otherwise the launching process removes it at its cleanup, or its guardian when it
        ends.

        Raises:
            ProvisionerError: this provisioner already manages a kernel.
            ProvisionerInfoError: ``container_id`` is not a container id, the engine knows no
                such container, or the container is not this kernel's.
            ProvisionerConfigError: the configuration is wrong.
        """
        if self._cid is not None or self._launching:
            raise ProvisionerError("this provisioner already manages a kernel")
        cid = provisioner_info.get("container_id")
        if not isinstance(cid, str) or not _CONTAINER_ID.fullmatch(cid):
            raise ProvisionerInfoError(f"container_id {cid!r:.80} is not a container id")
        config = self._checked_config()
        await super().load_provisioner_info(provisioner_info)
        result = await run_engine(
            config.command,
            "inspect",
            "--format",
            f'{{{{index .Config.Labels "{LABEL_KERNEL}"}}}} '
            f'{{{{index .Config.Labels "{LABEL_OWNER}"}}}}',
            cid,
        )
        labels = result.stdout.split()
        if result.returncode or len(labels) != 2 or labels[0] != self.kernel_id:
            raise ProvisionerInfoError(
                f"container {cid:.12} is not kernel {self.kernel_id}'s: "
                + (result.last_line() if result.returncode else "its labels differ")
            )
        self._config = config
        directory = provisioner_info.get("runtime_dir")
        if isinstance(directory, str) and Path(directory).name.startswith(RUNTIME_PREFIX):
            self._directory = Path(directory)
        self._cid = cid
        self._status = None
        self.end_reason = self.end_limit = None
        try:
            if not self.independent and self._directory is not None:
                cid_file = self._directory / "cid"
                await anyio.Path(cid_file).write_text(cid)  # the guardian reads it
                await self._guard(cid_file, self._directory)
            await self._start_waiter()
        except BaseException:  # not taken over: let go of it, untouched
            self._cid = None
            self._directory = None
            token, self._guard_token = self._guard_token, None
            if token is not None:
                _guardian.unregister(token, log=self.log)
            raise


async def _communicate(process: anyio.abc.Process) -> tuple[bytes, bytes]:
    """Both outputs of a short-lived client, and its exit."""
    chunks: dict[str, bytes] = {"out": b"", "err": b""}

    async def drain(name: str, stream: anyio.abc.ByteReceiveStream | None) -> None:
        if stream is not None:
            async for chunk in stream:
                chunks[name] += chunk

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, "out", process.stdout)
        tg.start_soon(drain, "err", process.stderr)
    await process.wait()
    return chunks["out"], chunks["err"]


async def _end_client(process: anyio.abc.Process, *, grace: float = KILL_WAIT_TIME) -> None:
    """Give a client *grace* seconds to end by itself (what it asked for then happens in
    full), then kill it and wait up to :data:`KILL_WAIT_TIME`. The caller shields it."""
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()
        with anyio.move_on_after(KILL_WAIT_TIME):
            await process.wait()
    await process.aclose()


async def _read_cid(cid_file: Path) -> str | None:
    """The id the client wrote to *cid_file*, or ``None`` (nothing created)."""
    try:
        text = await anyio.Path(cid_file).read_text()
    except OSError:
        return None
    text = text.strip()
    return text if _CONTAINER_ID.fullmatch(text) else None
