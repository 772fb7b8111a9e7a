"""Our provisioners inside jupyter_client: a provisioner of its kind that drives one of ours.

jupyter_client's kernel managers (and so jupyter_server, JupyterLab, nbclient, papermill) create
a provisioner from the entry-point group ``jupyter_client.kernel_provisioners`` and call it on
their asyncio loop. :class:`NurseryProvisioner` is registered there; it creates one of our
provisioners (from our own group, ``kernel_nursery.provisioners``) and passes every call on,
translating what differs: the connection info's key (bytes there, text here), the connection file
(one file, at the path the kernel manager chose), the shutdown escalation (timed here by awaited
exits, so the kernel manager's 100 ms polls find the kernel gone at their first look).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar, cast

import anyio
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import (
    KernelProvisionerBase as JupyterProvisionerBase,
)
from traitlets import Unicode

from .._errors import ProvisionerConfigError, ProvisionerError
from ..connection import PORT_NAMES, ConnectionInfo, validate_connection_info
from ..kernelspec import KernelSpec
from ..provisioning import (
    JUPYTER_PREFIX,
    KILL_WAIT_TIME,
    KernelProvisionerBase,
    KernelProvisionerFactory,
    LocalProvisioner,
)

__all__ = ["NurseryForkServerProvisioner", "NurseryLocalProvisioner", "NurseryProvisioner"]

#: What get_shutdown_wait_time() tells the kernel manager once this provisioner times the
#: escalation itself: the manager waits half of it, twice, with one look at the kernel first,
#: which finds it gone when it went within our own (awaited) grace periods.
_MANAGER_WINDOW = 0.2


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

    The connection file is the one the kernel manager names (``km.connection_file``) when it
    names one, written once by our provisioner; the manager loads its connection info from it.
    CurveZMQ encryption (jupyter_client's ``transport_encryption="required"``) is refused with
    a :class:`~kernel_nursery.ProvisionerError`: our provisioners do not write curve keys yet.

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
            # jupyter_client's manager compares the connection info we return with the file
            # and with its own copy, curve keys included, and rewrites the file on a mismatch:
            # not safe under a kernel that is reading it. Until the keys are carried across,
            # kernels run in clear through this bridge, as with jupyter_client before 8.9.
            if config.get("transport_encryption", "disabled") != "disabled":
                raise ProvisionerConfigError(
                    "transport_encryption: CurveZMQ is not available through jupyter_client's "
                    "kernel managers yet; use kernel-nursery's own KernelManager for it"
                )
            inner.set_trait("transport_encryption", "disabled")
        km = self.parent
        for name in ("transport", "ip"):
            value = getattr(km, name, None)
            if name == "ip" and getattr(km, "transport", "tcp") != "tcp":
                continue  # jupyter_client's ipc default is a relative path; ours is safer
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
        return await self._inner.poll()

    async def wait(self) -> int | None:
        """Await the kernel's exit (never a polling loop) and return its status."""
        return await self._inner.wait()

    async def send_signal(self, signum: int) -> None:
        await self._inner.send_signal(signum)

    async def kill(self, restart: bool = False) -> None:
        """SIGKILL to the kernel's process group, then await its exit (at most
        :data:`~kernel_nursery.provisioning.KILL_WAIT_TIME`), so the kernel manager's next look
        finds it gone instead of sleeping 100 ms first."""
        await self._inner.kill(restart)
        await self._await_exit(KILL_WAIT_TIME)

    async def terminate(self, restart: bool = False) -> None:
        """SIGTERM to the kernel's process group. During a shutdown begun with a request,
        then await the exit for half the shutdown wait time (what the manager would poll)."""
        await self._inner.terminate(restart)
        if self._escalating:
            await self._await_exit(self._grace() / 2)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """Our provisioner's hook, then await the kernel's exit for half the shutdown wait time
        (the manager's schedule) and take the escalation's timing over from the manager."""
        await self._inner.shutdown_requested(restart=restart)
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
        if not self._inner.has_process or not math.isfinite(seconds) or seconds <= 0:
            return
        with anyio.move_on_after(seconds):
            await self._inner.wait()

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Our provisioner's ``pre_launch`` (ports, connection file, command, environment), at
        the kernel manager's connection file path; the manager then learns the connection
        info. After ``restart_kernel(newports=True)`` (the manager forgot its ports) the old
        ports are released and new ones reserved.

        Unlike jupyter_client's provisioners this does not call the upstream base class's
        ``pre_launch``: ours builds the environment the same way.

        Raises:
            ProvisionerError: the kernel manager requires CurveZMQ encryption.
        """
        km = self.parent
        policy = getattr(km, "_transport_encryption_policy", None)
        if callable(policy) and policy() == "required":
            raise ProvisionerError(
                "kernel-nursery's provisioners do not encrypt with CurveZMQ yet: set "
                "KernelManager.transport_encryption to 'disabled' or 'auto' for this kernel"
            )
        inner = self._inner
        if inner.connection_info and km is not None and not any(_km_ports(km)):
            # The kernel manager dropped its ports (restart with newports): so do we.
            await inner.cleanup(restart=False)
        if not inner.connection_info and km is not None and all(_km_ports(km)):
            inner.connection_info = dict(_from_jupyter_info(km.get_connection_info()))
        km_file = getattr(km, "connection_file", "")
        if (
            km_file
            and inner.has_trait("connection_file")
            and not inner.trait_values().get("connection_file")
        ):
            inner.set_trait("connection_file", km_file)
        kw = await inner.pre_launch(**kwargs)
        info = _to_jupyter_info(validate_connection_info(inner.connection_info))
        self.connection_info = info
        if km is not None:
            own_file = getattr(inner, "connection_file", "")
            if own_file and hasattr(km, "connection_file"):
                km.connection_file = own_file
            km.load_connection_info(info)
        cwd = kw.get("cwd")
        self._cwd = str(cwd) if cwd is not None else os.getcwd()
        return kw

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Our provisioner's ``launch_kernel``; a failed or cancelled launch leaves nothing."""
        self._escalating = False
        info = await self._inner.launch_kernel(cmd, **kwargs)
        self.connection_info = _to_jupyter_info(info)
        return self.connection_info

    async def post_launch(self, **kwargs: Any) -> None:
        await self._inner.post_launch(**kwargs)

    async def cleanup(self, restart: bool = False) -> None:
        """Our provisioner's ``cleanup``: anything left in the kernel's process group is killed,
        the kernel reaped; unless *restart*, ports and connection file are released."""
        self._escalating = False
        await self._inner.cleanup(restart=restart)

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
            "info": await self._inner.get_provisioner_info(),
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
        await self._inner.load_provisioner_info(saved["info"])


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

    .. versionadded:: 0.2
    """

    fixed_provisioner_name: ClassVar[str | None] = "forkserver"


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
