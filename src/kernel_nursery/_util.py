"""Small helpers shared by the public faces of the package."""

from __future__ import annotations

from typing import Any

__all__ = ["fixup_module_metadata"]


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
