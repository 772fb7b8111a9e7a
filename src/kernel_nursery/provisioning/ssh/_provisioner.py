"""``SSHProvisioner``: a kernel on another host, reached through the OpenSSH client."""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
from traitlets import Bool, Dict, Float, Integer, List, Unicode

from ..._errors import LaunchError, ProvisionerError, ProvisionerInfoError
from ...connection import (
    PORT_NAMES,
    ConnectionInfo,
    new_connection_info,
    release_connection_info,
    reserved_ports,
    validate_connection_info,
)
from .. import _guardian
from .._base import KILL_WAIT_TIME, KernelProvisionerBase, check_kernel_id
from .._command import bad_launch_arguments, pop_env
from .._process import UNKNOWN_EXIT_STATUS, process_start_time, spawn_shielded
from .._takeover import info_path, info_pid, info_start_time
from . import _master
from ._errors import RemoteLaunchError, SSHAuthenticationError, SSHConnectionError, SSHHostKeyError

__all__ = ["SSHProvisioner"]

_SCRIPT = Path(__file__).parents[1] / "_scripts" / "ssh_remote.py"
# Run by the remote Python: reads exactly N bytes (the remote script) from standard input and
# executes them, leaving the rest of standard input (the launch request, then commands) to it.
_BOOT = (
    "import os,sys\n"
    "n=int(sys.argv[1]);b=b''\n"
    "while len(b)<n:\n"
    " c=os.read(0,n-len(b))\n"
    " if not c:sys.exit(2)\n"
    " b+=c\n"
    "exec(compile(b,'kernel-nursery-ssh','exec'))\n"
)
#: Remote ports are chosen here, at random in this range: below the ephemeral ports of Linux
#: and of most systems, so that no outgoing connection on the remote host holds one.
_REMOTE_PORT_RANGE = (10000, 32768)
#: How many sets of remote ports are tried when the remote host reports one taken.
_PORT_ATTEMPTS = 3
# Environment variables of the caller's ``env`` that are passed on to the remote kernel: those
# Jupyter servers set for their kernels. The rest of the local environment stays here.
_FORWARDED_ENV = re.compile(r"^(JPY_|KERNEL_)")
# What a host or user name may not hold: ssh substitutes them into the user's ProxyCommand,
# LocalCommand and Match exec (%h, %r...), which a shell runs, and OpenSSH before 9.6 did not
# check them. A quote, a shell metacharacter, white space or a control character.
_UNSAFE_NAME = re.compile(r"[\x00-\x20\x7f'`\"$\\;&<>|(){}]")
# Keywords that pre_launch() produces or managers pass along and that are not for ssh.
_NOT_FOR_SSH = frozenset({"extra_arguments", "kernel_id", "kernel_name", "cmd"})


@functools.cache
def _script() -> bytes:
    return _SCRIPT.read_bytes()


def _new_log_file() -> Path:
    """A new private (0600) file for ssh's log (``-E``)."""
    fd, log_file = tempfile.mkstemp(prefix="kernel-nursery-ssh-", suffix=".log")
    os.close(fd)
    return Path(log_file)


class SSHProvisioner(KernelProvisionerBase):
    """Runs the kernel on another host, through the OpenSSH client (``ssh``).

    The user's ssh configuration applies (``~/.ssh/config`` aliases, agents, ``ProxyJump``,
    keys); :attr:`host` may be an alias from it. One ``ssh`` process per kernel is the local
    handle of the remote kernel:

    - it runs a small standard-library script with the remote Python, sent through the
      channel's standard input along with the connection info: the key never appears in a
      command line, on either side. The script writes the connection file (mode 0600, in a
      private temporary directory it removes at the end), starts the kernel in a new session
      bound to the remote loopback, and reports ``started`` and later the kernel's exit status;
    - the kernel's five ports are forwarded (``ssh -L``) from ports reserved on this machine's
      loopback, so clients connect locally and nothing listens on the remote network;
    - :meth:`wait` awaits the exit report (or the end of the ``ssh`` process, when the
      connection drops: the kernel then counts as dead); nothing polls;
    - :meth:`send_signal` (and so interrupt, terminate and kill) travels as a command on the
      channel and reaches the kernel's whole process group;
    - when the channel closes (this process ends however it ends, the scope is left, the
      connection drops), the remote script stops the kernel's process group (SIGTERM, then
      SIGKILL 2 s later). The local ``ssh`` process is registered with this process's
      guardian, as local kernels are, so it does not outlive this process either.

    ``BatchMode`` is always on (no prompt can hang a launch) and host keys are checked as the
    user's configuration says: an unknown or changed host key is refused with
    :class:`~kernel_nursery.provisioning.SSHHostKeyError`, never accepted silently.

    Configure it in a kernel spec's ``metadata.kernel_provisioner`` (``provisioner_name``
    ``ssh``) or with traitlets. The spec's ``argv`` runs on the remote host (``python`` there
    meaning :attr:`remote_python`), unless :attr:`remote_argv` or
    :attr:`remote_kernel_name` says otherwise.

    .. versionadded:: 0.1
    """

    host = Unicode(
        "",
        config=True,
        help="The remote host: a name, an address, or an alias from the ssh configuration.",
    )
    user = Unicode("", config=True, help="The remote user (default: as ssh decides).")
    port = Integer(
        0, min=0, max=65535, config=True, help="The SSH port (0: as ssh decides, normally 22)."
    )
    identity_file = Unicode("", config=True, help="A private key file for ssh -i.")
    ssh_options = List(
        Unicode(),
        config=True,
        help="More ssh command-line arguments, before the host (e.g. ['-F', 'config', '-o', "
        "'ProxyJump=bastion']).",
    )
    ssh_command = Unicode("ssh", config=True, help="The OpenSSH client to run.")
    remote_python = Unicode(
        "python3",
        config=True,
        help="The Python on the remote host that runs the launcher script (standard library "
        "only, 3.8+); 'python' in the kernel's argv means it too.",
    )
    remote_kernel_name = Unicode(
        "",
        config=True,
        help="Run the kernel spec of this name installed on the remote host, instead of this "
        "spec's argv.",
    )
    remote_argv = List(
        Unicode(),
        config=True,
        help="The kernel command to run on the remote host, instead of this spec's argv "
        "({connection_file} is replaced by the remote connection file).",
    )
    remote_cwd = Unicode("", config=True, help="The kernel's working directory on the remote host.")
    remote_env = Dict(
        value_trait=Unicode(),
        config=True,
        help="Environment variables for the remote kernel, on top of the remote login's "
        "environment and the spec's env.",
    )
    connect_timeout = Integer(
        10, min=1, config=True, help="Seconds for ssh to connect (ConnectTimeout)."
    )
    server_alive_interval = Integer(
        5,
        min=0,
        config=True,
        help="Seconds between keep-alive probes (ServerAliveInterval); after "
        "server_alive_count_max unanswered ones the connection counts as lost and the kernel "
        "as dead. 0: no probes (a hung connection is then never noticed).",
    )
    server_alive_count_max = Integer(3, min=1, config=True, help="ssh's ServerAliveCountMax.")
    independent = Bool(
        False,
        config=True,
        help="Whether the remote kernel may outlive its SSH channel. By default, when the "
        "channel closes (this process dies, the connection drops) the remote side stops the "
        "kernel. Set it for a kernel another process will take over (get_provisioner_info / "
        "load_provisioner_info): the kernel then lives on, without JPY_PARENT_PID, until "
        "someone stops it.",
    )
    reuse_connection = Bool(
        True,
        config=True,
        help="Share one SSH connection (an OpenSSH control master with a private socket) "
        "among the kernels of this process that run on the same host at the same time: the "
        "second kernel starts it beside its own connection, later ones start faster through "
        "it. The last kernel to end closes it.",
    )
    launch_timeout = Float(
        60.0,
        config=True,
        help="Seconds from running ssh to the remote kernel's start being reported.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._process: anyio.abc.Process | None = None
        self._status: int | None = None  # the kernel's exit status, once known
        self._last_status: int | None = None  # kept after cleanup, for poll()
        self._remote_pid: int | None = None
        self._remote_file: str | None = None
        self._remote_start_time: int | None = None
        self._remote_ports: list[int] | None = None
        self._owns_ports = False
        self._log_file: Path | None = None  # ssh's log (-E), a private temporary file
        self._stdout = b""
        self._read_lock = anyio.Lock()
        self._send_lock = anyio.Lock()
        self._guard_token: int | None = None
        self._reaping = False
        self._launching = False
        self._master: _master.Master | None = None
        # The forwards made through the master, which outlive the session: cancelled at reap.
        self._forwarded: tuple[ConnectionInfo, list[int]] | None = None

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._process is not None

    @property
    def ssh_pid(self) -> int | None:
        """The local ``ssh`` process's id, or ``None`` before launch and after cleanup."""
        return None if self._process is None else self._process.pid

    @property
    def remote_pid(self) -> int | None:
        """The kernel's process id on the remote host (it leads its process group there), or
        ``None`` before launch and after cleanup."""
        return self._remote_pid if self._process is not None else None

    @property
    def remote_connection_file(self) -> str | None:
        """Where the connection file is on the remote host (removed there when the kernel
        ends), or ``None`` before launch and after cleanup."""
        return self._remote_file if self._process is not None else None

    async def poll(self) -> int | None:
        """``None`` while the kernel runs; its exit status once it is known to have exited (the
        remote report; else the exit status of ``ssh`` when it ended without one, as when the
        connection dropped). ``0`` when no kernel was ever launched. Never waits."""
        if self._process is None:
            return self._last_status if self._last_status is not None else 0
        if self._status is not None:
            return self._status
        return self._process.returncode

    async def wait(self) -> int | None:
        """Wait until the kernel has exited (reported by the remote side) or the connection is
        gone, and return the status as :meth:`poll`. Any number of tasks may wait; cancelling
        one leaves the kernel untouched."""
        process = self._process
        if process is None:
            return await self.poll()
        async with self._read_lock:
            while self._status is None:
                event = await self._next_event(process)
                if event is None:
                    self._status = await self._lost(process)
                elif event.get("event") == "exit":
                    status = event.get("status")
                    self._status = status if isinstance(status, int) else -1
        self._last_status = self._status
        return self._status

    async def _lost(self, process: anyio.abc.Process) -> int:
        """The channel ended without an exit report: the connection dropped (or the remote
        script was killed). ``ssh`` may still hold forwarded connections: end it."""
        with anyio.CancelScope(shield=True):  # bounded: 1 s, then KILL_WAIT_TIME after SIGKILL
            await _end_process(process, grace=1.0)
        if self._reaping:
            return process.returncode if process.returncode is not None else -1
        self.log.warning(
            "Kernel %s: lost the connection to %s (ssh exit status %s)%s",
            self.kernel_id,
            self.host,
            process.returncode,
            _tail(await anyio.to_thread.run_sync(self._log_text)),
        )
        return process.returncode if process.returncode is not None else -1

    # ------------------------------------------------------------------ signals

    async def send_signal(self, signum: int) -> None:
        """Have the remote side send *signum* to the kernel's process group (by name: the
        numbers differ between systems). Nothing happens when the kernel has exited or was
        never launched, or when the connection is gone."""
        try:
            name = signal.Signals(signum).name
        except ValueError:
            raise ProvisionerError(f"unknown signal number {signum}") from None
        await self._command({"op": "signal", "name": name})

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the remote kernel's process group."""
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM to the remote kernel's process group."""
        await self.send_signal(signal.SIGTERM)

    async def _command(self, command: dict[str, Any]) -> None:
        process = self._process
        if process is None or self._status is not None or process.stdin is None:
            return
        data = (json.dumps(command) + "\n").encode()
        # Shielded so that a line is never cut in half; bounded because a hung connection may
        # stop ssh from reading (a pipe's buffer takes many lines first).
        with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_WAIT_TIME):
            async with self._send_lock:
                try:
                    await process.stdin.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass  # the channel is gone, and with it the kernel

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Reserve the five local ports and work out what to run remotely.

        The result's ``cmd`` is the kernel command for the remote host (:attr:`remote_argv`,
        else the spec's ``argv``, plus ``extra_arguments``), or ``[]`` when
        :attr:`remote_kernel_name` names a remote kernel spec. Its ``env`` holds only what goes
        to the remote kernel: the spec's ``env``, :attr:`remote_env`, and the ``JPY_*`` and
        ``KERNEL_*`` variables of the ``env`` given (Jupyter servers pass those); the rest of
        the local environment stays here. ``cwd`` is ignored (it names a local directory):
        use :attr:`remote_cwd`.

        Raises:
            ProvisionerError: there is no kernel spec or no :attr:`host`, or :attr:`host` or
                :attr:`user` holds a shell metacharacter, a quote or white space.
            InvalidKernelIdError: the kernel id holds what a file name must not (it names the
                remote connection file): a ``/``, a comma, white space...
            PortAllocationError: no local ports could be reserved.
        """
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError("SSHProvisioner needs a kernel_spec to launch a kernel")
        self._check_target()
        if not self.kernel_id:
            self.kernel_id = str(uuid.uuid4())
        check_kernel_id(self.kernel_id)  # it names files, here or remotely
        kwargs = dict(kwargs)
        extra_arguments = [str(a) for a in kwargs.pop("extra_arguments", None) or ()]
        given_env = pop_env(kwargs)
        kwargs.pop("cwd", None)
        if self.remote_kernel_name:
            cmd: list[str] = []
        else:
            cmd = [*(self.remote_argv or spec.argv), *extra_arguments]
        result = await super().pre_launch(cmd=cmd, env={}, **kwargs)
        env = dict(result["env"])
        if given_env is not None:
            env.update(
                {
                    k: v
                    for k, v in given_env.items()
                    if isinstance(k, str) and isinstance(v, str) and _FORWARDED_ENV.match(k)
                }
            )
        env.update(self.remote_env)
        result["env"] = env
        if self.connection_info:
            validate_connection_info(self.connection_info)
        else:
            info = new_connection_info(ip="127.0.0.1", kernel_name=spec.name)
            self._owns_ports = True
            self.connection_info = dict(info)
        return result

    def _check_target(self) -> None:
        """Refuse a missing :attr:`host`, or a host or user that ssh would pass to a shell.

        Raises:
            ProvisionerError: there is no host, or it or the user starts with ``-`` or holds
                a shell metacharacter, a quote or white space.
        """
        if not self.host:
            raise ProvisionerError(
                "SSHProvisioner needs a host: set 'host' in the kernel spec's "
                "kernel_provisioner config"
            )
        if self.host.startswith("-") or _UNSAFE_NAME.search(self.host):
            raise ProvisionerError(f"invalid ssh host {self.host!r}")
        if self.user.startswith("-") or _UNSAFE_NAME.search(self.user):
            raise ProvisionerError(f"invalid ssh user {self.user!r}")

    def _finalize_env(self, env: dict[str, str]) -> None:
        super()._finalize_env(env)
        env.pop("JPY_PARENT_PID", None)  # the remote side sets its own

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Connect, start the kernel remotely and forward its ports; return the local
        connection info (loopback, the local ports, the key).

        Returns once the remote side reports the kernel started (not yet ready: the manager
        waits for that). If the remote host reports one of the chosen remote ports taken, new
        ones are chosen, up to three times.

        If this raises or is cancelled, nothing is left behind: the ``ssh`` process is ended
        (the remote side then stops whatever it started), and the local ports are released.

        Raises:
            SSHHostKeyError: the host key is unknown or changed.
            SSHAuthenticationError: authentication failed.
            SSHConnectionError: the host is unknown or unreachable, or ssh failed otherwise.
            LaunchError: an argument of the kernel command, an environment variable or
                :attr:`remote_cwd` holds what no OS takes (a NUL byte, '=' in a name).
            RemoteLaunchError: the remote Python or kernel is missing, the remote working
                directory does not exist, remote ports stayed taken, or the remote side did not
                answer within :attr:`launch_timeout`.
            LaunchError: the ``ssh`` client cannot be run.
            ProvisionerError: this provisioner already runs a kernel.
        """
        if self._launching or (
            self._process is not None and self._status is None and await self.poll() is None
        ):
            raise ProvisionerError(
                f"kernel {self.kernel_id} is still running; stop it before launching again"
            )
        # Set before the first await: a second launch meanwhile would otherwise start a second
        # ssh, and the first would be left without an owner.
        self._launching = True
        try:
            await self._launch(cmd, kwargs)
        finally:
            self._launching = False
        self.log.debug(
            "Launched kernel %s on %s (remote pid %s) through ssh pid %s",
            self.kernel_id,
            self.host,
            self._remote_pid,
            self.ssh_pid,
        )
        return validate_connection_info(self.connection_info)

    async def _launch(self, cmd: list[str], kwargs: dict[str, Any]) -> None:
        if self._process is not None:
            await self._reap()  # the previous (restarted) kernel's handle
        try:
            # What the remote OS would refuse (a NUL byte, '=' in a variable's name) is refused
            # here, naming it, rather than as a traceback of the remote launcher.
            problem = bad_launch_arguments(list(cmd), kwargs.get("env"), self.remote_cwd or None)
            if problem is not None:
                raise LaunchError(f"cannot start kernel on {self.host}: {problem}", argv=list(cmd))
            request = {
                "kernel_id": self.kernel_id,
                "argv": list(cmd) or None,
                "kernel_name": self.remote_kernel_name or None,
                "env": dict(kwargs.get("env") or {}),
                "cwd": self.remote_cwd or None,
                "grace": _guardian.GRACE_PERIOD,
                "independent": self.independent,
            }
            local = validate_connection_info(self.connection_info)
            for _attempt in range(_PORT_ATTEMPTS):
                if self._remote_ports is None:
                    self._remote_ports = _choose_remote_ports()
                taken = await self._launch_once(local, self._remote_ports, request)
                if not taken:
                    break
                self.log.info(
                    "Kernel %s: remote port(s) %s taken on %s; choosing others",
                    self.kernel_id,
                    taken,
                    self.host,
                )
                self._remote_ports = None
            else:
                raise RemoteLaunchError(
                    f"cannot start kernel on {self.host}: the remote ports chosen were taken "
                    f"{_PORT_ATTEMPTS} times",
                    host=self.host,
                    reason="ports-in-use",
                    argv=self._ssh_argv(local, [0] * 5),
                )
        except BaseException:
            await self._abandon()
            raise

    async def _launch_once(
        self, local: ConnectionInfo, remote_ports: list[int], request: dict[str, Any]
    ) -> str:
        """One connection: run ssh, send the script and the request, read the answer.
        Returns ``""`` when the kernel started, or the taken ports as reported.

        Raises:
            LaunchError: as :meth:`launch_kernel`. The ssh process, if one was started, is
                left to the caller to reap (as on cancellation).
        """
        if self._process is not None:
            await self._reap()
        argv = await self._channel_argv(local, remote_ports)
        remote_info = dict(local)
        remote_info.update(dict(zip(PORT_NAMES, remote_ports, strict=True)))
        remote_info["ip"] = "127.0.0.1"
        script = await anyio.to_thread.run_sync(_script)  # read once, then cached
        payload = script + (json.dumps({**request, "connection_info": remote_info}) + "\n").encode()
        argv.append(f"{argv.pop()} {len(script)}")
        process = await self._spawn(argv)
        answer = await self._answer(process, payload, argv)
        if answer.get("event") == "started":
            pid = answer.get("pid")
            self._remote_pid = pid if isinstance(pid, int) else None
            path = answer.get("connection_file")
            self._remote_file = path if isinstance(path, str) else None
            start_time = answer.get("start_time")
            self._remote_start_time = start_time if isinstance(start_time, int) else None
            return ""
        kind = str(answer.get("kind"))
        message = str(answer.get("message"))
        if kind == "ports-in-use":
            return message
        raise RemoteLaunchError(
            f"cannot start kernel on {self.host}: {message}",
            host=self.host,
            reason=kind,
            argv=argv,
        )

    async def _channel_argv(self, local: ConnectionInfo, remote_ports: list[int]) -> list[str]:
        """The ssh command for one connection: a new private log file (``-E``), and the
        shared master's socket when :attr:`reuse_connection` has one ready (the forwards made
        through it are then recorded, to be cancelled at reap).

        Disk work and the master's spawn run in worker threads, which a cancellation does not
        abandon: what they made is recorded (the log file, the master's reference) before the
        cancellation is delivered, for the caller's reap to remove or release.
        """
        self._log_file = await anyio.to_thread.run_sync(_new_log_file)
        control_path = None
        if self.reuse_connection:
            if self._master is not None and self._master.popen and not self._master.alive():
                await self._leave_master()  # it died (a dropped connection): a new one
            if self._master is None:  # kept across restarts
                key = (*self._connection_argv(), self.host)
                self._master = await _master.acquire(key, self._master_argv, self.log)
            if self._master.ready():
                control_path = self._master.control_path
                self._forwarded = (local, list(remote_ports))
        return self._ssh_argv(local, remote_ports, control_path)

    async def _spawn(self, argv: list[str]) -> anyio.abc.Process:
        """Run ssh (shielded: see :func:`spawn_shielded`) and make it this provisioner's,
        registered with the guardian. A cancellation that came meanwhile is delivered after
        that, when the caller can reap it.

        Raises:
            LaunchError: the ssh client cannot be run.
        """
        process = await spawn_shielded(
            argv,
            program=f"the ssh client {argv[0]!r}",
            shown=argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the remote kernel's output, as a local kernel's
            start_new_session=True,  # Ctrl-C reaches the manager, never ssh
        )
        self._process = process
        self._status = None
        self._remote_pid = None
        self._stdout = b""
        await _guardian.register_off_loop(functools.partial(self._guard, process))
        await anyio.lowlevel.checkpoint_if_cancelled()
        return process

    async def _answer(
        self, process: anyio.abc.Process, payload: bytes, argv: list[str]
    ) -> dict[str, Any]:
        """Send *payload* (the remote script and the request) and await the remote side's
        first status line, within :attr:`launch_timeout`; without one, ssh is ended.
        Cancelled, it leaves ssh to the caller, which reaps it.

        Raises:
            RemoteLaunchError: no answer in time.
            LaunchError: ssh ended first (the typed error for why: see :meth:`_failure`).
        """
        answer: dict[str, Any] | None = None
        with anyio.move_on_after(self.launch_timeout):
            assert process.stdin is not None
            try:
                await process.stdin.send(payload)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass  # ssh is gone already; its exit status says why
            async with self._read_lock:
                answer = await self._next_event(process)
                if answer is None:
                    with anyio.CancelScope(shield=True):  # bounded: 2 * KILL_WAIT_TIME
                        await _end_process(process, grace=KILL_WAIT_TIME)
        if answer is None and process.returncode is None:
            raise RemoteLaunchError(
                f"cannot start kernel on {self.host}: no answer within "
                f"{self.launch_timeout:g} s (SSHProvisioner.launch_timeout)",
                host=self.host,
                reason="no-answer",
                argv=argv,
            )
        if answer is None:
            log = await anyio.to_thread.run_sync(self._log_text)
            raise self._failure(argv, process.returncode, log)
        return answer

    def _failure(self, argv: list[str], status: int | None, log: str) -> LaunchError:
        """The typed error for an ssh that ended before the remote side answered, from its
        exit *status* and its *log*."""
        last = _last_line(log)
        host = self.host
        if status == 127 or status == 126:
            return RemoteLaunchError(
                f"cannot start kernel on {host}: the remote Python {self.remote_python!r} "
                f"cannot be run there (exit status {status})",
                host=host,
                reason="no-python",
                argv=argv,
            )
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in log:
            return SSHHostKeyError(
                f"cannot connect to {host}: its host key has CHANGED from the one in "
                "known_hosts; refused (check the new key before replacing the old one)",
                host=host,
                argv=argv,
            )
        if "Host key verification failed" in log:
            return SSHHostKeyError(
                f"cannot connect to {host}: its host key is not in known_hosts (or does not "
                "match it); refused. Check the key and record it, e.g. with one interactive "
                "ssh",
                host=host,
                argv=argv,
            )
        if "Permission denied" in log or "Too many authentication failures" in log:
            return SSHAuthenticationError(
                f"cannot connect to {host}: authentication failed ({last})", host=host, argv=argv
            )
        if status == 255 or status is None:
            return SSHConnectionError(
                f"cannot connect to {host}: {last or f'ssh exited with status {status}'}",
                host=host,
                argv=argv,
            )
        return RemoteLaunchError(
            f"cannot start kernel on {host}: the remote launcher exited with status {status}"
            + (f" ({last})" if last else ""),
            host=host,
            reason="bad-config",
            argv=argv,
        )

    def _connection_argv(self) -> list[str]:
        """The ssh command up to the host's options: what every connection to it shares
        (and what identifies a shared master)."""
        argv = [self.ssh_command, "-T", "-x", "-a"]
        options = {
            "BatchMode": "yes",  # never a prompt: it would hang the launch
            "ConnectTimeout": str(self.connect_timeout),
            "ServerAliveInterval": str(self.server_alive_interval),
            "ServerAliveCountMax": str(self.server_alive_count_max),
            "PermitLocalCommand": "no",
            # A RemoteCommand in the user's config would replace the launcher (ssh refuses
            # both); our command is what runs.
            "RemoteCommand": "none",
        }
        for name, value in options.items():
            argv += ["-o", f"{name}={value}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        return argv + list(self.ssh_options)

    def _master_argv(self, control_path: str) -> list[str]:
        return [
            *self._connection_argv(),
            *("-o", "ControlMaster=yes", "-o", f"ControlPath={control_path}"),
            *("-o", "ControlPersist=no"),
            *("--", self.host, _master.MASTER_COMMAND),
        ]

    def _forwards(self, local: ConnectionInfo, remote_ports: list[int]) -> list[str]:
        argv = []
        for name, remote in zip(PORT_NAMES, remote_ports, strict=True):
            argv += ["-L", f"127.0.0.1:{local[name]}:127.0.0.1:{remote}"]
        return argv

    def _ssh_argv(
        self, local: ConnectionInfo, remote_ports: list[int], control_path: str | None = None
    ) -> list[str]:
        argv = self._connection_argv()
        # Without a master of ours, the kernel's connection is its own: the user's own master,
        # if the config names one, would keep our forwards after the kernel's end.
        argv += ["-o", "ControlMaster=no", "-o", f"ControlPath={control_path or 'none'}"]
        argv += ["-o", "ExitOnForwardFailure=yes"]
        if self._log_file is not None:
            argv += ["-E", str(self._log_file)]
        argv += self._forwards(local, remote_ports)
        python = shlex.quote(self.remote_python)
        argv += ["--", self.host, f"exec {python} -I -S -c {shlex.quote(_BOOT)}"]
        return argv

    async def _next_event(self, process: anyio.abc.Process) -> dict[str, Any] | None:
        """The next status line from the remote side, or ``None`` at the end of the channel.
        Lines that are not ours (a login script's chatter) are skipped. Hold the read lock."""
        stdout = process.stdout
        assert stdout is not None
        while True:
            while b"\n" not in self._stdout:
                try:
                    chunk = await stdout.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return None
                self._stdout += chunk
            line, self._stdout = self._stdout.split(b"\n", 1)
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict) and "event" in event:
                return event
            self.log.debug("Kernel %s: remote said %r", self.kernel_id, line[:200])

    def _log_text(self) -> str:
        if self._log_file is None:
            return ""
        try:
            return self._log_file.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, restart: bool = False) -> None:
        """End the ``ssh`` process (closing the channel: the remote side stops the kernel's
        group if it still runs and removes the connection file), and unless *restart* release
        the local ports. With *restart* the ports and key are kept for the next launch.
        Shielded from cancellation and bounded."""
        with anyio.CancelScope(shield=True):  # bounded: _reap and _leave_master are
            await self._reap()
            if not restart:
                self._release()
                await self._leave_master()

    async def _reap(self) -> None:
        process = self._process
        if process is None:
            self._remove_log()  # made before an ssh that could not be run
            return
        self._reaping = True
        # Bounded: the kill is a bounded write, _end_process 2 * KILL_WAIT_TIME, aclose() only
        # for an exited ssh, the forwards' cancel KILL_WAIT_TIME.
        with anyio.CancelScope(shield=True):
            if self._status is None and process.returncode is None:
                await self.kill()
            if process.stdin is not None:
                await process.stdin.aclose()  # end of file: the remote side ends
            await _end_process(process, grace=KILL_WAIT_TIME)
            if process.returncode is None:
                # Stuck even after SIGKILL (in the OS kernel): anyio's Process.aclose() would
                # wait for it without end, so only its pipes are closed, as Slurm's _reap does.
                self.log.error("Kernel %s: ssh (pid %s) did not exit", self.kernel_id, process.pid)
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        await stream.aclose()
            else:
                if process.stdout is not None:
                    await process.stdout.aclose()
                await process.aclose()  # it has exited: nothing here waits
            if self._status is None:
                self._status = process.returncode
            self._last_status = self._status
            self._process = None
            self._reaping = False
            self._unguard()
            await self._cancel_forwards()
            self._remove_log()

    def _remove_log(self) -> None:
        if self._log_file is not None:
            self._log_file.unlink(missing_ok=True)
            self._log_file = None

    async def _cancel_forwards(self) -> None:
        """Cancel the forwards made through the master, which outlive the session that asked
        for them. Shielded by the caller; bounded."""
        forwarded, self._forwarded = self._forwarded, None
        master = self._master
        if forwarded is None or master is None or not master.ready():
            return
        argv = [
            *self._connection_argv(),
            *("-o", f"ControlPath={master.control_path}", "-O", "cancel"),
            *self._forwards(*forwarded),
            *("--", self.host),
        ]
        with anyio.move_on_after(KILL_WAIT_TIME):
            done = await anyio.run_process(
                argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if done.returncode:
                self.log.warning(
                    "Kernel %s: cancelling its port forwards failed: %s",
                    self.kernel_id,
                    done.stderr.decode(errors="replace").strip(),
                )

    async def _leave_master(self) -> None:
        """Give the shared connection back (the last user closes it). Shielded by the
        caller; bounded."""
        master, self._master = self._master, None
        if master is not None:
            await _master.release(master, self.log)

    def _release(self) -> None:
        if self._owns_ports and self.connection_info:
            release_connection_info(validate_connection_info(self.connection_info))
            self._owns_ports = False
            self.connection_info = {}
        self._remote_ports = None

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """The base info plus the remote kernel's ``remote_pid``, ``remote_start_time`` (to
        tell it from a later process with its pid), ``remote_ports`` and ``host``."""
        info = await super().get_provisioner_info()
        info.update(
            {
                "host": self.host,
                "remote_pid": self.remote_pid,
                "remote_start_time": self._remote_start_time if self.remote_pid else None,
                "remote_ports": list(self._remote_ports or []) or None,
                "remote_connection_file": self.remote_connection_file,
            }
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the remote kernel described by *provisioner_info*, possibly saved by
        another process (on another machine): this provisioner, configured for the same host,
        opens a channel of its own to the kernel, through which :meth:`poll`, :meth:`wait`,
        :meth:`send_signal`, :meth:`kill` and :meth:`cleanup` act on it.

        The kernel's ports are forwarded from new local ports, reserved here:
        :attr:`connection_info` keeps the key but names those ports. Unless this provisioner
        is :attr:`independent`, the kernel is then tied to this channel as if launched here.
        For a hand-over, launch the kernel with ``independent=True``, or the launching side
        stops it when its own channel closes. A kernel found gone is adopted as exited, with
        status :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`; its exit status only
        ever reaches its first launcher. Needs Linux on the remote host (pidfds).

        Raises:
            ProvisionerError: this provisioner already manages a kernel.
            ProvisionerInfoError: ``remote_pid`` is not a process id above 1,
                ``remote_start_time`` is missing or not a number, ``remote_ports`` is missing or
                not five port numbers, or ``remote_connection_file`` is not a path; nothing is
                started and nothing stays reserved.
            SSHConnectionError, RemoteLaunchError: as :meth:`launch_kernel` (the remote side
                also refuses a process that does not lead its process group).
            ConnectionFileError: the saved connection info is invalid.
        """
        if self._process is not None or self._launching:
            raise ProvisionerError("this provisioner already manages a kernel process")
        self._launching = True  # as launch_kernel: one at a time
        try:
            await self._load(provisioner_info)
        finally:
            self._launching = False

    async def _load(self, provisioner_info: dict[str, Any]) -> None:
        pid, start_time, remote_file = self._checked_info(provisioner_info)
        await super().load_provisioner_info(provisioner_info)
        if pid is None or not self.connection_info:
            return
        remote_ports = _info_ports(provisioner_info, subject=f"kernel pid {pid} on {self.host}")
        saved = validate_connection_info(self.connection_info)
        fresh = dict(new_connection_info(ip="127.0.0.1", key=saved["key"]))
        fresh["signature_scheme"] = saved["signature_scheme"]
        fresh["kernel_name"] = saved.get("kernel_name", "")
        self.connection_info = fresh
        self._owns_ports = True
        request = {
            "attach": {
                "pid": pid,
                "start_time": start_time,
                "connection_file": remote_file,
                "key": saved["key"],  # whose file it must be, to be removed at the end
            },
            "kernel_id": self.kernel_id,
            "grace": _guardian.GRACE_PERIOD,
            "independent": self.independent,
        }
        try:
            self._remote_ports = remote_ports
            local = validate_connection_info(self.connection_info)
            await self._launch_once(local, self._remote_ports, request)
        except RemoteLaunchError as exc:
            await self._abandon()
            if exc.reason != "no-kernel":
                raise
            self.log.info("Kernel %s had already exited: %s", self.kernel_id, exc)
            self._last_status = UNKNOWN_EXIT_STATUS
            return
        except BaseException:
            await self._abandon()
            raise
        self._remote_start_time = start_time
        self._remote_file = remote_file

    def _checked_info(self, info: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
        """The remote kernel's pid, start time and connection file from take-over *info*,
        checked before anything is started.

        The remote side signals the group the pid leads: it must be the kernel's, told by its
        start time (as the remote launcher reported it; Linux, as pidfds), which a pid needs.

        Raises:
            ProvisionerInfoError: one of them is not what it must be.
        """
        subject = f"a kernel on {self.host}"
        pid = info_pid(info, "remote_pid", subject=subject, local=False)
        start_time = None
        if pid is not None:
            start_time = info_start_time(
                info, "remote_start_time", subject=f"kernel pid {pid} on {self.host}", required=True
            )
        return pid, start_time, info_path(info, "remote_connection_file", subject=subject)

    async def _abandon(self) -> None:
        """A launch or take-over failed or was cancelled: end ssh, release the local ports
        and leave the shared connection. Shielded and bounded."""
        with anyio.CancelScope(shield=True):  # bounded: _reap and _leave_master are
            await self._reap()
            self._release()
            await self._leave_master()

    # ------------------------------------------------------------------ the guardian

    def _guard(self, process: anyio.abc.Process) -> None:
        """Register the ssh process with the guardian: if this process dies without cleaning
        up, the guardian ends ssh (the remote side then stops the kernel) and removes ssh's
        log file, as it removes a local kernel's connection file. Run through
        :func:`~kernel_nursery.provisioning._guardian.register_off_loop` (the first
        registration spawns the guardian)."""
        if not _guardian.SUPPORTED:
            return
        self._guard_token = _guardian.register(
            process.pid,
            pgid=process.pid,
            start_time=process_start_time(process.pid),
            connection_file=None if self._log_file is None else str(self._log_file),
            log=self.log,
        )

    def _unguard(self) -> None:
        token, self._guard_token = self._guard_token, None
        if token is not None:
            _guardian.unregister(token, log=self.log)


async def _end_process(process: anyio.abc.Process, *, grace: float) -> None:
    """Wait up to *grace* seconds for *process* (ssh) to exit, then SIGKILL its group and wait
    up to :data:`KILL_WAIT_TIME`. The caller shields it."""
    with anyio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()
        with anyio.move_on_after(KILL_WAIT_TIME):
            await process.wait()


def _info_ports(info: dict[str, Any], *, subject: str) -> list[int]:
    """The remote kernel's ports from take-over *info* (``remote_ports``), checked: one port
    number for each of the kernel's five sockets, in their order.

    Raises:
        ProvisionerInfoError: there are none, or they are not that.
    """
    ports = info.get("remote_ports")
    if not ports:
        raise ProvisionerInfoError(
            f"cannot take over {subject}: the saved provisioner info has no remote_ports"
        )
    if not (
        isinstance(ports, list | tuple)
        and len(ports) == len(PORT_NAMES)
        and all(type(port) is int and 0 < port < 65536 for port in ports)
    ):
        raise ProvisionerInfoError(
            f"cannot take over {subject}: remote_ports {ports!r:.60} is not a list of "
            f"{len(PORT_NAMES)} port numbers"
        )
    return list(ports)


def _choose_remote_ports() -> list[int]:
    """Five distinct ports for the remote kernel, at random; none that this process reserved
    (the remote host may be this machine)."""
    low, high = _REMOTE_PORT_RANGE
    ours = {port for kind, port in reserved_ports() if kind == "tcp"}
    ports: list[int] = []
    while len(ports) < len(PORT_NAMES):
        port = low + secrets.randbelow(high - low)
        if port not in ports and port not in ours:
            ports.append(port)
    return ports


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _tail(text: str) -> str:
    last = _last_line(text)
    return f": {last}" if last else ""
