"""Small helpers shared by the public faces of the package."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["deprecated_attribute", "fixup_module_metadata"]


def fixup_module_metadata(module_name: str, namespace: dict[str, Any]) -> None:
    """Make the names in ``namespace["__all__"]`` that are defined in a private module
    (``kernel_nursery.<...>._name``) report *module_name* as their ``__module__``.

    The implementation lives in private modules; users (and tracebacks, docs, reprs) should see
    the public path they import from, as trio and anyio do. Names already re-exported by a public
    subpackage keep that subpackage as their home.
    """
    for name in namespace["__all__"]:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if (
            isinstance(module, str)
            and module.startswith("kernel_nursery")
            and "._" in module
            and hasattr(obj, "__qualname__")
        ):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):  # some objects (aliases) refuse it; harmless
                pass


def deprecated_attribute(module_name: str, name: str, moved: Mapping[str, tuple[str, str]]) -> Any:
    """The object a module's deprecated attribute *name* stands for, with a
    :class:`DeprecationWarning` saying where it lives now; for a module's ``__getattr__``.

    *moved* maps each old name to the module and name that replace it. The object returned is
    the new one itself (a renamed class is the same class, so ``except`` and ``isinstance``
    with either name match the same errors). Names were moved or renamed, rather than removed,
    so that code written against an earlier release keeps working while it is updated.

    Raises:
        AttributeError: *name* is not a deprecated name of the module either.
    """
    try:
        new_module, new_name = moved[name]
    except KeyError:
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
    warnings.warn(
        f"{module_name}.{name} is deprecated (moved before the first release): "
        f"use {new_module}.{new_name}",
        DeprecationWarning,
        stacklevel=3,  # the code that imports or reads the name, past the module's __getattr__
    )
    return getattr(importlib.import_module(new_module), new_name)
