"""The import graph of src/: no cycles, and the layers of DESIGN.md point downwards.

Imports are read with :mod:`ast`, not by importing: every ``import`` counts, including those
under ``if TYPE_CHECKING:`` and inside functions, since a lazy import hides a dependency without
removing it. Run alone with ``pytest tests/test_layers.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import kernel_nursery

PACKAGE = "kernel_nursery"
ROOT = Path(kernel_nursery.__file__).parent

#: What DESIGN.md says a layer must not know of (beyond what the cycle check already implies).
FORBIDDEN = {
    # provisioning knows nothing of the manager (only the traitlets parent it is given), of
    # messaging, or of kernel spec discovery, which sits above it.
    "provisioning": {"manager", "messaging", "kernelspec", "cli"},
    # messaging knows nothing of processes.
    "messaging": {"provisioning", "manager", "kernelspec", "_kernelspec", "cli"},
    # kernel-spec data and connection info sit at the bottom.
    "_kernelspec": {"provisioning", "kernelspec", "manager", "messaging", "connection", "cli"},
    "connection": {"provisioning", "kernelspec", "_kernelspec", "manager", "messaging", "cli"},
    "_errors": {"provisioning", "kernelspec", "_kernelspec", "manager", "messaging", "connection"},
}

#: The one sideways edge, by module: the start handshake (JEP 66), which the launcher runs,
#: signs its messages with messaging's Session over an awaitable socket rather than with a
#: second signer. Those two modules know nothing of clients, processes or the manager.
SIDEWAYS = {
    "kernel_nursery.provisioning": {
        "kernel_nursery.messaging._wire",
        "kernel_nursery.messaging._socket",
    },
}


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: Iterable[str]) -> set[str]:
    """The package's modules that module *name* imports, wherever in it the import stands.

    ``from X import y`` counts as importing ``X.y`` when that is a module, else ``X``.
    """
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def unit(module: str) -> str:
    """The layer a module belongs to: the subpackage or private module right under the
    package (``kernel_nursery.provisioning._local`` → ``provisioning``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of *edges* (as a path whose first and last node are the same), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def layer_graph() -> dict[str, set[str]]:
    """Layer → the layers it imports. The package's own ``__init__`` (the public face, which
    imports every layer and is imported by none) is left out."""
    layers: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if module == PACKAGE:
            continue
        source = unit(module)
        layers.setdefault(source, set()).update(
            unit(t) for t in targets if t != PACKAGE and unit(t) != source
        )
    return layers


def test_modules_import_no_cycle() -> None:
    """No module of the package imports itself, directly or through others."""
    assert find_cycle(graph()) is None


def test_layers_import_no_cycle() -> None:
    """Between subpackages (and private top-level modules) the imports form no cycle: a module
    imported from a subpackage runs that subpackage's __init__, so this is the cycle that
    counts at import time."""
    assert find_cycle(layer_graph()) is None


def test_layers_respect_design() -> None:
    """Provisioning knows nothing of the manager, messaging or spec discovery; messaging
    nothing of processes; kernel-spec data, connection info and errors import no layer above."""
    layers = layer_graph()
    layers["provisioning"] = layers.get("provisioning", set()) - {"messaging"}  # SIDEWAYS
    wrong = {
        layer: sorted(layers.get(layer, set()) & forbidden)
        for layer, forbidden in FORBIDDEN.items()
        if layers.get(layer, set()) & forbidden
    }
    assert wrong == {}


def test_the_sideways_edge_stays_narrow() -> None:
    """Provisioning uses only messaging's wire format and socket layer (the handshake), and
    those import nothing above the connection layer."""
    edges = graph()
    for source, allowed in SIDEWAYS.items():
        used = {
            target
            for module, targets in edges.items()
            if module == source or module.startswith(source + ".")
            for target in targets
            if target.startswith("kernel_nursery.messaging")
        }
        assert used <= allowed, sorted(used - allowed)
        for module in allowed:
            above = {
                t for t in edges[module] if unit(t) not in {"connection", "_errors", "messaging"}
            }
            assert not above, (module, sorted(above))


def test_the_checker_sees_a_cycle_through_a_package() -> None:
    """The checker itself: the cycle this package once had (kernel spec discovery importing
    provisioning, provisioning importing kernel specs under TYPE_CHECKING) is found."""
    edges = {"kernelspec": {"provisioning"}, "provisioning": {"kernelspec", "connection"}}
    assert find_cycle(edges) == ["kernelspec", "provisioning", "kernelspec"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_checker_reads_relative_and_lazy_imports(tmp_path: Path) -> None:
    """Relative imports resolve against the module (or package) they stand in, and imports
    under TYPE_CHECKING or in a function body count."""
    source = tmp_path / "_mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import _b\n"
        "from .._c import x\n"
        "if TYPE_CHECKING:\n"
        "    from ..d import y\n"
        "def f():\n"
        "    import pkg.e\n"
    )
    known = ["pkg.a._b", "pkg._c", "pkg.d", "pkg.e", "pkg.a"]
    assert imports_of("pkg.a._mod", source, known) == {"pkg.a._b", "pkg._c", "pkg.d", "pkg.e"}
