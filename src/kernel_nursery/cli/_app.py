"""The ``kernel-nursery`` command: kernel specs, provisioners, running kernels; start and run."""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from .._limits import raise_open_file_limit
from ._base import KernelNurseryCommand, exit_on_user_error
from ._kernels import KernelsApp
from ._output import install_stderr
from ._run import RunApp
from ._specs import ProvisionersApp, SpecsApp, SpecsInstallApp
from ._start import StartApp

__all__ = ["KernelNurseryApp", "main"]


class KernelNurseryApp(KernelNurseryCommand):
    """kernel-nursery: launch and supervise Jupyter kernels."""

    name = "kernel-nursery"
    usage = "Usage: kernel-nursery SUBCOMMAND [ARGUMENTS] [OPTIONS]   (options go after it)"
    description = "Launch and supervise Jupyter kernels (trio or asyncio)."
    examples = """
kernel-nursery run python3 "print(6 * 7)"
kernel-nursery start ir
kernel-nursery specs --json
kernel-nursery run --help
"""
    #: Every configurable class, so that --help-all and --generate-config show them all.
    classes: ClassVar[list[Any]] = [  # type: ignore[misc]
        *KernelNurseryCommand.classes,
        RunApp,
        StartApp,
        SpecsInstallApp,
        KernelsApp,
    ]
    subcommands: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        "run": (RunApp, RunApp.description.split(". ")[0] + "."),
        "start": (StartApp, StartApp.description.split(". ")[0] + "."),
        "specs": (SpecsApp, "List, show, install and remove kernel specs."),
        "kernels": (KernelsApp, "List the kernels in the runtime directory; remove stale ones."),
        "provisioners": (ProvisionersApp, ProvisionersApp.description),
    }

    def start(self) -> None:
        if self.subapp is not None:
            # As servers do: the hard limit, not the often-small soft one, bounds the kernels.
            old, new = raise_open_file_limit()
            if new != old:
                self.subapp.log.debug("Raised the soft limit on open files from %d to %d", old, new)
            else:
                self.subapp.log.debug("Soft limit on open files: %d (the hard limit)", new)
            self.subapp.start()
            return
        if self.generate_config:
            self.write_default_config()
            return
        names = ", ".join(self.subcommands)
        if not self.extra_args:
            self.fail(f"which subcommand? {names} (kernel-nursery --help for more)")
        first = self.extra_args[0]
        if first in self.subcommands:
            self.fail(f"options go after the subcommand: kernel-nursery {first} [OPTIONS] ...")
        self.fail(f"unknown subcommand {first!r}; the subcommands are {names}")


def main(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    restore = install_stderr()
    stdout = sys.stdout
    if stdout is None:
        # Started with standard output closed (>&-): what would go there is dropped, as
        # Python's print() does then, rather than failing once the kernel runs.
        sys.stdout = open(os.devnull, "w")
    try:
        exit_on_user_error(lambda: KernelNurseryApp.launch_instance(argv=argv))
    finally:
        restore()
        sys.stdout = stdout
