"""``kernel-nursery specs`` (list, show, install, remove) and ``kernel-nursery provisioners``."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir
from traitlets import Bool, Enum, Unicode

from .._errors import KernelNurseryError, KernelSpecError, NoSuchKernelSpecError
from ..kernelspec import KernelSpec, KernelSpecManager
from ..provisioning import KernelProvisionerFactory
from ._base import KernelNurseryCommand
from ._output import say

__all__ = ["ProvisionersApp", "SpecsApp"]

_NAME = re.compile(r"^[a-z0-9._-]+$", re.IGNORECASE)


class _SpecsCommand(KernelNurseryCommand):
    json_output = Bool(False, config=True, help="Print JSON, for scripts.")
    flags: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **KernelNurseryCommand.flags,
        "json": ({"_SpecsCommand": {"json_output": True}}, "Print JSON, for scripts."),
    }

    def spec_rows(self) -> dict[str, dict[str, Any]]:
        """Every installed spec, with its provisioner and whether that is installed; a spec
        that cannot be read is named on stderr with its problem and left out."""
        ksm = KernelSpecManager(parent=self)
        factory = ksm.provisioner_factory
        registered = factory.get_provisioner_entries()
        rows: dict[str, dict[str, Any]] = {}
        for name, resource_dir in sorted(ksm.find_kernel_specs().items()):
            try:
                spec = ksm.get_kernel_spec(name, require_provisioner=False)
            except KernelSpecError as exc:
                say(f"kernel-nursery: skipping {name}: {exc}")
                continue
            stanza = spec.kernel_provisioner
            provisioner = stanza["provisioner_name"] if stanza else factory.default_provisioner_name
            rows[name] = {
                "display_name": spec.display_name,
                "language": spec.language,
                "provisioner": provisioner,
                "available": provisioner in registered,
                "resource_dir": resource_dir,
                "spec": spec.to_dict(),
            }
        return rows

    def print_list(self) -> None:
        """The table of :meth:`spec_rows` (or its JSON, with ``--json``)."""
        rows = self.spec_rows()
        if self.json_output:
            print(json.dumps({"kernelspecs": rows}, indent=2))
            return
        table(
            ["NAME", "DISPLAY NAME", "LANGUAGE", "PROVISIONER", "AVAILABLE", "PATH"],
            [
                [
                    n,
                    r["display_name"],
                    r["language"],
                    r["provisioner"],
                    "yes" if r["available"] else "no",
                    r["resource_dir"],
                ]
                for n, r in rows.items()
            ],
        )


class SpecsListApp(_SpecsCommand):
    """kernel-nursery specs list: the installed kernel specs."""

    name = "kernel-nursery-specs-list"
    usage = "Usage: kernel-nursery specs [list] [--json]"
    description = "List the installed kernel specs and whether their provisioner is available."

    def start(self) -> None:
        if self.extra_args:
            self.fail(f"specs list takes no arguments (got {' '.join(self.extra_args)!r})")
        self.print_list()


class SpecsShowApp(_SpecsCommand):
    """kernel-nursery specs show NAME: one kernel spec, as JSON."""

    name = "kernel-nursery-specs-show"
    usage = "Usage: kernel-nursery specs show NAME"
    description = "Print one kernel spec (its kernel.json, checked) and where it is, as JSON."

    def start(self) -> None:
        if len(self.extra_args) != 1:
            self.fail("usage: kernel-nursery specs show NAME")
        ksm = KernelSpecManager(parent=self)
        try:
            spec = ksm.get_kernel_spec(self.extra_args[0], require_provisioner=False)
        except KernelNurseryError as exc:
            self.fail(str(exc))
        print(json.dumps({"name": spec.name, "resource_dir": spec.resource_dir, **spec.to_dict()}))


class SpecsInstallApp(_SpecsCommand):
    """kernel-nursery specs install DIR: install a kernel spec directory."""

    name = "kernel-nursery-specs-install"
    usage = (
        "Usage: kernel-nursery specs install DIR [--name NAME] [--user | --sys-prefix | "
        "--system] [--replace]"
    )
    description = (
        "Copy a kernel spec directory (holding kernel.json, checked first) into a kernels "
        "folder: the user's (default), this Python environment's (--sys-prefix), or the "
        "system's (--system). Prints the installed directory."
    )
    examples = """
kernel-nursery specs install ./my-kernel
kernel-nursery specs install ./my-kernel --name analysis --sys-prefix --replace
"""
    location = Enum(
        ["user", "sys-prefix", "system"],
        "user",
        config=True,
        help="Where to install: the user's kernels folder, the environment's, the system's.",
    )
    kernel_name = Unicode("", config=True, help="The name to install under (default: DIR's).")
    replace = Bool(False, config=True, help="Replace a spec installed under the same name.")
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **_SpecsCommand.aliases,
        "name": "SpecsInstallApp.kernel_name",
    }
    flags: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **_SpecsCommand.flags,
        "user": ({"SpecsInstallApp": {"location": "user"}}, "Install for this user (default)."),
        "sys-prefix": (
            {"SpecsInstallApp": {"location": "sys-prefix"}},
            f"Install in this Python environment ({sys.prefix}).",
        ),
        "system": (
            {"SpecsInstallApp": {"location": "system"}},
            "Install for every user of the machine.",
        ),
        "replace": ({"SpecsInstallApp": {"replace": True}}, "Replace an existing spec."),
    }

    def start(self) -> None:
        if len(self.extra_args) != 1:
            self.fail("usage: kernel-nursery specs install DIR [--name NAME]")
        source = Path(self.extra_args[0])
        name = (self.kernel_name or source.resolve().name).lower()
        if not _NAME.match(name):
            self.fail(
                f"{name!r} is not a kernel name: use letters, digits, '.', '_' and '-' "
                "(choose one with --name)"
            )
        try:
            KernelSpec.from_resource_dir(source)
        except KernelSpecError as exc:
            self.fail(str(exc))
        kernels = Path(kernels_folder(self.location))
        target = kernels / name
        if target.exists() and not self.replace:
            self.fail(f"a kernel named {name!r} is already installed in {kernels} (--replace)")
        try:
            _copy_into(source, kernels, name)
        except OSError as exc:
            where = exc.filename or kernels
            self.fail(f"cannot install in {where}: {exc.strerror or exc}")
        print(target)


class SpecsRemoveApp(_SpecsCommand):
    """kernel-nursery specs remove NAME...: remove installed kernel specs."""

    name = "kernel-nursery-specs-remove"
    usage = "Usage: kernel-nursery specs remove NAME [NAME ...]"
    description = (
        "Remove installed kernel specs (the directory that `specs list` shows for each name). "
        "Prints each removed directory. Nothing is removed unless every name is installed."
    )

    def start(self) -> None:
        if not self.extra_args:
            self.fail("usage: kernel-nursery specs remove NAME [NAME ...]")
        ksm = KernelSpecManager(parent=self)
        found = ksm.find_kernel_specs()
        kernel_dirs = [Path(d).resolve() for d in ksm.kernel_dirs]
        targets: list[Path] = []
        for name in self.extra_args:
            resource_dir = found.get(name.lower())
            if resource_dir is None:
                self.fail(str(NoSuchKernelSpecError(name, list(found))))
            path = Path(resource_dir)
            if path.resolve().parent not in kernel_dirs:
                self.fail(
                    f"{name!r} ({path}) is not in a kernels folder (it comes with its "
                    "package): not removed"
                )
            targets.append(path)
        for path in targets:
            try:
                shutil.rmtree(path)
            except OSError as exc:
                self.fail(f"cannot remove {exc.filename or path}: {exc.strerror or exc}")
            print(path)


class SpecsApp(_SpecsCommand):
    """kernel-nursery specs: list, show, install and remove kernel specs."""

    name = "kernel-nursery-specs"
    usage = """
Usage: kernel-nursery specs [list] [--json]
       kernel-nursery specs show NAME
       kernel-nursery specs install DIR [--name NAME] [--user | --sys-prefix | --system]
       kernel-nursery specs remove NAME [NAME ...]
"""
    description = SpecsListApp.description
    examples = """
kernel-nursery specs
kernel-nursery specs --json
kernel-nursery specs show python3
kernel-nursery specs install ./my-kernel --sys-prefix
kernel-nursery specs remove my-kernel
"""
    subcommands: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "list": (SpecsListApp, SpecsListApp.description),
        "show": (SpecsShowApp, SpecsShowApp.description),
        "install": (SpecsInstallApp, SpecsInstallApp.description),
        "remove": (SpecsRemoveApp, SpecsRemoveApp.description),
    }

    def start(self) -> None:
        if self.subapp is not None:
            self.subapp.start()
            return
        if self.extra_args:
            self.fail(
                f"unknown specs subcommand {self.extra_args[0]!r}: use list, show, install "
                "or remove"
            )
        self.print_list()


class ProvisionersApp(KernelNurseryCommand):
    """kernel-nursery provisioners: the registered provisioners."""

    name = "kernel-nursery-provisioners"
    usage = "Usage: kernel-nursery provisioners"
    description = "List the provisioners registered in the kernel_nursery.provisioners group."

    def start(self) -> None:
        if self.extra_args:
            self.fail(f"provisioners takes no arguments (got {' '.join(self.extra_args)!r})")
        factory = KernelProvisionerFactory.for_parent(self)
        default = factory.default_provisioner_name
        table(
            ["NAME", "OBJECT", "DEFAULT"],
            [
                [name, value, "*" if name == default else ""]
                for name, value in factory.get_provisioner_entries().items()
            ],
        )


def kernels_folder(location: str) -> str:
    """The kernels folder of a location: ``user``, ``sys-prefix`` or ``system``."""
    if location == "sys-prefix":
        return os.path.join(sys.prefix, "share", "jupyter", "kernels")
    if location == "system":
        return os.path.join(SYSTEM_JUPYTER_PATH[0], "kernels")
    return os.path.join(jupyter_data_dir(), "kernels")


def _copy_into(source: Path, kernels: Path, name: str) -> None:
    """Copy *source* to ``kernels/name`` so that the spec appears whole or not at all: copied
    beside it first, then renamed over (an older spec of that name is removed just before)."""
    kernels.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=kernels))
    try:
        copy = staging / name
        shutil.copytree(source, copy, symlinks=False)
        target = kernels / name
        if target.exists():
            shutil.rmtree(target)
        copy.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns aligned with spaces, a header first."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
