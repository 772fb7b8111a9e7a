"""``LocalProvisioner``: the default provisioner, running the kernel as a local process."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import zmq
from traitlets import Bool, Enum, Float, Unicode

from ..._errors import (
    ConnectionFileError,
    LaunchError,
    ProvisionerError,
    ProvisionerInfoError,
    launch_os_error,
)
from ..._kernelspec import KernelSpec
from ...connection import (
    PORT_NAMES,
    ConnectionInfo,
    Transport,
    connection_file_path,
    new_connection_info,
    new_key,
    release_connection_info,
    remove_connection_file,
    runtime_dir,
    validate_connection_info,
    write_connection_file,
)
from ...connection._ports import hold_ports
from ...wire import Session
from .. import _guardian
from .._base import KILL_WAIT_TIME, KernelProvisionerBase, check_kernel_id
from .._command import bad_launch_arguments, format_kernel_cmd
from .._encryption import ENCRYPTION_POLICIES, curve_keys_for_launch
from .._handshake import Registration, race_exit
from .._process import (
    UNKNOWN_EXIT_STATUS,
    AdoptedProcess,
    ChildProcess,
    ProcessHandle,
    process_start_time,
    wait_for_group_exit,
)
from .._takeover import info_path, info_pid, info_start_time
from .._windows import create_interrupt_event, send_interrupt

__all__ = ["LocalProvisioner"]

# Keywords that pre_launch() produces or managers pass along and that are not for the process.
_NOT_FOR_PROCESS = frozenset({"extra_arguments", "kernel_id", "kernel_name", "cmd"})


class LocalProvisioner(KernelProvisionerBase):
    """Runs the kernel as a child process of this one: the default provisioner.

    - :meth:`pre_launch` reserves five ports (or ipc endpoints), writes the connection file
      (mode 0600, in Jupyter's runtime directory unless :attr:`connection_file` says otherwise)
      and builds the command from the kernel spec.
    - :meth:`launch_kernel` starts it with :func:`anyio.open_process` in a new session, so the
      kernel leads its own process group and signals reach the whole group (the kernel and what
      it started). Standard input is ``/dev/null``; standard output and error are inherited
      unless ``stdout=``/``stderr=`` are passed: the kernel never blocks on a pipe nobody reads.
    - :meth:`poll` answers at once from the exit status the OS reported; :meth:`wait` awaits the
      exit itself (many waiters may wait); neither sleeps.
    - :meth:`cleanup` kills anything left in the kernel's process group, reaps the kernel, and
      unless ``restart`` removes the connection file and releases the ports.
    - :meth:`get_provisioner_info` / :meth:`load_provisioner_info` let another process take the
      running kernel over: it can poll, wait for, signal and kill it (Linux, through a pidfd).
    - Unless :attr:`independent`, the kernel does not outlive this process, even if it is
      killed outright (SIGKILL, the OOM killer): the kernel's environment has
      ``JPY_PARENT_PID`` (kernels such as ipykernel exit when that process goes), and on Linux
      this process's guardian, a small watchdog process, then stops the kernel's process group
      (SIGTERM, SIGKILL after 2 s) and removes its connection file.

    Subclass it to customise how local kernels run (the command, the environment).

    .. versionadded:: 0.1
    """

    transport = Enum(
        ["tcp", "ipc"],
        default_value="tcp",
        config=True,
        help="Transport of the kernel's sockets: 'tcp' (loopback by default) or 'ipc' "
        "(Unix domain sockets in the runtime directory).",
    )
    ip = Unicode(
        "",
        config=True,
        help="For tcp, the address the kernel binds (default 127.0.0.1). For ipc, the path "
        "prefix of its endpoints (default <runtime dir>/kernel-<first 8 characters of the "
        "kernel id>-ipc).",
    )
    connection_file = Unicode(
        "",
        config=True,
        help="Where to write the connection file; default <runtime dir>/kernel-<kernel id>.json.",
    )
    independent = Bool(
        False,
        config=True,
        help="Whether the kernel may outlive the process that launched (or adopted) it. By "
        "default it may not: it gets JPY_PARENT_PID (kernels such as ipykernel exit when that "
        "process goes), and on Linux a guardian process stops its process group and removes "
        "its connection file if that process dies without cleaning up, even by SIGKILL. Set "
        "it for a kernel another process will take over (get_provisioner_info / "
        "load_provisioner_info) or that must outlive its launcher; an inherited JPY_PARENT_PID "
        "is then removed from its environment.",
    )

    transport_encryption = Enum(
        list(ENCRYPTION_POLICIES),
        default_value=ENCRYPTION_POLICIES[0],
        config=True,
        help="CurveZMQ encryption of the kernel's channels (keys made at launch, written in "
        "the connection file as jupyter_client does). 'auto': for a kernel whose spec declares "
        "'curve' in metadata.supported_encryption, and for a tcp kernel listening beyond "
        "loopback unless its spec declares it without 'curve'; others in clear. 'required': "
        "for every kernel; a spec that rules it out is refused. "
        "'disabled': never. A kernel that ignores the keys fails readiness at once with "
        "TransportEncryptionError.",
    )

    kernel_handshake = Bool(
        False,
        config=True,
        help="Start tcp kernels whose spec declares kernel_protocol_version 5.5 or later with "
        "the handshake of JEP 66: the connection file holds a registration_port instead of "
        "ports, the kernel binds ports of its own choosing and reports them on that socket, so "
        "no port is chosen by one process and bound by another. Off by default: ipykernel 7.4 "
        "declares 5.5 but implements no handshake. Kernels whose spec does not declare it get "
        "ports as usual.",
    )
    handshake_timeout = Float(
        60.0,
        config=True,
        help="Seconds a kernel started with the handshake (kernel_handshake) has to register "
        "its ports before the launch fails with LaunchError.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._registration: Registration | None = None  # open from pre_launch to registration
        self._registration_info: dict[str, Any] = {}  # what the kernel's connection file held
        self._registration_session: Session | None = None  # kept across restarts (replays)
        self._process: ProcessHandle | None = None
        self._pgid: int | None = None
        self._last_status: int | None = None
        self._owns_ports = False  # the ports in connection_info were reserved by this provisioner
        self._written_file: Path | None = None  # the connection file this provisioner wrote
        self._interrupt_event: int | None = None  # Windows only
        self._guard_token: int | None = None  # the kernel's registration with the guardian

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """The kernel's process id, or ``None`` before launch and after cleanup."""
        return None if self._process is None else self._process.pid

    @property
    def pgid(self) -> int | None:
        """The kernel's process group (its own pid: it leads a new session), or ``None``."""
        return self._pgid if self._process is not None else None

    async def poll(self) -> int | None:
        """``None`` while the kernel runs; its exit status (negative: killed by that signal) once
        it has exited; ``0`` when no kernel was ever launched. For an adopted kernel the status is
        :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`. Never waits."""
        if self._process is None:
            return self._last_status if self._last_status is not None else 0
        status = self._process.returncode
        if status is not None:
            self._last_status = status
        return status

    async def wait(self) -> int | None:
        """Wait for the kernel to exit and return its exit status (as :meth:`poll`).

        Returns at once when there is no process. Cancelling it leaves the kernel untouched.
        """
        if self._process is None:
            return await self.poll()
        status = await self._process.wait()
        self._last_status = status
        return status

    # ------------------------------------------------------------------ signals

    async def send_signal(self, signum: int) -> None:
        """Send *signum* to the kernel's process group, or to the kernel alone when the group is
        gone. Nothing happens when the kernel has exited or was never launched.

        On Windows, ``SIGINT`` sets the kernel's interrupt event instead (untested here).
        """
        self._signal(signum)

    def _signal(self, signum: int) -> None:
        """:meth:`send_signal`'s work, which never blocks; what :meth:`cleanup` uses, so that a
        subclass's hook that hangs or raises cannot keep the cleanup from its end."""
        process = self._process
        if process is None:
            return
        if sys.platform == "win32":
            if signum == signal.SIGINT and self._interrupt_event is not None:
                send_interrupt(self._interrupt_event)
                return
        elif self._pgid is not None and process.group_is_ours:
            try:
                os.killpg(self._pgid, signum)
                return
            except ProcessLookupError:
                pass  # the group is empty, or (adopted kernel) was never ours to see
            except PermissionError:
                self.log.debug("No permission to signal process group %s", self._pgid)
        process.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the kernel's process group: the kernel and every process it started in it.
        (A process that left the group with ``setsid`` is out of reach, as with Jupyter.)"""
        await self.send_signal(getattr(signal, "SIGKILL", signal.SIGTERM))

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM to the kernel's process group."""
        await self.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Reserve ports, write the connection file and build the command.

        Keyword arguments understood here: ``extra_arguments`` (appended to the command) and
        ``env``/``cwd`` (passed on to :meth:`launch_kernel`); any others are passed on as they
        are. When :attr:`connection_info` is already set (a restart, or info given by the
        manager) it is reused as it is, ports and key included. A kernel started with the
        handshake (:attr:`kernel_handshake`) gets a new registration socket instead, and keeps
        its key; a new kernel gets Curve keys as :attr:`transport_encryption` says.

        Returns the keyword arguments for :meth:`launch_kernel`, with ``cmd``.

        The connection file is written in a worker thread. Cancelled meanwhile, this lets the
        thread finish, then removes the file and releases the ports: nothing is left.

        Raises:
            ProvisionerError: there is no kernel spec.
            InvalidKernelIdError: the kernel id holds what a file name must not (it names the
                connection file): a ``/``, a comma, white space...
            PortAllocationError: no ports could be reserved (nothing is left reserved).
            ConnectionFileError: the connection file cannot be written: a configured
                :attr:`connection_file` must be in an existing directory this process may write
                and must not be a directory. The message names the path; nothing is created and
                the ports are released. (A :class:`ConnectionFileError` rather than a
                :class:`ProvisionerConfigError`, which is about a kernel spec's provisioner
                config: the path may come from any configuration, and the file is at fault.)
        """
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError("LocalProvisioner needs a kernel_spec to launch a kernel")
        if not self.kernel_id:
            self.kernel_id = str(uuid.uuid4())
        check_kernel_id(self.kernel_id)  # it names files, here or remotely
        kwargs = dict(kwargs)
        extra_arguments = list(kwargs.pop("extra_arguments", None) or ())
        info = self._connection_info_for_launch(spec)
        try:
            # Disk work, in a worker thread. Not abandoned on cancellation: the thread records
            # the file it wrote, and the cancellation, delivered once it returns, removes it.
            path = await anyio.to_thread.run_sync(self._write_connection_file, info)
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            self._release(remove_file=True)
            raise
        self.connection_file = str(path)
        try:
            cmd = format_kernel_cmd(
                spec.argv,
                substitutions={
                    "connection_file": str(path),
                    "resource_dir": spec.resource_dir,
                    "prefix": sys.prefix,
                },
                extra_arguments=extra_arguments,
            )
            return await super().pre_launch(cmd=cmd, **kwargs)
        except BaseException:
            self._release(remove_file=True)
            raise

    def _connection_info_for_launch(self, spec: KernelSpec) -> ConnectionInfo:
        """What the launched kernel's connection file holds: a new registration socket's
        (the handshake), the :attr:`connection_info` already set, or new ports (reserved
        here) and key, with Curve keys as :attr:`transport_encryption` says.

        Raises:
            ProvisionerError: the registration socket cannot be bound.
            PortAllocationError: no ports could be reserved (nothing is left reserved).
        """
        registering = self._open_registration(spec)
        if registering is not None:
            return cast(ConnectionInfo, registering)
        if self.connection_info:
            return validate_connection_info(self.connection_info)
        transport: Transport = "ipc" if self.transport == "ipc" else "tcp"
        ip = self.ip or self._default_ip()
        curve = curve_keys_for_launch(
            self.transport_encryption, spec=spec, transport=transport, ip=ip
        )
        info = new_connection_info(transport=transport, ip=ip, kernel_name=spec.name)
        info = validate_connection_info({**info, **curve})
        self._owns_ports = True
        self.connection_info = dict(info)
        return info

    def _write_connection_file(self, info: ConnectionInfo) -> Path:
        """Write the connection file where :attr:`connection_file` says (by default in the
        runtime directory) and record it; runs in a worker thread.

        Raises:
            ConnectionFileError: it cannot be written (nothing is created then).
        """
        path = (
            Path(self.connection_file)
            if self.connection_file
            else connection_file_path(self.kernel_id or "")
        )
        try:
            if self.connection_file:
                # Checked before writing: write_connection_file would create the missing
                # directories, or a temporary file beside a target it cannot replace.
                _check_connection_file_target(path)
            self._written_file = write_connection_file(info, path)
        except OSError as exc:
            raise ConnectionFileError(
                f"cannot write the connection file: {exc.strerror or exc}", path=path
            ) from exc
        return path

    def _default_ip(self) -> str:
        if self.transport == "ipc":
            # Short, because a Unix socket path may not exceed ~107 bytes; the endpoint numbers
            # keep two kernels with the same id prefix apart.
            return str(runtime_dir() / f"kernel-{(self.kernel_id or '')[:8]}-ipc")
        return "127.0.0.1"

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        if self.independent:
            # One inherited from a process that is itself a kernel would tie this one to it.
            env.pop("JPY_PARENT_PID", None)
        else:
            env["JPY_PARENT_PID"] = str(os.getpid())
        if sys.platform == "win32":
            self._interrupt_event = create_interrupt_event()
            env["JPY_INTERRUPT_EVENT"] = str(self._interrupt_event)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Start the kernel process and return its connection info.

        Accepts the keywords :meth:`pre_launch` returned, and ``stdin``/``stdout``/``stderr`` as
        for :func:`anyio.open_process`. *cmd* is always run directly, never by a shell.

        If this raises, or is cancelled, nothing is left behind: a process that was started is
        killed and reaped, and the connection file and ports are released.

        A tcp kernel that listens beyond loopback (``ip`` ``0.0.0.0`` or any other address)
        gets one warning in the log per launch: its messages are not encrypted.

        Unless :attr:`independent`, the kernel is registered with this process's guardian (see
        the class's description): one small write to a pipe, and at the first launch the start
        of the guardian, which is not waited for; both in a worker thread, which a cancellation
        lets finish (the registration is then undone as the kernel is reaped).

        *cmd*, ``env`` and ``cwd`` are checked before anything is spawned: every argument, and
        every environment variable's name and value, must be text that the OS can take (no NUL
        byte, no ``=`` or empty name).

        A kernel started with the handshake (:attr:`kernel_handshake`) is awaited until it
        registers its ports (at most :attr:`handshake_timeout`); the connection info returned
        and the connection file then hold them.

        Raises:
            LaunchError: the program cannot be run (not found, not executable, bad ``cwd``), an
                argument, environment variable or ``cwd`` is invalid (the message names it), or
                the spawn failed in any other way (the original exception is its cause), or a
                kernel started with the handshake exited or did not register in time (it is
                killed and reaped). The connection file and ports are released; an exception
                that is not an :class:`Exception` (cancellation, ``KeyboardInterrupt``)
                propagates as itself, after the same release.
            ProvisionerError: this provisioner already runs a kernel.
        """
        if self._process is not None and self._process.returncode is None:
            raise ProvisionerError(
                f"kernel {self.kernel_id} is still running; stop it before launching again"
            )
        if self._process is not None:
            await self._reap(restart=True)  # the previous (restarted) kernel's handle
        try:
            argv = _checked_command(cmd)
            options = _ProcessOptions.from_kwargs(kwargs, argv, self.log)
        except LaunchError:
            self._release(remove_file=True)
            raise
        process = await self._spawn(argv, options)
        await self._hold(process)
        self.log.debug("Launched kernel %s as pid %s: %s", self.kernel_id, process.pid, argv)
        if self._registration is not None:
            await self._complete_registration(argv)
        info = validate_connection_info(self.connection_info)
        self._warn_if_exposed(info)
        return info

    async def _hold(self, process: anyio.abc.Process) -> None:
        """Make the process just spawned this provisioner's kernel, and register it with the
        guardian. Cancelled or failing, the kernel is stopped and everything released (shielded)
        before the error propagates."""
        self._process = ChildProcess(process)
        self._pgid = process.pid if sys.platform != "win32" else None
        self._last_status = None
        try:
            await self._guard_soon()
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            await self.cleanup(restart=False)  # shielded: kill, reap, release
            raise

    def _platform_options(self) -> dict[str, Any]:
        """How the process is started on this platform: a new session (its own process
        group) on POSIX; a new process group and the interrupt event on Windows."""
        options: dict[str, Any] = {}
        if sys.platform == "win32":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
            if self._interrupt_event is not None:
                startupinfo = subprocess.STARTUPINFO()
                startupinfo.lpAttributeList = {"handle_list": [self._interrupt_event]}
                options["startupinfo"] = startupinfo
        else:
            options["start_new_session"] = True
        return options

    async def _spawn(self, argv: list[str], options: _ProcessOptions) -> anyio.abc.Process:
        """Start the process, shielded; on any failure release the file and ports.

        The spawn is shielded: cancelled inside it, asyncio would kill the child but leave it
        unreaped, and we would have no handle to clean up. Spawning is bounded (fork + exec),
        and a cancellation that arrived meanwhile is delivered by the caller, with our handle.

        Raises:
            LaunchError: the spawn failed (the original exception is its cause).
        """
        with anyio.CancelScope(shield=True):  # a spawn (fork + exec) is not cancelled
            try:
                process = await anyio.open_process(
                    argv,
                    stdin=options.stdin,
                    stdout=options.stdout,
                    stderr=options.stderr,
                    cwd=options.cwd,
                    env=options.env,
                    **self._platform_options(),
                )
            except OSError as exc:
                self._release(remove_file=True)
                message = _launch_failure(argv, options.cwd, exc)
                raise launch_os_error(message, argv=argv, cause=exc) from exc
            except (ValueError, TypeError) as exc:
                # What the checks before the spawn did not foresee (the platform's own limits).
                self._release(remove_file=True)
                raise LaunchError(
                    f"cannot start kernel {argv[0]!r}: invalid launch argument: {exc}", argv=argv
                ) from exc
            except Exception as exc:
                self._release(remove_file=True)
                raise LaunchError(
                    f"cannot start kernel {argv[0]!r}: {type(exc).__name__}: {exc}", argv=argv
                ) from exc
            except BaseException:
                self._release(remove_file=True)
                raise
        return process

    def _warn_if_exposed(self, info: ConnectionInfo) -> None:
        """One warning when a tcp kernel listens beyond loopback in clear: its messages are
        readable on the network path."""
        if (
            info["transport"] == "tcp"
            and not _is_loopback(info["ip"])
            and "curve_publickey" not in info
        ):
            self.log.warning(
                "Kernel %s listens on %s, beyond loopback: its messages travel unencrypted, "
                "signed only with the connection file's key, and anyone on the network path "
                "can read them.",
                self.kernel_id,
                info["ip"],
            )

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, restart: bool = False) -> None:
        """Make sure nothing of the kernel remains, then release its resources.

        Anything still in the kernel's process group is sent SIGKILL (the kernel itself, if it
        still runs, and processes it left behind), and the kernel is reaped, waiting at most
        :data:`~kernel_nursery.provisioning.KILL_WAIT_TIME`. Unless *restart*, the connection
        file is removed and the ports are released; with *restart* they are kept for the next
        launch, and held against other kernel-nursery processes until it has bound them. Runs
        shielded from cancellation, so it always completes.
        """
        # Bounded: the kill is a signal, the waits have KILL_WAIT_TIME, aclose() waits for nothing.
        with anyio.CancelScope(shield=True):
            await self._reap(restart)
            if not restart:
                self._release(remove_file=True)
            elif self._owns_ports and self.connection_info:
                info = validate_connection_info(self.connection_info)
                hold_ports(
                    transport=info["transport"],
                    ip=info["ip"],
                    ports=[info[name] for name in PORT_NAMES],
                )

    async def _reap(self, restart: bool) -> None:
        """SIGKILL what is left of the kernel's group, then await the kernel and the group."""
        process = self._process
        if process is None:
            return
        # Decided before the kill: afterwards an adopted kernel no longer vouches for its group.
        group = self._pgid if process.group_is_ours else None
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
        with anyio.move_on_after(KILL_WAIT_TIME):
            # Usually the exit has been seen already (a shutdown awaited it): then its status
            # is known, and waiting again would only cost trio two checkpoints (its wait takes
            # a lock first), on every shutdown.
            status = process.returncode
            self._last_status = status if status is not None else await process.wait()
            if group is not None:
                await wait_for_group_exit(group)
        if process.returncode is None:
            self.log.error(
                "Kernel %s (pid %s) did not exit after SIGKILL", self.kernel_id, process.pid
            )
        await process.aclose()
        self._process = None
        self._unguard()

    def _release(self, *, remove_file: bool) -> None:
        """Release ports and remove the connection file; idempotent."""
        self._close_registration()
        if self._owns_ports and self.connection_info:
            release_connection_info(validate_connection_info(self.connection_info))
            self._owns_ports = False
            self.connection_info = {}
        if remove_file and self._written_file is not None:
            remove_connection_file(self._written_file)
            self._written_file = None

    # ------------------------------------------------------------------ the handshake

    def _open_registration(self, spec: KernelSpec) -> dict[str, Any] | None:
        """For a kernel to start with the handshake (JEP 66): open its registration socket
        and return what its connection file holds. ``None`` for the others.

        The key and Curve keys of an earlier launch (a restart) are kept; its ports are not:
        the kernel chooses new ones.

        Raises:
            ProvisionerError: the registration socket cannot be bound.
        """
        if not (self.kernel_handshake and spec.supports_handshake and self.transport == "tcp"):
            return None
        old = dict(self.connection_info or {})
        ip = self.ip or self._default_ip()
        curve: dict[str, str] = {
            k: str(old[k]) for k in ("curve_publickey", "curve_secretkey") if k in old
        }
        if not old:
            curve = curve_keys_for_launch(
                self.transport_encryption, spec=spec, transport="tcp", ip=ip
            )
        key = old.get("key") or new_key()
        scheme = old.get("signature_scheme") or "hmac-sha256"
        self._release(remove_file=False)
        try:
            session = self._registration_session
            if session is None or session.key != key.encode("utf-8"):
                session = Session(key=key, signature_scheme=scheme)
            self._registration = Registration.open(ip=ip, session=session)
            self._registration_session = session
        except zmq.ZMQError as exc:
            raise ProvisionerError(f"cannot open a registration socket on {ip}: {exc}") from exc
        self.connection_info = {}
        self._registration_info = {
            "transport": "tcp",
            "ip": ip,
            "registration_port": self._registration.port,
            "key": key,
            "signature_scheme": scheme,
            "kernel_name": spec.name,
            **curve,
        }
        return dict(self._registration_info)

    async def _complete_registration(self, argv: list[str]) -> None:
        """Await the launched kernel's registration (bounded by :attr:`handshake_timeout`,
        and ended by its exit); then its connection info is complete and its file rewritten
        with the ports. On any failure or cancellation the kernel is stopped and everything
        released (shielded) before the error propagates.

        Raises:
            LaunchError: the kernel exited, or did not register in time.
        """
        registration, process = self._registration, self._process
        assert registration is not None
        assert process is not None
        ports: dict[str, int] | None = None
        try:
            with anyio.move_on_after(self.handshake_timeout) as scope:
                ports = await race_exit(registration, process.wait)
            if ports is None:
                problem = (
                    f"did not register its ports within {self.handshake_timeout:g} s "
                    "(LocalProvisioner.handshake_timeout)"
                    if scope.cancelled_caught
                    else f"exited with status {process.returncode} before it registered its ports"
                )
                raise LaunchError(
                    f"kernel {argv[0]!r}, started with the handshake its spec declares, "
                    f"{problem}; set LocalProvisioner.kernel_handshake=False to give it ports",
                    argv=argv,
                )
            info = validate_connection_info({**self._registration_info, **ports})
            self.connection_info = dict(info)
            if self._written_file is not None:
                # In a worker thread, not abandoned on cancellation: an abandoned one could
                # write the file again after the cleanup below removed it.
                await anyio.to_thread.run_sync(write_connection_file, info, self._written_file)
        except BaseException:
            await self.cleanup(restart=False)
            raise
        finally:
            self._close_registration()

    def _close_registration(self) -> None:
        registration, self._registration = self._registration, None
        if registration is not None:
            registration.close()

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """The base info plus ``pid``, ``pgid``, ``start_time`` (to tell the kernel from a later
        process with the same pid) and ``connection_file``. Plain JSON data."""
        info = await super().get_provisioner_info()
        pid = self.pid
        info.update(
            {
                "pid": pid,
                "pgid": self.pgid,
                "start_time": process_start_time(pid) if pid is not None else None,
                "connection_file": self.connection_file or None,
            }
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the kernel described by *provisioner_info*, which may come from another
        process: afterwards :meth:`poll`, :meth:`wait`, :meth:`send_signal`, :meth:`kill` and
        :meth:`cleanup` act on it. This process becomes responsible for the connection file
        (cleanup removes it); the ports stay reserved by the process that launched the kernel.

        On Linux the kernel is watched through a pidfd. Elsewhere re-attaching is not
        supported and raises :class:`ProvisionerError`.

        Unless this provisioner is :attr:`independent`, the kernel is then tied to this process
        as if launched here: it is stopped if this process dies without cleaning up. For a
        hand-over, launch the kernel with ``independent=True``: otherwise the launching
        process's guardian stops it when that process ends. A kernel that has already exited is
        adopted as exited, with status :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`.

        The info is checked before anything is signalled: ``pid`` and ``pgid`` must be numbers
        above 1 that name neither this process nor its group; a running process must lead the
        group the info names, and be the process the info describes: the same start time
        (``start_time``), or, in info without one (as jupyter_client saves it), a command line
        naming the connection file. A pid found naming another process by its start time is
        taken as the kernel's exit (stale info); other mismatches are refused. The connection
        file named, which cleanup removes, must be gone already or hold the info's key.

        Raises:
            ProvisionerError: this provisioner already manages a process, or the platform has no
                pidfds, or none could be opened (too many open files...).
            ProvisionerInfoError: the info names what cannot be the kernel (see above, or a
                thread rather than a process); nothing is taken over.
            InvalidKernelIdError: the info's kernel id is not one (it names files).
            ConnectionFileError: the saved connection info is invalid.
        """
        if self._process is not None:
            raise ProvisionerError("this provisioner already manages a kernel process")
        pid = info_pid(provisioner_info, "pid")
        pgid = info_pid(provisioner_info, "pgid")
        start_time = info_start_time(provisioner_info, "start_time")
        connection_file = info_path(provisioner_info, "connection_file")
        process = None if pid is None else _adopt(pid, start_time)
        try:
            owned = _check_kernel(process, provisioner_info, pgid, start_time, connection_file)
            await super().load_provisioner_info(provisioner_info)
        except BaseException:
            if process is not None:
                with anyio.CancelScope(shield=True):  # closes a pidfd: waits for nothing
                    await process.aclose()
            raise
        if connection_file:
            self.connection_file = connection_file
            self._written_file = Path(connection_file) if owned else None
        if process is None:
            return
        self._process = process
        self._pgid = pgid
        self._last_status = None
        if process.returncode == UNKNOWN_EXIT_STATUS:
            self.log.info("Kernel %s (pid %s) had already exited", self.kernel_id, pid)
        else:
            await self._guard_soon()  # the start time is read with its pidfd open: the kernel's

    # ------------------------------------------------------------------ the guardian

    async def _guard_soon(self) -> None:
        """:meth:`_guard`, in a worker thread when it may have to start the guardian (a spawn);
        at once when the guardian runs (a read in ``/proc`` and a write to a pipe, cheaper than
        a hand-off to a thread): see
        :func:`~kernel_nursery.provisioning._guardian.register_off_loop`. The thread is not
        abandoned on cancellation: the registration is recorded either way (and undone by
        :meth:`cleanup`); the cancellation is delivered once it returns."""
        if self.independent or not _guardian.SUPPORTED:
            return
        await _guardian.register_off_loop(self._guard)

    def _guard(self) -> None:
        """Register the kernel with this process's guardian, unless it is independent.

        Synchronous: it reads the kernel's start time in ``/proc`` and writes one small line to
        a pipe, but the first registration of the process starts the guardian (a spawn), so
        :meth:`_guard_soon` may run it in a worker thread. The token is recorded here, so that
        whoever awaits that thread cannot lose it, even when cancelled.
        """
        process = self._process
        if self.independent or process is None or not _guardian.SUPPORTED:
            return
        self._guard_token = _guardian.register(
            process.pid,
            pgid=self._pgid if process.group_is_ours else None,
            start_time=process_start_time(process.pid),
            connection_file=None if self._written_file is None else str(self._written_file),
            log=self.log,
            **self._guardian_cleanup(),
        )

    def _guardian_cleanup(self) -> dict[str, Any]:
        """What else the guardian removes if this process dies without cleaning up: keywords
        of ``_guardian.register`` (``cgroups``, ``tree``). Nothing here; a subclass that makes
        more for its kernel (the sandbox: a cgroup, a folder) names it."""
        return {}

    def _unguard(self) -> None:
        """The kernel was reaped: the guardian must forget it (its pid may be reused)."""
        token, self._guard_token = self._guard_token, None
        if token is not None:
            _guardian.unregister(token, log=self.log)


def _checked_command(cmd: object) -> list[str]:
    """*cmd* as a list of strings, checked at run time too (callers are not all type-checked).

    Raises:
        LaunchError: it is not a non-empty list of strings and paths.
    """
    if (
        not isinstance(cmd, list | tuple)
        or not cmd
        or not all(isinstance(a, str | os.PathLike) for a in cmd)
    ):
        raise LaunchError(
            f"the kernel command must be a non-empty list of strings, got {cmd!r}",
            argv=[str(a) for a in cmd] if isinstance(cmd, list | tuple) else [str(cmd)],
        )
    return [os.fspath(a) for a in cmd]


@dataclass(frozen=True, kw_only=True)
class _ProcessOptions:
    """What ``launch_kernel``'s keywords ask of the process, checked."""

    env: Mapping[str, str] | None
    cwd: str | bytes | os.PathLike[Any] | None
    stdin: Any
    stdout: Any
    stderr: Any

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], argv: list[str], log: Any) -> _ProcessOptions:
        """Take the process's options from *kwargs*; others are logged and ignored.

        Raises:
            LaunchError: an argument of *argv*, ``env`` or ``cwd`` cannot be given to the OS
                (the message names it).
        """
        options = {k: v for k, v in kwargs.items() if k not in _NOT_FOR_PROCESS}
        env = options.pop("env", None)
        cwd = options.pop("cwd", None)
        problem = bad_launch_arguments(argv, env, cwd)
        if problem is not None:
            raise LaunchError(f"cannot start kernel: {problem}", argv=argv)
        made = cls(
            env=env,
            cwd=cwd,
            stdin=options.pop("stdin", subprocess.DEVNULL),
            stdout=options.pop("stdout", None),
            stderr=options.pop("stderr", None),
        )
        if options:
            log.debug("LocalProvisioner ignores launch options %s", sorted(options))
        return made


def _launch_failure(argv: list[str], cwd: object, exc: OSError) -> str:
    program = argv[0]
    if isinstance(exc, FileNotFoundError) and cwd is not None and not os.path.isdir(str(cwd)):
        return f"cannot start kernel: working directory {cwd!s} does not exist"
    if isinstance(exc, FileNotFoundError):
        return f"cannot start kernel: program {program!r} not found" + (
            "" if os.sep in program else " on PATH"
        )
    if isinstance(exc, PermissionError):
        return f"cannot start kernel: program {program!r} is not executable ({exc.strerror})"
    return f"cannot start kernel {program!r}: {exc.strerror or exc}"


def _is_loopback(host: str) -> bool:
    """Whether a kernel bound to *host* can be reached from this machine only. (A tcp
    connection info's ``ip`` is always an IP address: validate_connection_info checks it.)"""
    return ipaddress.ip_address(host).is_loopback


def _check_connection_file_target(path: Path) -> None:
    """Refuse a connection file path that cannot be written, before anything is created.

    Raises:
        ConnectionFileError: the parent is missing, not a directory or not writable, or the
            path is a directory.
    """
    parent = path.parent
    if not parent.exists():
        problem = f"its directory {parent} does not exist"
    elif not parent.is_dir():
        problem = f"{parent} is not a directory"
    elif path.is_dir():
        problem = "it is a directory"
    elif not os.access(parent, os.W_OK | os.X_OK):
        problem = f"its directory {parent} is not writable"
    else:
        return
    raise ConnectionFileError(f"cannot write the connection file: {problem}", path=path)


def _adopt(pid: int, start_time: int | None) -> AdoptedProcess:
    """A handle on the process *pid* of take-over info, through a pidfd (see
    :meth:`AdoptedProcess.adopt`); one that has exited already is adopted as exited.

    Raises:
        ProvisionerError: the platform has no pidfds, or none could be opened.
        ProvisionerInfoError: *pid* names a thread, not a process.
    """
    try:
        return AdoptedProcess.adopt(pid, start_time)
    except NotImplementedError as exc:
        raise ProvisionerError(str(exc)) from exc
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise ProvisionerError(f"cannot take over pid {pid}: {exc.strerror or exc}") from None
        # pidfd_open refuses a thread that leads no process (ENOENT, or EINVAL before
        # Linux 6.9).
        raise ProvisionerInfoError(
            f"cannot take over pid {pid}: it names a thread, not a process"
        ) from None


def _check_kernel(
    process: AdoptedProcess | None,
    info: dict[str, Any],
    pgid: int | None,
    start_time: int | None,
    connection_file: str | None,
) -> bool:
    """Check that what take-over *info* names is the kernel's: the running *process* (see
    :func:`_not_the_kernel`) and the connection file, which cleanup removes. Returns whether
    that file is there to be removed (see :func:`_kernel_file`).

    Raises:
        ProvisionerInfoError: either is not the kernel's.
    """
    if process is not None and process.returncode is None:
        # The pidfd is open: until it is closed, the pid names this process.
        problem = _not_the_kernel(process.pid, pgid, start_time, connection_file)
        if problem is not None:
            raise ProvisionerInfoError(f"cannot take over pid {process.pid}: {problem}")
    if not connection_file:
        return False
    # Cleanup removes it: it must be the kernel's, not any file the info names.
    saved = info.get("connection_info") or {}
    key = saved.get("key") if isinstance(saved, dict) else None
    return _kernel_file(connection_file, key)


def _not_the_kernel(
    pid: int, pgid: int | None, start_time: int | None, connection_file: str | None
) -> str | None:
    """Why the running process *pid* cannot be told to be the kernel the info describes, or
    ``None``. Call it with a pidfd open on *pid* (the number cannot change hands meanwhile).
    Reads ``/proc`` (Linux, as pidfds): a few small files, no thread needed."""
    try:
        actual = os.getpgid(pid)
    except ProcessLookupError:
        return None  # exited just now: nothing will be signalled
    if pgid is not None and actual != pgid:
        return f"it is in process group {actual}, not {pgid} as the info says"
    if pgid is not None and pgid != pid:
        # A kernel leads its own group (ours and jupyter_client's start a session): signalling
        # a group it does not lead would reach whatever else is in it.
        return f"it does not lead process group {pgid}, as a kernel leads its own"
    if start_time is not None:
        return None  # checked at adoption: the process the info was saved for
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        argv = []
    if connection_file and any(_names_file(arg, os.fsencode(connection_file)) for arg in argv):
        return None
    return (
        "the info has no start_time, and the process's command line does not name the "
        "connection file: it cannot be told from another process that got the kernel's pid"
    )


def _names_file(arg: bytes, path: bytes) -> bool:
    """Whether the command-line argument *arg* gives the file *path*: the whole argument
    (``-f PATH``) or the value of an option (``--f=PATH``), not a mere part of one."""
    return arg == path or arg.endswith(b"=" + path)


# Twin of _scripts/ssh_remote.py _holds_key, which does the same read on the remote host and
# cannot import this module.
def _kernel_file(path: str, key: object) -> bool:
    """Whether the connection file *path* named by take-over info is there to be removed at
    cleanup: ``False`` when it is gone already. Read without blocking (a FIFO named there
    cannot hang us) and at most 64 KiB: cheap, as any connection file read.

    Raises:
        ProvisionerInfoError: something else is there: not a regular file, not JSON, or not
            holding the key of the info's connection info.
    """
    not_its_file = ProvisionerInfoError(
        f"cannot take over a kernel: {path} is not its connection file (not a regular "
        "JSON file holding the info's key): it would be removed at cleanup"
    )
    try:
        # Looked at before it is opened: opening a FIFO or a device has effects of its own (a
        # writer blocked on the FIFO goes on, a tape rewinds...).
        before = os.stat(path)
        if not stat.S_ISREG(before.st_mode):
            raise not_its_file
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ProvisionerInfoError(
            f"cannot take over a kernel: its connection file {path} cannot be read "
            f"({exc.strerror or exc})"
        ) from None
    try:
        found_stat = os.fstat(fd)
        # The file looked at, still (not replaced by something else meanwhile).
        regular = stat.S_ISREG(found_stat.st_mode) and (found_stat.st_dev, found_stat.st_ino) == (
            before.st_dev,
            before.st_ino,
        )
        data = os.read(fd, 65536) if regular else b""
    finally:
        os.close(fd)
    try:
        found = json.loads(data) if regular else None
    except ValueError:
        found = None
    if not (isinstance(found, dict) and isinstance(key, str) and found.get("key") == key):
        raise not_its_file
    return True
