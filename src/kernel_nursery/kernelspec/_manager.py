"""``KernelSpecManager``: finding kernel specs where Jupyter puts them.

Discovery sits above :mod:`kernel_nursery.provisioning` (it asks the provisioner factory which
kernels can be started); the spec data it returns, :class:`~kernel_nursery.kernelspec.KernelSpec`,
sits below it (``kernel_nursery._kernelspec``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_path
from traitlets import Bool, Instance, List, Set, Unicode, default
from traitlets.config import LoggingConfigurable

from .._errors import KernelSpecError, NoSuchKernelSpecError
from .._kernelspec import KernelSpec
from ..provisioning import KernelProvisionerFactory

__all__ = ["NATIVE_KERNEL_NAME", "KernelSpecManager"]

#: The name under which ipykernel's own spec is offered when no installed spec has it.
NATIVE_KERNEL_NAME = "python3"

_VALID_NAME = re.compile(r"^[a-z0-9._-]+$")


class KernelSpecManager(LoggingConfigurable):
    """Finds the kernel specs (``<dir>/<name>/kernel.json``) installed on this machine.

    It searches the ``kernels`` folder of each Jupyter data directory, in Jupyter's order
    (``JUPYTER_PATH``, the user's data directory, the environment's, the system's): where two
    directories hold a kernel of the same name, the earlier one wins, exactly as for ``jupyter
    kernelspec list``. Names are case-insensitive (they are lowercased) and made of
    ``a-z 0-9 . _ -``; directories with other names are skipped with a warning.

    Kernels whose provisioner is not installed are left out (see
    :meth:`~kernel_nursery.provisioning.KernelProvisionerFactory.is_provisioner_available`).

    Its methods read directories and files: they are synchronous, and async code calls them in
    a worker thread (:meth:`~kernel_nursery.KernelManager.start_kernel` does), where they can
    be abandoned on cancellation since they create nothing.

    .. versionadded:: 0.1
    """

    kernel_dirs = List(
        Unicode(),
        config=True,
        help="Directories searched for kernel specs, in order of precedence. "
        "Default: the 'kernels' folder of each of Jupyter's data directories.",
    )

    @default("kernel_dirs")
    def _kernel_dirs_default(self) -> list[str]:
        return jupyter_path("kernels")

    ensure_native_kernel = Bool(
        True,
        config=True,
        help=f"Offer ipykernel's own spec as {NATIVE_KERNEL_NAME!r} when ipykernel is importable "
        "and no installed spec has that name.",
    )
    allowed_kernelspecs = Set(
        Unicode(),
        config=True,
        help="When not empty, only the kernels named here are listed or can be started.",
    )

    provisioner_factory = Instance(
        KernelProvisionerFactory,
        help="The factory asked whether a kernel's provisioner is installed. Default: "
        "KernelProvisionerFactory.for_parent(this manager), so that configuration given to "
        "this manager (or its parent) reaches it.",
    )

    @default("provisioner_factory")
    def _provisioner_factory_default(self) -> KernelProvisionerFactory:
        return KernelProvisionerFactory.for_parent(self)

    def find_kernel_specs(self) -> dict[str, str]:
        """Every kernel name → its resource directory (kernel.json files are not read here).

        Kernels whose provisioner is unavailable are not filtered out here, since that needs
        each kernel.json; :meth:`get_all_specs` and :meth:`get_kernel_spec` do it.
        """
        found: dict[str, str] = {}
        for kernel_dir in self.kernel_dirs:
            for name, path in _list_kernels_in(kernel_dir, self.log).items():
                found.setdefault(name, path)
        if self.ensure_native_kernel and NATIVE_KERNEL_NAME not in found:
            native = _native_resource_dir()
            if native is not None:
                found[NATIVE_KERNEL_NAME] = native
        if self.allowed_kernelspecs:
            found = {n: p for n, p in found.items() if n in self.allowed_kernelspecs}
        return found

    def get_kernel_spec(self, kernel_name: str, *, require_provisioner: bool = True) -> KernelSpec:
        """The spec of *kernel_name* (case-insensitive).

        With *require_provisioner* false, a spec whose provisioner is not installed is returned
        too (to show it, say); it cannot be started.

        Raises:
            NoSuchKernelSpecError: no such kernel, or its provisioner is not installed (the message
                lists the kernels that exist).
            KernelSpecError: its kernel.json is invalid (the message names the file and field).
        """
        name = kernel_name.lower()
        specs = self.find_kernel_specs()
        resource_dir = specs.get(name)
        if resource_dir is None:
            raise NoSuchKernelSpecError(kernel_name, list(specs), hint=self._missing_hint(name))
        spec = self._load(name, resource_dir)
        if require_provisioner and not self.provisioner_factory.is_provisioner_available(spec):
            stanza = spec.kernel_provisioner
            provisioner = (
                repr(stanza["provisioner_name"])
                if stanza
                else f"{self.provisioner_factory.default_provisioner_name!r} (the default)"
            )
            raise NoSuchKernelSpecError(
                kernel_name,
                [n for n in specs if n != name],
                reason=f"its provisioner {provisioner} is not installed",
            )
        return spec

    def _missing_hint(self, name: str) -> str | None:
        """What would make kernel *name* available, when that is known (else ``None``, and
        the error suggests the closest name)."""
        if self.allowed_kernelspecs and name not in self.allowed_kernelspecs:
            return "only the kernels in KernelSpecManager.allowed_kernelspecs can be used"
        if name != NATIVE_KERNEL_NAME:
            return None
        if _native_resource_dir() is None:
            return "ipykernel provides it: pip install ipykernel"
        # ipykernel is here, but not offered (ensure_native_kernel is off): register it.
        return f"ipykernel provides it: {sys.executable} -m ipykernel install --user"

    def get_all_specs(self) -> dict[str, dict[str, Any]]:
        """Every usable kernel: name → ``{"resource_dir": ..., "spec": <kernel.json dict>}``.

        The shape of ``jupyter kernelspec list --json``. Kernels with an invalid kernel.json or an
        unavailable provisioner are left out, with a warning in the log.
        """
        result: dict[str, dict[str, Any]] = {}
        factory = self.provisioner_factory
        for name, resource_dir in self.find_kernel_specs().items():
            try:
                spec = self._load(name, resource_dir)
            except KernelSpecError as exc:
                self.log.warning("Skipping kernel %r: %s", name, exc)
                continue
            if factory.is_provisioner_available(spec):
                result[name] = {"resource_dir": resource_dir, "spec": spec.to_dict()}
        return result

    def _load(self, name: str, resource_dir: str) -> KernelSpec:
        if (
            name == NATIVE_KERNEL_NAME
            and resource_dir == _native_resource_dir()
            and not os.path.isfile(os.path.join(resource_dir, "kernel.json"))
        ):
            return _native_spec(resource_dir)
        spec = KernelSpec.from_resource_dir(resource_dir)
        # A directory named "Python3" is kernel "python3": keep the lowercased name.
        spec.name = name
        return spec


def _list_kernels_in(kernel_dir: str, log: Any) -> dict[str, str]:
    try:
        with os.scandir(kernel_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as exc:
        log.warning("Cannot list kernel directory %s: %s", kernel_dir, exc)
        return {}
    kernels: dict[str, str] = {}
    for entry in entries:
        if not _is_kernel_dir(entry, log):
            continue
        name = entry.name.lower()
        if not _VALID_NAME.match(name):
            log.warning(
                "Skipping kernel directory %s: a kernel name may only contain "
                "a-z, 0-9, '.', '_' and '-'",
                entry.path,
            )
            continue
        kernels.setdefault(name, entry.path)
    return kernels


def _is_kernel_dir(entry: os.DirEntry[str], log: Any) -> bool:
    """Whether *entry* is a directory holding a ``kernel.json`` file.

    An entry that cannot be examined (a symlink loop, no permission, a ``kernel.json`` that is
    not a file) is skipped with a warning, so that it never hides the kernels next to it.
    Anything else without a kernel.json is not a kernel, and is passed over silently.
    """
    try:
        if not entry.is_dir():
            return False
        st = os.stat(os.path.join(entry.path, "kernel.json"))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        log.warning("Skipping kernel directory %s: %s", entry.path, exc.strerror or exc)
        return False
    if not stat.S_ISREG(st.st_mode):
        log.warning("Skipping kernel directory %s: its kernel.json is not a file", entry.path)
        return False
    return True


def _native_resource_dir() -> str | None:
    """ipykernel's resources folder, found without importing ipykernel (which is slow)."""
    found = importlib.util.find_spec("ipykernel")
    if found is None or found.origin is None:
        return None
    return str(Path(found.origin).parent / "resources")


def _native_spec(resource_dir: str) -> KernelSpec:
    return KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (ipykernel)",
        language="python",
        metadata={"debugger": True},
        resource_dir=resource_dir,
        name=NATIVE_KERNEL_NAME,
    )
