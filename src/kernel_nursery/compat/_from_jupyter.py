"""jupyter_client's provisioners inside kernel-nursery: one of ours that drives one of theirs.

jupyter_client's provisioners are asyncio code written for its kernel managers: they read the
kernel manager that is their ``parent`` (its ports, its connection file, its command template).
:class:`JupyterProvisioner` gives the one it drives such a parent (a jupyter_client
``AsyncKernelManager`` used only as that: it never starts anything itself), and runs its
coroutines on the running loop under asyncio, or under trio on a private asyncio loop in a
thread of its own, with cancellation carried across.
"""

from __future__ import annotations

# jupyter_client's provisioners are asyncio coroutines; under trio they run on an asyncio loop
# of their own (a thread), under asyncio on the running loop.
import asyncio  # backend-specific: jupyter_client's provisioners are asyncio code
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
from traitlets import Dict, Enum, TraitError, Unicode

from .._errors import ProvisionerConfigError, ProvisionerError
from .._platform import LINUX
from ..connection import ConnectionInfo, connection_file_path, validate_connection_info
from ..provisioning import KILL_WAIT_TIME, KernelProvisionerBase, _guardian
from ..provisioning._process import process_start_time, wait_for_group_exit
from ._loop_thread import CANCEL_WAIT, LoopThread

__all__ = ["CANCEL_WAIT", "JUPYTER_GROUP", "JupyterProvisioner"]

#: jupyter_client's entry-point group of provisioners.
JUPYTER_GROUP = "jupyter_client.kernel_provisioners"
T = TypeVar("T")


class JupyterProvisioner(KernelProvisionerBase):
    """Runs a kernel with a provisioner written for jupyter_client.

    Created by :class:`~kernel_nursery.provisioning.KernelProvisionerFactory` for provisioner
    names of the form ``jupyter:<name>``, where ``<name>`` is registered in jupyter_client's
    entry-point group ``jupyter_client.kernel_provisioners`` (``jupyter:local-provisioner`` is
    jupyter_client's own ``LocalProvisioner``). The stanza's ``config`` sets that provisioner's
    traits, checked against them.

    Under asyncio its coroutines run on the running loop; under trio on a private asyncio loop
    in a thread of this provisioner's, so a provisioner that blocks its loop blocks only that
    one. Cancellation is carried across: a cancelled call is cancelled on that loop, waited for
    (at most :data:`CANCEL_WAIT` seconds), and a cancelled or failed launch leaves nothing (the
    kernel is killed and reaped, the connection file removed, the ports returned).

    What kernel-nursery adds: when the provisioner runs a local child process
    (``subprocess.Popen``, as jupyter_client's ``LocalProvisioner`` does), :meth:`wait` awaits
    its exit through a pidfd instead of jupyter_client's 100 ms polls, :meth:`cleanup` kills
    what is left in its process group and reaps it, and the kernel is registered with this
    process's guardian, so that it does not outlive this process even if it is killed.

    .. versionadded:: 0.1
    """

    jupyter_provisioner_name = Unicode(
        "local-provisioner", help="The provisioner's name in jupyter_client's entry-point group."
    )
    jupyter_config = Dict(help="The trait values the jupyter_client provisioner is created with.")
    transport = Enum(
        ["tcp", "ipc"], default_value="tcp", config=True, help="Transport of the kernel's sockets."
    )
    ip = Unicode("", config=True, help="Address (tcp) or path prefix (ipc); empty: the default.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._km, self._inner = self._create()
        self._thread: LoopThread | None = None
        self._launched = False
        self._status: int | None = None
        self._reap_lock = anyio.Lock()
        self._guard_token: int | None = None  # the local child's registration with the guardian

    def _create(self) -> tuple[Any, Any]:
        from jupyter_client.kernelspec import KernelSpec as JupyterKernelSpec
        from jupyter_client.manager import AsyncKernelManager

        name = self.jupyter_provisioner_name
        found = [ep for ep in entry_points(group=JUPYTER_GROUP) if ep.name == name]
        if not found:
            raise ModuleNotFoundError(
                f"jupyter_client provisioner {name!r} is not registered in entry-point group "
                f"{JUPYTER_GROUP!r}; install the package that provides it",
                name=name,
            )
        try:
            cls = found[0].load()
        except Exception as exc:
            raise ProvisionerError(
                f"jupyter_client provisioner {name!r} failed to load: {exc}"
            ) from exc
        from jupyter_client.provisioning.provisioner_base import (
            KernelProvisionerBase as JupyterProvisionerBase,
        )

        if not (isinstance(cls, type) and issubclass(cls, JupyterProvisionerBase)):
            raise ProvisionerError(
                f"jupyter_client provisioner {name!r} ({found[0].value}) is not a "
                "jupyter_client KernelProvisionerBase subclass"
            )
        config = dict(self.jupyter_config)

        # Twin of provisioning/_factory.py _check_config: the same checks against jupyter_client's
        # internal traits, with messages that name the foreign provisioner as such.
        internal = sorted(set(config) & set(JupyterProvisionerBase.class_trait_names()))
        if internal:
            raise ProvisionerConfigError(
                f"jupyter_client provisioner {name!r}: config may not set "
                f"{', '.join(map(repr, internal))}, which the kernel manager sets"
            )
        unknown = sorted(set(config) - set(cls.class_trait_names()))
        if unknown:
            raise ProvisionerConfigError(
                f"jupyter_client provisioner {name!r} has no trait(s) "
                f"{', '.join(map(repr, unknown))}"
            )
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError("JupyterProvisioner needs a kernel_spec")
        data = spec.to_dict()
        data["metadata"]["kernel_provisioner"] = {"provisioner_name": name, "config": config}
        jupyter_spec = JupyterKernelSpec(resource_dir=spec.resource_dir, **data)
        kernel_id = self.kernel_id or ""
        km = AsyncKernelManager(kernel_id=kernel_id, kernel_name=spec.name)
        km._kernel_spec = jupyter_spec  # the spec as given, not looked up again by name
        km.connection_file = str(connection_file_path(kernel_id)) if kernel_id else ""
        try:
            inner = cls(kernel_id=kernel_id, kernel_spec=jupyter_spec, parent=km, **config)
        except TraitError as exc:
            raise ProvisionerConfigError(f"jupyter_client provisioner {name!r}: {exc}") from exc
        return km, inner

    # ------------------------------------------------------------------ running their code

    async def _run(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` on the provisioner's loop (see the class)."""
        if _on_asyncio():
            return await fn(*args, **kwargs)
        if self._thread is None:
            self._thread = LoopThread(what="a jupyter_client provisioner")

        async def call() -> T:
            return await fn(*args, **kwargs)

        return await self._thread.run(call())

    async def _run_within(
        self, seconds: float, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> None:
        """``await fn(*args, **kwargs)`` as :meth:`_run`, for cleanup: the call and, when it is
        cut short, its unwinding on the private loop take *seconds* at most together (a call
        still running then is abandoned there, and dropped when the loop stops)."""
        deadline = anyio.current_time() + seconds
        with anyio.move_on_after(seconds):
            if _on_asyncio():
                await fn(*args, **kwargs)
                return
            if self._thread is None:
                self._thread = LoopThread(what="a jupyter_client provisioner")

            async def call() -> Any:
                return await fn(*args, **kwargs)

            await self._thread.run(call(), deadline=deadline)

    @property
    def inner(self) -> Any:
        """The jupyter_client provisioner that runs the kernel."""
        return self._inner

    @property
    def connection_file(self) -> str:
        """The connection file its kernel manager wrote (empty before the launch)."""
        return str(self._km.connection_file or "")

    @property
    def pid(self) -> int | None:
        """The kernel's process id, when the provisioner runs a local process."""
        pid = getattr(self._inner, "pid", None)
        return pid if isinstance(pid, int) and self._launched else None

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._launched

    async def poll(self) -> int | None:
        """``None`` while the kernel runs, else its exit status. A local child's status is read
        without reaping it (``waitid`` with ``WNOWAIT``): while it is unreaped, its process group
        number cannot be reused, so :meth:`cleanup` can still kill what it left there."""
        if self._status is not None or not self._launched:
            return self._status if self._status is not None else 0
        child = _child(self._inner)
        status: int | None
        if child is not None and hasattr(os, "waitid"):
            status = _child_status(child)
        else:
            status = await self._run(self._inner.poll)
        if status is not None:
            self._status = status
        return status

    async def wait(self) -> int | None:
        """Await the kernel's exit: through a pidfd when the provisioner runs a local child
        process (reaped later, by :meth:`cleanup`), else with the provisioner's own ``wait``.
        Cancelling it leaves the kernel as it is."""
        if not self._launched:
            return await self.poll()
        if self._status is None and _child(self._inner) is not None:
            await _await_child_exit(self._inner)
            if await self.poll() is not None:
                return self._status
        async with self._reap_lock:
            if self._status is None:
                self._status = await self._run(self._inner.wait)
        return self._status

    async def send_signal(self, signum: int) -> None:
        if not self._launched:
            return
        try:
            await self._run(self._inner.send_signal, signum)
        except ProcessLookupError:
            pass  # it has exited: not an error

    async def kill(self, restart: bool = False) -> None:
        if self._launched:
            await self._run(self._inner.kill, restart)

    async def terminate(self, restart: bool = False) -> None:
        if self._launched:
            await self._run(self._inner.terminate, restart)

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """The provisioner's ``pre_launch``, with its kernel manager given our transport and
        ip. If it fails or is cancelled, what it made (connection file, ports) is released."""
        self._km.transport = self.transport
        if self.ip:
            self._km.ip = self.ip
        try:
            result: dict[str, Any] = await self._run(self._inner.pre_launch, **kwargs)
        except BaseException:
            with anyio.CancelScope(shield=True):  # bounded: _release is (CANCEL_WAIT each)
                await self._release()
            raise
        return result

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """The provisioner's ``launch_kernel``; the kernel manager writes the connection file
        if the provisioner did not. A failed or cancelled launch leaves nothing."""
        self._status = None
        try:
            info = await self._run(self._inner.launch_kernel, cmd, **kwargs)
            self._launched = True
            await _guardian.register_off_loop(self._guard)
            await anyio.lowlevel.checkpoint_if_cancelled()  # once registered: cleanup unregisters
            self._km._reconcile_connection_info(info)
            ours = _from_jupyter_info(info)
        except BaseException:
            with anyio.CancelScope(shield=True):  # bounded: cleanup is (see its docstring)
                self._launched = bool(getattr(self._inner, "has_process", False))
                await self.cleanup(restart=False)
            raise
        self.connection_info = dict(ours)
        return ours

    async def post_launch(self, **kwargs: Any) -> None:
        await self._run(self._inner.post_launch, **kwargs)

    async def shutdown_requested(self, restart: bool = False) -> None:
        await self._run(self._inner.shutdown_requested, restart=restart)

    def get_shutdown_wait_time(self, recommended: float | None = None) -> float:
        ours = super().get_shutdown_wait_time(recommended)
        return float(self._inner.get_shutdown_wait_time(recommended=ours))

    def get_stable_start_time(self, recommended: float | None = None) -> float:
        ours = super().get_stable_start_time(recommended)
        return float(self._inner.get_stable_start_time(recommended=ours))

    # ------------------------------------------------------------------ cleanup

    async def cleanup(self, restart: bool = False) -> None:
        """Kill what is left of the kernel (its process group, for a local child), reap it,
        then the provisioner's ``cleanup``; unless *restart*, the connection file is removed
        and the private loop (under trio) stopped. Shielded; each wait bounded, each call to
        the provisioner too (:data:`CANCEL_WAIT` for a hang): one that raises or hangs still
        leaves no file, thread, zombie or guardian registration behind, and what it raised
        propagates afterwards."""
        with anyio.CancelScope(shield=True):  # bounded: each wait and call below has a deadline
            try:
                if self._launched:
                    await self._kill_and_reap(restart)
            finally:
                self._unguard()
                self._launched = False
                if restart:
                    await self._run_within(CANCEL_WAIT, self._inner.cleanup, True)
                else:
                    await self._release()

    async def _kill_and_reap(self, restart: bool) -> None:
        pgid = _child_group(self._inner)
        child = _child(self._inner)
        try:
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            else:
                with anyio.move_on_after(CANCEL_WAIT):
                    if await self.poll() is None:
                        await self.kill(restart)
            with anyio.move_on_after(KILL_WAIT_TIME):
                await self.wait()
                if pgid is not None:
                    await wait_for_group_exit(pgid)
            if self._status is None:
                self.log.error("Kernel %s did not exit after SIGKILL", self.kernel_id)
            elif child is not None:
                # It has exited: their wait reaps it.
                await self._run_within(KILL_WAIT_TIME, self._inner.wait)
        finally:
            if child is not None and child.returncode is None and self._status is not None:
                child.poll()  # their wait failed or hung: reap the exited child ourselves

    async def _release(self) -> None:
        """The provisioner's ``cleanup(restart=False)`` (bounded), the connection file removed;
        the private loop stopped (those two even when the provisioner's ``cleanup`` raises)."""
        try:
            await self._run_within(CANCEL_WAIT, self._inner.cleanup, False)
        finally:
            self._km.cleanup_connection_file()
            self._km.cleanup_ipc_files()
            self.connection_info = {}
            thread, self._thread = self._thread, None
            if thread is not None:
                await thread.aclose()

    def _guard(self) -> None:
        """A local child is registered with this process's guardian, as our own kernels are:
        if this process dies without cleaning up, even by SIGKILL, the guardian stops the
        kernel's process group and removes its connection file. Run by
        :func:`~kernel_nursery.provisioning._guardian.register_off_loop` (the first
        registration spawns the guardian)."""
        child = _child(self._inner)
        if child is None or not _guardian.SUPPORTED or self._guard_token is not None:
            return
        self._guard_token = _guardian.register(
            child.pid,
            pgid=_child_group(self._inner),
            start_time=process_start_time(child.pid),
            connection_file=self.connection_file or None,
            log=self.log,
        )

    def _unguard(self) -> None:
        token, self._guard_token = self._guard_token, None
        if token is not None:
            _guardian.unregister(token, log=self.log)

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """The base info plus ``jupyter``: the jupyter_client provisioner's own info (its key
        as text, so that it is plain JSON)."""
        info = await super().get_provisioner_info()
        theirs: dict[str, Any] = await self._run(self._inner.get_provisioner_info)
        theirs = dict(theirs)
        if isinstance(theirs.get("connection_info"), dict):
            theirs["connection_info"] = dict(_from_jupyter_info(theirs["connection_info"]))
        info["jupyter"] = theirs
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`get_provisioner_info` into both provisioners
        (jupyter_client's records the kernel; whether it can act on it is its own matter)."""
        await super().load_provisioner_info(provisioner_info)
        theirs = dict(provisioner_info.get("jupyter") or {})
        if isinstance(theirs.get("connection_info"), dict):
            key = theirs["connection_info"].get("key", "")
            theirs["connection_info"] = {
                **theirs["connection_info"],
                "key": key.encode() if isinstance(key, str) else key,
            }
        await self._run(self._inner.load_provisioner_info, theirs)
        self._launched = bool(getattr(self._inner, "has_process", False))


def _on_asyncio() -> bool:
    """Whether the running event loop is asyncio's (else trio's)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no asyncio loop runs in this thread
        return False


def _child(inner: Any) -> subprocess.Popen[Any] | None:
    process = getattr(inner, "process", None)
    return process if isinstance(process, subprocess.Popen) else None


def _child_status(child: subprocess.Popen[Any]) -> int | None:
    """The child's exit status (negative: the signal that killed it) without reaping it, or
    ``None`` while it runs."""
    if child.returncode is not None:
        return child.returncode
    try:
        info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped behind our back: Popen will report it
        return child.poll()
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _child_group(inner: Any) -> int | None:
    """The process group the provisioner's local child leads (jupyter_client starts kernels in
    a new session), while the child is unreaped: only then can the number not be reused."""
    child = _child(inner)
    if child is None or child.returncode is not None:
        return None
    pgid = getattr(inner, "pgid", None)
    return pgid if isinstance(pgid, int) and pgid == child.pid else None


async def _await_child_exit(inner: Any) -> None:
    """Await the exit of the provisioner's local child through a pidfd (readable at its exit);
    returns at once when there is none, or no pidfds, or it has been reaped."""
    child = _child(inner)
    if child is None or child.returncode is not None or not LINUX:
        return
    try:
        pidfd = os.pidfd_open(child.pid)
    except ProcessLookupError:
        return
    try:
        if child.returncode is None:  # not reaped before the pidfd was opened: it is our child
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def _from_jupyter_info(info: Any) -> ConnectionInfo:
    """jupyter_client's connection info as ours: the key and CurveZMQ keys as text (ours
    encrypts with the keys too, when the provisioner's kernel manager made some)."""
    converted = {k: v for k, v in dict(info).items() if v is not None}
    for name in ("key", "curve_publickey", "curve_secretkey"):
        value = converted.get(name)
        if isinstance(value, bytes):
            converted[name] = value.decode()
    converted.setdefault("key", "")
    return validate_connection_info(cast("dict[str, Any]", converted))
