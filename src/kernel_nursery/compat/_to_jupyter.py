"""Our provisioners inside jupyter_client: a provisioner of its kind that drives one of ours.

jupyter_client's kernel managers (and so jupyter_server, JupyterLab, nbclient, papermill) create
a provisioner from the entry-point group ``jupyter_client.kernel_provisioners`` and call it on
their asyncio loop. :class:`NurseryProvisioner` is registered there; it creates one of our
provisioners (from our own group, ``kernel_nursery.provisioners``) and passes every call on,
translating what differs: the connection info's key (bytes there, text here), the connection file
(one file, at the path the kernel manager chose), the shutdown escalation (timed here by awaited
exits, so the kernel manager's 100 ms polls find the kernel gone at their first look), and the
event loop: ours runs on a private loop it owns (:class:`~._loop_thread.LoopThread`), since
jupyter_client's blocking manager calls each method on whichever loop ``run_sync`` picks, and a
child process is served (its exit noticed) only by the loop that started it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

import anyio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import (
    KernelProvisionerBase as JupyterProvisionerBase,
)
from traitlets import Unicode

from .._errors import KernelStateError, ProvisionerConfigError, ProvisionerError
from ..connection import (
    PORT_NAMES,
    ConnectionInfo,
    Transport,
    new_curve_keypair,
    runtime_dir,
    validate_connection_info,
)
from ..connection._ports import release_ports, reserve_ports
from ..kernelspec import KernelSpec
from ..provisioning import (
    JUPYTER_PREFIX,
    KILL_WAIT_TIME,
    KernelProvisionerBase,
    KernelProvisionerFactory,
    LocalProvisioner,
)
from ._loop_thread import LoopThread

__all__ = ["NurseryForkServerProvisioner", "NurseryLocalProvisioner", "NurseryProvisioner"]

#: What get_shutdown_wait_time() tells the kernel manager once this provisioner times the
#: escalation itself: the manager waits half of it, twice, with one look at the kernel first,
#: which finds it gone when it went within our own (awaited) grace periods.
_MANAGER_WINDOW = 0.2

T = TypeVar("T")


class NurseryProvisioner(JupyterProvisionerBase):
    """A jupyter_client provisioner that runs the kernel with one of kernel-nursery's.

    Registered in ``jupyter_client.kernel_provisioners`` as ``kernel-nursery``. Its config field
    :attr:`provisioner_name` names the provisioner of ours to use (any name registered in
    ``kernel_nursery.provisioners``: ``local-provisioner`` by default, ``ssh``, ``slurm``, or a
    third party's); the stanza's other config keys are that provisioner's traits, checked as our
    own factory checks them. :class:`NurseryLocalProvisioner` (``kernel-nursery-local``) is the
    same with the name fixed to our :class:`~kernel_nursery.LocalProvisioner`.

    What our provisioner does keeps doing under jupyter_client's kernel managers:

    - :meth:`wait` awaits the exit; :meth:`kill` returns once the kernel is gone (bounded), so
      the manager's first look after it sees no kernel; after a ``shutdown_request`` and after
      SIGTERM this provisioner awaits the exit for half the manager's ``shutdown_wait_time``
      each (the manager's own schedule), and :meth:`get_shutdown_wait_time` then gives the
      manager a short window, so its polling loops end at their first look.
    - signals go to the kernel's process group; :meth:`cleanup` kills what is left in it and
      reaps the kernel; ``restart`` is passed on, keeping ports, key and connection file.
    - the kernel does not outlive the server: our guardian stops it if the server process dies,
      even by SIGKILL (unless ``independent`` is configured).
    - our provisioner runs on an event loop of its own, in a thread this provisioner owns from
      its first launch until :meth:`cleanup` (not for a restart): jupyter_client's blocking
      manager calls each method on whichever loop jupyter_core's ``run_sync`` picks (the
      thread's own, or a runner thread's inside a running loop), and the kernel's exit is
      noticed, and awaited, from any of them. Each call is passed to that loop and awaited
      from the caller's (a pipe, no polling); cancelling it cancels it there.

    The connection file is the one the kernel manager names (``km.connection_file``) when it
    names one, written once by our provisioner; the manager loads its connection info from it.
    CurveZMQ encryption follows the kernel manager's ``transport_encryption``, as upstream:
    ``"required"`` encrypts, ``"auto"`` encrypts a kernel whose spec declares ``curve``,
    ``"disabled"`` (jupyter_client's default) does not; the keys are in the connection file and
    in the manager, whose clients then encrypt.

    .. versionadded:: 0.1
    """

    provisioner_name = Unicode(
        "local-provisioner",
        config=True,
        help="Which kernel-nursery provisioner (a name in the entry-point group "
        "kernel_nursery.provisioners) runs the kernel.",
    )

    #: Set by subclasses that stand for one provisioner of ours: the name is then not config.
    fixed_provisioner_name: ClassVar[str | None] = None

    def __init__(self, **kwargs: Any) -> None:
        own = set(self.class_trait_names())
        if self.fixed_provisioner_name is not None:
            if "provisioner_name" in kwargs:
                raise ProvisionerConfigError(
                    f"{type(self).__name__} always runs kernel-nursery's "
                    f"{self.fixed_provisioner_name!r}; use provisioner 'kernel-nursery' to choose "
                    "another with config key 'provisioner_name'"
                )
            kwargs["provisioner_name"] = self.fixed_provisioner_name
        inner_config = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        super().__init__(**kwargs)
        self.connection_info = {}  # the class attribute upstream is one dict shared by all
        self._inner = self._create_inner(inner_config)
        self._escalating = False  # this provisioner times the current shutdown's escalation
        self._cwd: str | None = None
        self._loop: LoopThread | None = None  # where our provisioner runs, from its launch
        self._loop_lock = threading.Lock()  # calls may come from several threads at once
        # Ports reserved here for the ports the manager did not set (see _match_manager_ports).
        self._own_ports: tuple[Transport, str, list[int]] | None = None

    # ------------------------------------------------------------------ creation

    def _create_inner(self, config: dict[str, Any]) -> KernelProvisionerBase:
        """Our provisioner, from our factory, with *config* checked against its traits."""
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError(f"{type(self).__name__} needs a kernel_spec")
        if self.provisioner_name.startswith(JUPYTER_PREFIX):
            raise ProvisionerConfigError(
                f"provisioner_name {self.provisioner_name!r} is jupyter_client's own: name it in "
                "kernel.json directly instead of through kernel-nursery"
            )
        data = spec.to_dict()
        metadata = dict(data.get("metadata") or {})
        metadata["kernel_provisioner"] = {
            "provisioner_name": self.provisioner_name,
            "config": config,
        }
        data["metadata"] = metadata
        ours = KernelSpec.from_dict(
            data,
            name=getattr(spec, "name", "") or "",
            resource_dir=getattr(spec, "resource_dir", "") or "",
        )
        inner = KernelProvisionerFactory.instance().create_provisioner_instance(
            self.kernel_id or "", ours, parent=self
        )
        if inner.has_trait("transport_encryption"):
            # jupyter_client's manager decides (its transport_encryption, as upstream): one
            # setting, not two that could disagree.
            if "transport_encryption" in config:
                raise ProvisionerConfigError(
                    "transport_encryption: under jupyter_client's kernel managers, set "
                    "KernelManager.transport_encryption (jupyter_client's own) instead"
                )
            inner.set_trait("transport_encryption", "disabled")
        km = self.parent
        for name in ("transport", "ip"):
            # The manager's ip is the address (tcp) or, as upstream, the endpoint path prefix
            # (ipc); unset (empty), our default: upstream's ipc one is a relative path.
            value = getattr(km, name, None)
            if isinstance(value, str) and value and inner.has_trait(name) and name not in config:
                inner.set_trait(name, value)
        return inner

    @property
    def inner(self) -> KernelProvisionerBase:
        """The kernel-nursery provisioner that runs the kernel."""
        return self._inner

    # Our provisioners read these from their parent (see get_shutdown_wait_time there).
    @property
    def shutdown_wait_time(self) -> float | None:
        """The kernel manager's ``shutdown_wait_time``, for our provisioner to read."""
        value = getattr(self.parent, "shutdown_wait_time", None)
        return float(value) if isinstance(value, int | float) else None

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._inner.has_process

    @property
    def pid(self) -> int | None:
        """The kernel's process id, when our provisioner runs a local process."""
        pid = getattr(self._inner, "pid", None)
        return pid if isinstance(pid, int) else None

    async def poll(self) -> int | None:
        return await self._call(self._inner.poll)

    async def wait(self) -> int | None:
        """Await the kernel's exit (never a polling loop) and return its status, from any
        event loop."""
        return await self._call(self._inner.wait)

    async def send_signal(self, signum: int) -> None:
        await self._call(self._inner.send_signal, signum)

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the kernel's process group, then await its exit (at most
        :data:`~kernel_nursery.provisioning.KILL_WAIT_TIME`), so the kernel manager's next look
        finds it gone instead of sleeping 100 ms first."""
        await self._call(self._inner.kill, restart)
        await self._await_exit(KILL_WAIT_TIME)

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM to the kernel's process group. During a shutdown begun with a request,
        then await the exit for half the shutdown wait time (what the manager would poll)."""
        await self._call(self._inner.terminate, restart)
        if self._escalating:
            await self._await_exit(self._grace() / 2)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Our provisioner's hook, then await the kernel's exit for half the shutdown wait time
        (the manager's schedule) and take the escalation's timing over from the manager."""
        await self._call(self._inner.shutdown_requested, restart=restart)
        self._escalating = True
        await self._await_exit(self._grace() / 2)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        if self._escalating:
            return _MANAGER_WINDOW
        return self._inner.get_shutdown_wait_time(recommended)

    def get_stable_start_time(self, recommended: float = 10.0) -> float:
        return self._inner.get_stable_start_time(recommended)

    def _grace(self) -> float:
        return self._inner.get_shutdown_wait_time(self.shutdown_wait_time)

    async def _await_exit(self, seconds: float) -> None:
        """Await the kernel's exit for at most *seconds* (timed on our provisioner's loop)."""
        if not self._inner.has_process or not math.isfinite(seconds) or seconds <= 0:
            return

        async def bounded() -> None:
            with anyio.move_on_after(seconds):
                await self._inner.wait()

        await self._call(bounded)

    # ------------------------------------------------------------------ the private loop

    async def _call(
        self, fn: Callable[..., Awaitable[T]], *args: Any, launching: bool = False, **kwargs: Any
    ) -> T:
        """``await fn(*args, **kwargs)`` on our provisioner's own loop, started for a launch
        (*launching*) and kept until :meth:`cleanup`. Without that loop, and not launching,
        our provisioner holds no process (nothing bound to a loop): the call runs on the
        caller's loop, which spares a thread to a manager that only asks."""
        with self._loop_lock:
            loop = self._loop
            if loop is None and launching:
                loop = self._loop = LoopThread(what=f"kernel-nursery's {self.provisioner_name!r}")
        if loop is None:
            return await fn(*args, **kwargs)

        async def call() -> T:
            return await fn(*args, **kwargs)

        return await loop.run(call())

    async def _close_loop_unless_running(self) -> None:
        """After a failed or cancelled launch: the loop goes unless our provisioner kept a
        process (shielded and bounded, as :meth:`_close_loop`)."""
        if not self._inner.has_process:
            await self._close_loop()

    async def _close_loop(self) -> None:
        """Stop our provisioner's loop and join its thread (bounded, shielded: see
        :meth:`LoopThread.aclose`), once it holds no process."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            await loop.aclose()

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Our provisioner's ``pre_launch`` (ports, connection file, command, environment), at
        the kernel manager's connection file path; the manager then learns the connection
        info. Ports set on the manager (``shell_port=...``) are the kernel's, and the others
        are reserved. After ``restart_kernel(newports=True)``, where the manager forgot ports
        (its random ones: none with ``cache_ports``, as upstream), the old ports are released
        and new ones reserved.

        Unlike jupyter_client's provisioners this does not call the upstream base class's
        ``pre_launch``: ours builds the environment the same way.

        Raises:
            KernelStateError: a kernel launched by this provisioner still runs (jupyter_client's
                own provisioners start a second one, and the first runs on, unmanaged);
                nothing is made, and that kernel runs on.
            ProvisionerError: the kernel manager requires CurveZMQ encryption.
        """
        if self._inner.has_process and await self.poll() is None:
            raise KernelStateError(
                f"kernel {self.kernel_id} is still running; start_kernel() would start a second "
                "one and leave it running unmanaged: shut it down or restart it instead"
            )
        km = self.parent
        inner = self._inner
        curve = self._curve_keys(km, kwargs.pop("transport_encryption", None))
        if km is not None:
            await self._match_manager_ports(km, curve)
        km_file = getattr(km, "connection_file", "")
        if (
            km_file
            and inner.has_trait("connection_file")
            and not inner.trait_values().get("connection_file")
        ):
            inner.set_trait("connection_file", km_file)
        try:
            kw = await self._call(inner.pre_launch, launching=True, **kwargs)
        except BaseException:
            await self._close_loop_unless_running()
            raise
        info = _to_jupyter_info(validate_connection_info(inner.connection_info))
        self.connection_info = info
        if km is not None:
            own_file = getattr(inner, "connection_file", "")
            if own_file and hasattr(km, "connection_file"):
                km.connection_file = own_file
            if getattr(km, "cache_ports", False) and info["transport"] == "tcp":
                # Upstream's LocalProvisioner gives the manager its (cached) ports before the
                # manager records which ports are random: none, so restart_kernel(newports=True)
                # keeps them, which jupyter_server's open websockets rely on. As upstream.
                for name in PORT_NAMES:
                    setattr(km, name, info[name])
            km.load_connection_info(info)
        cwd = kw.get("cwd")
        self._cwd = str(cwd) if cwd is not None else os.getcwd()
        return kw

    async def _match_manager_ports(self, km: Any, curve: dict[str, str]) -> None:
        """Give our provisioner the ports set on the kernel manager *km*: when they differ from
        those it holds (the manager forgot some, ``newports``), it lets its own go; then, if the
        manager sets any, the connection info is made here, with them and new ones reserved
        for the rest (released by :meth:`cleanup`), the manager's key and the *curve* keys."""
        inner = self._inner
        wanted = {name: port for name, port in zip(PORT_NAMES, _km_ports(km), strict=True) if port}
        held = inner.connection_info
        if held and any(held.get(name) != wanted.get(name) for name in PORT_NAMES):
            await self._call(inner.cleanup, restart=False, launching=True)
            self._release_own_ports()
            inner.connection_info = {}  # info it was given, which it does not drop itself
        if inner.connection_info or not wanted:
            return
        transport = str(getattr(inner, "transport", "") or getattr(km, "transport", "tcp"))
        ip = str(getattr(inner, "ip", "") or "")
        if not ip:
            ip = str(_default_ipc_prefix(self.kernel_id)) if transport == "ipc" else "127.0.0.1"
        missing = [name for name in PORT_NAMES if name not in wanted]
        reserved = reserve_ports(transport=cast(Transport, transport), ip=ip, count=len(missing))
        self._own_ports = (cast(Transport, transport), ip, reserved)
        theirs = dict(km.get_connection_info())
        chosen = dict(zip(missing, reserved, strict=True))
        info = {**theirs, "transport": transport, "ip": ip, **wanted, **chosen}
        inner.connection_info = {**_from_jupyter_info(info), **curve}

    def _release_own_ports(self) -> None:
        """Release the ports :meth:`_match_manager_ports` reserved (and their ipc files)."""
        own, self._own_ports = self._own_ports, None
        if own is not None:
            transport, ip, ports = own
            release_ports(transport=transport, ip=ip, ports=ports)
            if transport == "ipc":
                for port in ports:
                    Path(f"{ip}-{port}").unlink(missing_ok=True)

    def _curve_keys(self, km: Any, asked: object) -> dict[str, str]:
        """The CurveZMQ keys for the kernel's next launch under the manager's policy (its
        ``transport_encryption``, or *asked*, as upstream's ``pre_launch`` reads them), or
        ``{}`` for a kernel in clear. As upstream: ``"required"`` encrypts, ``"auto"`` encrypts
        a kernel whose spec declares ``curve``; a restart keeps the manager's keys. Our
        provisioner is told to make none itself: these are the ones.

        Raises:
            ProvisionerError: encryption is required and our provisioner cannot encrypt.
        """
        policy_of = getattr(km, "_transport_encryption_policy", None)
        policy = policy_of(asked) if callable(policy_of) else "disabled"
        supports = getattr(km, "_kernel_supports_curve_encryption", None)
        wanted = policy == "required" or (
            policy == "auto" and callable(supports) and bool(supports())
        )
        inner = self._inner
        if inner.has_trait("transport_encryption"):
            inner.set_trait("transport_encryption", "required" if wanted else "disabled")
        elif wanted and policy == "required":
            raise ProvisionerError(
                f"kernel-nursery's {self.provisioner_name!r} does not encrypt with CurveZMQ: "
                "set KernelManager.transport_encryption to 'disabled' or 'auto'"
            )
        else:
            wanted = False
        self.log.debug("Kernel %s: CurveZMQ %s (policy %r)", self.kernel_id, wanted, policy)
        if not wanted:
            return {}
        public, secret = getattr(km, "curve_publickey", None), getattr(km, "curve_secretkey", None)
        if isinstance(public, bytes) and isinstance(secret, bytes):
            return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}
        public_text, secret_text = new_curve_keypair()
        return {"curve_publickey": public_text, "curve_secretkey": secret_text}

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Our provisioner's ``launch_kernel``; a failed or cancelled launch leaves nothing."""
        self._escalating = False
        try:
            info = await self._call(self._inner.launch_kernel, cmd, launching=True, **kwargs)
        except BaseException:
            await self._close_loop_unless_running()
            raise
        self.connection_info = _to_jupyter_info(info)
        return self.connection_info

    async def post_launch(self, **kwargs: Any) -> None:
        await self._call(self._inner.post_launch, **kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        """Our provisioner's ``cleanup``: anything left in the kernel's process group is killed,
        the kernel reaped; unless *restart*, ports and connection file are released."""
        self._escalating = False
        try:
            await self._call(self._inner.cleanup, restart=restart)
        finally:
            if not restart:
                self._release_own_ports()
                await self._close_loop()

    def resolve_path(self, path: str) -> str | None:
        """*path* relative to the kernel's working directory, when our provisioner runs the
        kernel on this machine and the file exists; otherwise ``None``."""
        if not isinstance(self._inner, LocalProvisioner):
            return None
        resolved = Path(path).expanduser()
        if not resolved.is_absolute() and self._cwd:
            resolved = (Path(self._cwd) / resolved).resolve()
        return resolved.as_posix() if resolved.exists() else None

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Upstream's base info plus ``kernel_nursery``: our provisioner's name and its own
        (plain JSON) info."""
        info: dict[str, Any] = await super().get_provisioner_info()
        info["kernel_nursery"] = {
            "provisioner_name": self.provisioner_name,
            "info": await self._call(self._inner.get_provisioner_info),
        }
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the kernel saved by :meth:`get_provisioner_info` (our provisioner
        re-attaches for real where it can: a pidfd for a local kernel).

        Raises:
            ProvisionerError: the info was saved by another kind of provisioner.
        """
        await super().load_provisioner_info(provisioner_info)
        saved = provisioner_info.get("kernel_nursery")
        if not isinstance(saved, dict) or not isinstance(saved.get("info"), dict):
            raise ProvisionerError("this provisioner info was not saved by kernel-nursery")
        if saved.get("provisioner_name") != self.provisioner_name:
            raise ProvisionerError(
                f"this provisioner info is for kernel-nursery's {saved.get('provisioner_name')!r}"
                f", not {self.provisioner_name!r}"
            )
        try:
            await self._call(self._inner.load_provisioner_info, saved["info"], launching=True)
        except BaseException:
            await self._close_loop_unless_running()
            raise


class NurseryLocalProvisioner(NurseryProvisioner):
    """:class:`NurseryProvisioner` with kernel-nursery's
    :class:`~kernel_nursery.LocalProvisioner`: registered in
    ``jupyter_client.kernel_provisioners`` as ``kernel-nursery-local``. Config keys are its
    traits (``transport``, ``ip``, ``connection_file``, ``independent``).

    .. versionadded:: 0.1
    """

    fixed_provisioner_name: ClassVar[str | None] = "local-provisioner"


class NurseryForkServerProvisioner(NurseryProvisioner):
    """:class:`NurseryProvisioner` with kernel-nursery's
    :class:`~kernel_nursery.provisioning.ForkServerProvisioner`: registered in
    ``jupyter_client.kernel_provisioners`` as ``kernel-nursery-forkserver``, so that a Jupyter
    server forks a spec's kernels from a warm template when its kernel.json names it. Config
    keys are its traits (``preload``, ``fallback``, ``template_timeout``, and the local
    provisioner's).

    .. versionadded:: 0.1
    """

    fixed_provisioner_name: ClassVar[str | None] = "forkserver"


def _default_ipc_prefix(kernel_id: str | None) -> Path:
    """Our LocalProvisioner's default ipc endpoint prefix (short: a socket path is short)."""
    return runtime_dir() / f"kernel-{(kernel_id or '')[:8]}-ipc"


def _km_ports(km: Any) -> list[int]:
    return [int(getattr(km, name, 0) or 0) for name in PORT_NAMES]


def _to_jupyter_info(info: ConnectionInfo) -> KernelConnectionInfo:
    """Our connection info as jupyter_client holds it: the key as bytes."""
    converted: dict[str, Any] = dict(info)
    converted["key"] = info["key"].encode()
    # A TypedDict in recent jupyter_client, a plain dict type before: the cast fits both.
    return cast("KernelConnectionInfo", converted)


def _from_jupyter_info(info: Any) -> ConnectionInfo:
    converted = {k: v for k, v in dict(info).items() if not k.startswith("curve_")}
    key = converted.get("key", b"")
    converted["key"] = key.decode() if isinstance(key, bytes) else key
    return validate_connection_info(converted)
