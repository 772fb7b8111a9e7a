"""The public surface: what users import is declared, documented and lives where it says."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

import kernel_nursery

PUBLIC_MODULES = [
    "kernel_nursery",
    "kernel_nursery.blocking",
    "kernel_nursery.connection",
    "kernel_nursery.kernelspec",
    "kernel_nursery.manager",
    "kernel_nursery.messaging",
    "kernel_nursery.provisioning",
    "kernel_nursery.compat",
    "kernel_nursery.wire",
]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_exist_are_documented_and_report_a_public_home(module_name: str) -> None:
    """Every name in __all__ exists, has a docstring, and its __module__ is a public module."""
    module = importlib.import_module(module_name)
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ in PUBLIC_MODULES, f"{module_name}.{name}: {obj.__module__}"
            assert obj.__doc__, f"{module_name}.{name} has no docstring"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_no_public_name_is_left_out_of_all(module_name: str) -> None:
    """Classes and functions without a leading underscore are in __all__."""
    module = importlib.import_module(module_name)
    public = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "").startswith("kernel_nursery")
    }
    assert public <= set(module.__all__)


def test_top_level_reexports_match_subpackages() -> None:
    """A name available at the top and in a subpackage is the same object."""
    for sub in PUBLIC_MODULES[1:]:
        if sub == "kernel_nursery.blocking":
            continue  # the synchronous twins of async names (start_kernel), by design
        module = importlib.import_module(sub)
        for name in set(module.__all__) & set(kernel_nursery.__all__):
            assert getattr(module, name) is getattr(kernel_nursery, name)


def test_errors_share_one_root() -> None:
    """Every exception class kernel-nursery exports derives from KernelNurseryError."""
    for name in kernel_nursery.__all__:
        obj = getattr(kernel_nursery, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, kernel_nursery.KernelNurseryError), name


def test_py_typed_is_shipped() -> None:
    """The package declares itself typed."""
    assert (Path(kernel_nursery.__file__).parent / "py.typed").exists()
