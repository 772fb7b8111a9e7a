"""Turning a kernel spec's ``argv`` into the command that is run, and checking a command,
its environment and working directory before anything is spawned (every provisioner's launch
makes the same checks)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .._errors import LaunchError

__all__ = ["bad_launch_arguments", "format_kernel_cmd", "pop_env"]

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


def bad_launch_arguments(argv: list[Any], env: object, cwd: object) -> str | None:
    """What is wrong with the command, environment or working directory, or ``None``.

    The checks ``subprocess`` would make at the spawn (with a bare ``ValueError``), made first so
    the error says which argument or variable is at fault.
    """
    for i, arg in enumerate(argv):
        problem = _bad_os_string(arg)
        if problem is not None:
            return f"argument {i} {problem}"
    if env is not None:
        if not isinstance(env, Mapping):
            return f"env must be a mapping of names to values, not {type(env).__name__}"
        for name, value in env.items():
            if not isinstance(name, str):
                return (
                    f"environment variable name {_short(name)} must be a string, "
                    f"not {type(name).__name__}"
                )
            if not name:
                return "environment variable name '' is empty"
            problem = _bad_os_string(name)
            if problem is not None:
                return f"environment variable name {_short(name)} {problem}"
            if "=" in name:
                return f"environment variable name {_short(name)} contains '='"
            if not isinstance(value, str):
                return (
                    f"the value of environment variable {_short(name)} must be a string, "
                    f"not {type(value).__name__}"
                )
            problem = _bad_os_string(value)
            if problem is not None:
                return f"the value of environment variable {_short(name)} {problem}"
    if cwd is not None:
        if not isinstance(cwd, str | bytes | os.PathLike):
            return f"cwd must be a path, not {type(cwd).__name__}"
        problem = _bad_os_string(cwd)
        if problem is not None:
            return f"cwd {problem}"
    return None


def pop_env(kwargs: dict[str, Any]) -> Mapping[Any, Any] | None:
    """Take ``env`` (the caller's environment for the kernel) out of launch keyword arguments
    *kwargs*: the mapping, or ``None`` when not given. Its names and values are checked later,
    by :func:`bad_launch_arguments`.

    Raises:
        LaunchError: ``env`` is given and is not a mapping.
    """
    env = kwargs.pop("env", None)
    if env is not None and not isinstance(env, Mapping):
        raise LaunchError(
            "cannot start kernel: env must be a mapping of names to values, "
            f"not {type(env).__name__}",
            argv=[],
        )
    return env


def _bad_os_string(value: str | bytes | os.PathLike[Any]) -> str | None:
    """Why *value* cannot be handed to the OS (as an argument, a variable, a path), or ``None``."""
    try:
        encoded = os.fsencode(value)
    except UnicodeEncodeError as exc:
        return f"cannot be encoded for the OS ({exc.reason})"
    if b"\0" in encoded:
        return "contains a NUL byte"
    return None


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
