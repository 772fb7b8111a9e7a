"""The public surface: what users import is declared, documented and lives where it says."""

from __future__ import annotations

import importlib
import inspect
import warnings
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
    "kernel_nursery.provisioning.local",
    "kernel_nursery.provisioning.ssh",
    "kernel_nursery.provisioning.slurm",
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


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_errors_share_one_root(module_name: str) -> None:
    """Every exception class kernel-nursery exports, from any public module, derives from
    KernelNurseryError."""
    module = importlib.import_module(module_name)
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, kernel_nursery.KernelNurseryError), name


#: Every public name that moved or was renamed before the first release: (old module, old name,
#: new module, new name). The old place keeps working, with a DeprecationWarning that names the
#: new one.
MOVED = [
    ("kernel_nursery", "NoSuchKernelError", "kernel_nursery", "NoSuchKernelSpecError"),
    ("kernel_nursery", "UnknownKernelError", "kernel_nursery", "UnknownKernelIdError"),
    ("kernel_nursery", "stop_process", "kernel_nursery.provisioning", "shutdown_kernel_process"),
    (
        "kernel_nursery.provisioning",
        "stop_process",
        "kernel_nursery.provisioning",
        "shutdown_kernel_process",
    ),
    *[
        ("kernel_nursery", name, "kernel_nursery.provisioning.ssh", name)
        for name in ("SSHConnectionError", "SSHAuthenticationError", "SSHHostKeyError")
    ],
    ("kernel_nursery", "RemoteLaunchError", "kernel_nursery.provisioning.ssh", "RemoteLaunchError"),
    *[
        ("kernel_nursery", name, "kernel_nursery.provisioning.slurm", name)
        for name in ("JobError", "JobRejectedError", "QueueTimeoutError", "JobEndedError")
    ],
    *[
        ("kernel_nursery", name, "kernel_nursery.provisioning", name)
        for name in ("KernelProvisionerBase", "KernelProvisionerFactory")
    ],
    *[
        ("kernel_nursery", name, "kernel_nursery.wire", name)
        for name in ("Session", "MessageError", "InvalidSignatureError")
    ],
]


@pytest.mark.parametrize(("old_module", "old_name", "new_module", "new_name"), MOVED)
def test_moved_names_still_import_from_their_old_place(
    old_module: str, old_name: str, new_module: str, new_name: str
) -> None:
    """A moved or renamed name imports from its old place with a DeprecationWarning naming its
    new place, and is the very same object (so except/isinstance match either name)."""
    new = getattr(importlib.import_module(new_module), new_name)
    assert new_name in importlib.import_module(new_module).__all__
    assert old_name not in importlib.import_module(old_module).__all__
    says = rf"^{old_module}\.{old_name} is deprecated .*: use {new_module}\.{new_name}$"
    with pytest.warns(DeprecationWarning, match=says):
        old = getattr(importlib.import_module(old_module), old_name)
    assert old is new
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=says):
        exec(f"from {old_module} import {old_name}", namespace)  # noqa: S102
    assert namespace[old_name] is new


def test_provisioner_errors_live_in_their_provisioner_and_derive_from_the_common_ones() -> None:
    """The errors only SSH or Slurm raise are importable from the provisioner's package and
    from kernel_nursery.provisioning, and are launch or provisioner errors."""
    from kernel_nursery import provisioning
    from kernel_nursery.provisioning import slurm, ssh

    for name in ("SSHConnectionError", "SSHAuthenticationError", "SSHHostKeyError"):
        assert getattr(ssh, name) is getattr(provisioning, name)
        assert issubclass(getattr(ssh, name), ssh.SSHConnectionError)
    assert issubclass(ssh.SSHConnectionError, kernel_nursery.LaunchError)
    assert issubclass(ssh.RemoteLaunchError, kernel_nursery.LaunchError)
    for name in ("JobError", "JobRejectedError", "QueueTimeoutError", "JobEndedError"):
        assert getattr(slurm, name) is getattr(provisioning, name)
        assert issubclass(getattr(slurm, name), kernel_nursery.ProvisionerError)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    """A name that never existed raises AttributeError (and no warning), at the top and in
    provisioning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
            _ = kernel_nursery.NoSuchThing
        with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
            _ = kernel_nursery.provisioning.NoSuchThing


def test_py_typed_is_shipped() -> None:
    """The package declares itself typed."""
    assert (Path(kernel_nursery.__file__).parent / "py.typed").exists()
