"""Turning a kernel spec's ``argv`` into the command that is run."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence

__all__ = ["format_kernel_cmd"]

_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")


def _python_names() -> frozenset[str]:
    major, minor = sys.version_info[:2]
    return frozenset({"python", f"python{major}", f"python{major}.{minor}"})


def format_kernel_cmd(
    argv: Sequence[str],
    *,
    substitutions: Mapping[str, str],
    extra_arguments: Sequence[str] = (),
) -> list[str]:
    """Build the kernel's command from a spec's *argv*, as Jupyter does.

    - ``python``, ``python3`` or ``python3.X`` (this interpreter's version) as the program mean
      this interpreter, :data:`sys.executable`, so a kernel installed with the package runs
      in the same environment;
    - ``{name}`` in any argument is replaced by ``substitutions[name]``
      (``connection_file``, ``resource_dir``, ``prefix``...); a name with no substitution is left
      as written, braces included;
    - *extra_arguments* are appended (they are not substituted).

    Returns a new list; *argv* is not modified. No shell ever sees the result.
    """
    cmd = list(argv)
    if cmd and cmd[0] in _python_names():
        cmd[0] = sys.executable

    def replace(match: re.Match[str]) -> str:
        return substitutions.get(match.group(1), match.group(0))

    return [_FIELD.sub(replace, arg) for arg in cmd] + list(extra_arguments)
