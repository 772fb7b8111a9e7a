"""The import graph of src/: no cycles, and the layers of docs/architecture.md form a stack.

Imports are read with :mod:`ast`, not by importing: every ``import`` counts, including those
under ``if TYPE_CHECKING:`` and inside functions, since a lazy import hides a dependency without
removing it. Run alone with ``pytest tests/test_layers.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import kernel_nursery

PACKAGE = "kernel_nursery"
ROOT = Path(kernel_nursery.__file__).parent

#: The layers, top to bottom, as docs/architecture.md draws them: a layer imports only layers
#: below it. The package's ``__init__`` (the public face) stands above them all.
STACK = [
    "__main__",
    "cli",
    "blocking",
    "compat",
    "manager",
    "kernelspec",  # discovery: checks provisioners through the factory
    "provisioning",
    "messaging",
    "wire",
    "connection",
    "_kernelspec",  # kernel-spec data
    "_signals",
    "_limits",
    "_taskgroup",
    "_errors",
    "_version",
    "_util",
    "_platform",  # which OS facilities are used (pidfds, /proc)
]

#: What a layer must not know of although it stands lower in the stack (docs/architecture.md):
#: provisioning knows nothing of clients and messages beyond the wire it shares with them.
FORBIDDEN = {
    "provisioning": {"messaging"},
}

#: Code that runs in another process: stand-alone scripts on the standard library alone.
SCRIPTS = f"{PACKAGE}.provisioning._scripts"

#: The provisioners, each a package of its own that reaches no other's private modules.
PLUGINS = ("local", "ssh", "slurm", "sandbox", "docker", "forkserver")


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


def test_every_layer_is_in_the_stack() -> None:
    """A new subpackage or private top-level module takes its place in the stack (and in
    docs/architecture.md) before it can be imported by anything."""
    assert set(layer_graph()) <= set(STACK)


def test_layers_import_only_downwards() -> None:
    """Every layer imports only the layers below it in :data:`STACK`, with no exception."""
    layers = layer_graph()
    upward = {
        layer: sorted(t for t in targets if STACK.index(t) <= STACK.index(layer))
        for layer, targets in layers.items()
        if any(STACK.index(t) <= STACK.index(layer) for t in targets)
    }
    assert upward == {}


def test_layers_respect_design() -> None:
    """Provisioning knows nothing of messaging: the start handshake stands on the wire alone."""
    layers = layer_graph()
    wrong = {
        layer: sorted(layers.get(layer, set()) & forbidden)
        for layer, forbidden in FORBIDDEN.items()
        if layers.get(layer, set()) & forbidden
    }
    assert wrong == {}


def test_scripts_are_stand_alone() -> None:
    """The scripts that run in another process import nothing of the package and only the
    standard library, and nothing in the library imports them (they are run from their files)."""
    edges = graph()
    for module, path in module_files().items():
        if module.startswith(SCRIPTS + "."):
            assert not edges[module], (module, sorted(edges[module]))
            top = {name.split(".")[0] for name in _absolute_imports(path)}
            assert top <= sys.stdlib_module_names | {"__future__"}, (module, sorted(top))
    importers = {m for m, targets in edges.items() for t in targets if t.startswith(SCRIPTS)}
    assert importers == set()


def test_no_provisioner_reaches_into_another() -> None:
    """A provisioner's package imports no other provisioner's private modules: what they share
    lives beside them in provisioning/ (base, factory, process, command checks, the guardian).
    One may build on another's public class through that package's face (the sandbox and the
    fork server subclass LocalProvisioner, imported from ``provisioning.local``)."""
    edges = graph()
    crossing = set()
    for module, targets in edges.items():
        own = _plugin_of(module)
        if own is None:
            continue
        crossing |= {
            (module, t)
            for t in targets
            if _plugin_of(t) not in (None, own) and t != f"{PACKAGE}.provisioning.{_plugin_of(t)}"
        }
    assert crossing == set()


def _plugin_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "provisioning" and parts[2] in PLUGINS:
        return parts[2]
    return None


def _absolute_imports(path: Path) -> set[str]:
    """The modules a file imports by absolute name."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_the_docs_draw_the_stack() -> None:
    """docs/architecture.md lists the layers exactly as STACK does, in its order, and
    docs/concepts.md draws a part of them in the same order."""
    docs = Path(__file__).parent.parent / "docs"
    assert _drawn_layers(docs / "architecture.md") == STACK
    drawn = _drawn_layers(docs / "concepts.md")
    assert set(drawn) <= set(STACK)
    assert drawn == sorted(drawn, key=STACK.index)


def _drawn_layers(path: Path) -> list[str]:
    """The layer names (the first word of each unindented line) of the first code block after
    a document's "Layers" heading."""
    text = path.read_text()
    heading = next(m for m in re.finditer(r"^## (The )?[Ll]ayers$", text, flags=re.MULTILINE))
    block = text[heading.end() :].split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines() if line[:1].strip()]


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
