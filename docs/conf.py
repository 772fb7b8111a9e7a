"""Sphinx configuration for kernel-nursery's documentation."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from traitlets import HasTraits, TraitType

import kernel_nursery
from kernel_nursery import (
    DockerProvisioner,
    KernelManager,
    KernelNursery,
    KernelPool,
    KernelSpecManager,
    LocalProvisioner,
    SandboxProvisioner,
    SlurmProvisioner,
    SSHProvisioner,
)
from kernel_nursery.provisioning import KernelProvisionerFactory

project = "kernel-nursery"
author = "kernel-nursery developers"
copyright = "2026, kernel-nursery developers"
release = kernel_nursery.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples", "benchmarks/results.md"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = "kernel-nursery"
# Wide enough for the examples and the lifecycle diagrams without sideways scrolling.
html_theme_options = {"page_width": "1240px", "sidebar_width": "230px", "body_max_width": "none"}
# Blocks without a language (diagrams, tables of layers) are plain text, not Python.
highlight_language = "text"

#: The configurable classes whose traits make the configuration page.
CONFIGURABLES: list[type[HasTraits]] = [
    KernelManager,
    KernelNursery,
    KernelPool,
    KernelProvisionerFactory,
    KernelSpecManager,
    LocalProvisioner,
    SSHProvisioner,
    SlurmProvisioner,
    SandboxProvisioner,
    DockerProvisioner,
]


def _trait_rows(cls: type[HasTraits]) -> list[str]:
    rows = []
    own = cls.class_own_traits(config=True)
    inherited = {n: t for n, t in cls.class_traits(config=True).items() if n not in own}
    for name, trait in sorted({**inherited, **own}.items()):
        rows.append(_describe(cls, name, trait))
    return rows


def _describe(cls: type[HasTraits], name: str, trait: TraitType[Any, Any]) -> str:
    # A default computed at run time (an @default method) has no fixed value to show.
    computed = any(name in vars(c).get("_trait_default_generators", {}) for c in cls.__mro__)
    default = "computed at run time" if computed else f"`{trait.default_value_repr()}`"
    help_text = inspect.cleandoc(trait.help or "").replace("\n", " ")
    return f"`{cls.__name__}.{name}`\n: *{type(trait).__name__}*, default {default}. {help_text}\n"


def write_configuration_page(app: object) -> None:
    """Generate the configuration reference from the traits themselves, never by hand."""
    out = Path(__file__).parent / "_generated" / "configuration.md"
    out.parent.mkdir(exist_ok=True)
    parts = []
    for cls in CONFIGURABLES:
        parts.append(f"## {cls.__name__}\n\n")
        rows = _trait_rows(cls)
        parts.append("\n".join(rows) if rows else "No configurable traits.\n")
        parts.append("\n")
    text = "".join(parts)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app: Any) -> None:
    app.connect("builder-inited", write_configuration_page)
