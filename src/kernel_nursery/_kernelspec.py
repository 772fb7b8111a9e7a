"""``KernelSpec``: one kernel as described by its ``kernel.json``, read and checked.

Kernel-spec *data*, a layer below :mod:`kernel_nursery.provisioning` (which launches what a
spec describes). Finding specs on disk (``KernelSpecManager``) needs the provisioner factory and
sits above provisioning, in :mod:`kernel_nursery.kernelspec`, which is also this module's public
face.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

from ._errors import KernelSpecError

__all__ = ["KernelSpec", "ProvisionerStanza"]

InterruptMode = Literal["signal", "message"]

_TOO_DEEP = "nested too deeply (deeper than Python's recursion limit)"
#: A message protocol version as kernel.json gives it: "5.5", "5.3.1".
_PROTOCOL_VERSION = re.compile(r"[0-9]{1,4}(\.[0-9]{1,4}){1,2}")
#: The protocol version from which a kernel supports the start handshake (JEP 66).
HANDSHAKE_PROTOCOL_VERSION = (5, 5)


class ProvisionerStanza(TypedDict):
    """The ``metadata.kernel_provisioner`` entry of a kernel.json: which provisioner runs the
    kernel, and the trait values (``config``) it is created with."""

    provisioner_name: str
    config: dict[str, Any]


@dataclass(kw_only=True, eq=True)
class KernelSpec:
    """A kernel specification, as Jupyter's ``kernel.json`` describes it.

    The fields and their meaning are Jupyter's, so existing kernel.json files work unchanged.
    kernel-nursery never modifies a ``KernelSpec`` it is given; code that builds a command or an
    environment from one works on copies.

    Building one checks what a launch hands to the operating system: ``argv`` must be a
    non-empty list of strings, ``env`` a dict of strings whose names are non-empty and free of
    ``=``, and neither may hold a NUL character. :meth:`from_dict` checks every field.

    Raises:
        KernelSpecError: ``argv`` or ``env`` is unusable (naming the field: ``argv[1]``,
            ``env.NAME``).

    .. versionadded:: 0.1
    """

    #: The command that starts the kernel; ``{connection_file}``, ``{resource_dir}`` and
    #: ``{prefix}`` are replaced at launch, and ``python``/``python3`` as ``argv[0]`` mean the
    #: interpreter kernel-nursery runs in.
    argv: list[str]
    display_name: str = ""
    language: str = ""
    #: ``"signal"`` (SIGINT to the kernel) or ``"message"`` (``interrupt_request`` on control).
    interrupt_mode: InterruptMode = "signal"
    #: Extra environment variables; ``${VAR}`` in a value is replaced from the launch environment.
    env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The directory that holds kernel.json (and logos); empty for a spec built in memory.
    resource_dir: str = ""
    #: The kernel name (the directory's name, lowercased); empty for a spec built in memory.
    name: str = ""
    #: The version of the message protocol the kernel speaks (kernel.json's
    #: ``kernel_protocol_version``, ``"5.5"``); empty when the spec does not say.
    #:
    #: .. versionadded:: 0.1
    kernel_protocol_version: str = ""

    def __post_init__(self) -> None:
        # A spec built in code gets the checks of the fields that a launch hands to the
        # operating system, so a bad one fails here, not with a builtin error at launch.
        def fail(message: str, fld: str | None = None) -> KernelSpecError:
            return KernelSpecError(message, field=fld)

        _check_command(self.argv, self.env, fail)
        _check_protocol_version(self.kernel_protocol_version, fail)

    @property
    def protocol_version_info(self) -> tuple[int, ...] | None:
        """:attr:`kernel_protocol_version` as numbers (``(5, 5)``), or ``None`` when unset.

        .. versionadded:: 0.1
        """
        if not self.kernel_protocol_version:
            return None
        return tuple(int(part) for part in self.kernel_protocol_version.split("."))

    @property
    def supports_handshake(self) -> bool:
        """Whether the spec declares the start handshake of JEP 66 (the kernel binds its own
        ports and reports them on a registration socket): protocol version 5.5 or later.

        .. versionadded:: 0.1
        """
        version = self.protocol_version_info
        return version is not None and version[:2] >= HANDSHAKE_PROTOCOL_VERSION

    @property
    def supported_encryption(self) -> frozenset[str] | None:
        """The transport encryption schemes the kernel declares (``metadata.
        supported_encryption``, lowercased: ``{"curve"}``), or ``None`` when the spec does
        not say. An empty set means the kernel supports none.

        Raises:
            KernelSpecError: the metadata of a spec built in code is malformed.

        .. versionadded:: 0.1
        """

        def fail(message: str, fld: str | None = None) -> KernelSpecError:
            return KernelSpecError(message, field=fld)

        return _check_encryption(self.metadata.get("supported_encryption"), fail)

    @property
    def kernel_provisioner(self) -> ProvisionerStanza | None:
        """The ``metadata.kernel_provisioner`` stanza, checked and with ``config`` defaulting to
        ``{}``, or ``None`` when there is none (the default provisioner then runs the kernel).

        Raises:
            KernelSpecError: the stanza of a spec built in code is malformed.
        """
        stanza = self.metadata.get("kernel_provisioner")
        if stanza is None:
            return None

        def fail(message: str, fld: str | None = None) -> KernelSpecError:
            return KernelSpecError(message, field=fld)

        return _check_stanza(stanza, fail)

    @classmethod
    def from_dict(
        cls,
        data: object,
        *,
        name: str = "",
        resource_dir: str | os.PathLike[str] = "",
        path: str | os.PathLike[str] | None = None,
    ) -> KernelSpec:
        """Build a spec from parsed kernel.json content, checking every field's type.

        The input is copied, never modified. Unknown top-level keys are ignored, as Jupyter does.

        Raises:
            KernelSpecError: naming *path* (when given) and the first field that is wrong.
        """

        def fail(message: str, fld: str | None = None) -> KernelSpecError:
            return KernelSpecError(message, path=path, field=fld)

        if not isinstance(data, dict):
            raise fail(f"expected a JSON object, got {type(data).__name__}")
        if "argv" not in data:
            raise fail("is required: the command that starts the kernel", "argv")
        argv = data["argv"]
        env = data.get("env", {})
        _check_command(argv, env, fail)
        strings = {key: _check_string(data, key, fail) for key in ("display_name", "language")}
        interrupt_mode = data.get("interrupt_mode", "signal")
        if interrupt_mode not in ("signal", "message"):
            raise fail(
                f"must be 'signal' or 'message', got {reprlib.repr(interrupt_mode)}",
                "interrupt_mode",
            )
        metadata = _check_metadata(data.get("metadata", {}), fail)
        version = data.get("kernel_protocol_version", "")
        _check_protocol_version(version, fail)
        return cls(
            argv=list(argv),
            display_name=strings["display_name"] or name,
            language=strings["language"],
            interrupt_mode=interrupt_mode,
            env=dict(env),
            metadata=metadata,
            resource_dir=os.fspath(resource_dir),
            name=name,
            kernel_protocol_version=version,
        )

    @classmethod
    def from_resource_dir(cls, resource_dir: str | os.PathLike[str]) -> KernelSpec:
        """Read ``<resource_dir>/kernel.json``; the kernel's name is the directory's, lowercased.

        Raises:
            KernelSpecError: the file is missing, unreadable, not JSON, or has a bad field.
        """
        directory = Path(resource_dir)
        path = directory / "kernel.json"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KernelSpecError(f"cannot read: {exc.strerror or exc}", path=path) from exc
        except UnicodeDecodeError as exc:
            raise KernelSpecError(f"not UTF-8 text: {exc}", path=path) from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise KernelSpecError(f"not valid JSON: {exc}", path=path) from exc
        except RecursionError:
            # The decoder recurses once per level; the traceback would be all noise.
            raise KernelSpecError(f"JSON {_TOO_DEEP}", path=path) from None
        return cls.from_dict(data, name=directory.name.lower(), resource_dir=directory, path=path)

    def to_dict(self) -> dict[str, Any]:
        """The kernel.json form of this spec (a fresh, JSON-serialisable dict)."""
        data = {
            "argv": list(self.argv),
            "display_name": self.display_name,
            "language": self.language,
            "interrupt_mode": self.interrupt_mode,
            "env": dict(self.env),
            "metadata": json.loads(json.dumps(self.metadata)),
        }
        if self.kernel_protocol_version:
            data["kernel_protocol_version"] = self.kernel_protocol_version
        return data


def _check_command(argv: object, env: object, fail: Any) -> None:
    """Check what a launch hands to the operating system: the command and the environment.

    A NUL character cannot be passed in an argument or an environment variable, and a
    variable's name can be neither empty nor contain ``=``; the OS would refuse them at launch.
    """
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise fail(f"must be a non-empty list of strings, got {reprlib.repr(argv)}", "argv")
    if not argv[0]:
        raise fail("argv[0] (the program to run) is empty", "argv")
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise fail("contains a NUL character, which no command can be given", f"argv[{i}]")
    if not isinstance(env, dict):
        raise fail(f"must be an object of strings, got {type(env).__name__}", "env")
    for key, value in env.items():
        if not isinstance(key, str):
            raise fail(f"a variable name must be a string, got {reprlib.repr(key)}", "env")
        if not key or "=" in key or "\0" in key:
            raise fail(
                "is not a valid environment variable name (one must be non-empty, "
                "without '=' or NUL)",
                f"env.{key}",
            )
        if not isinstance(value, str):
            raise fail(f"must be a string, got {reprlib.repr(value)}", f"env.{key}")
        if "\0" in value:
            raise fail("contains a NUL character, which no environment can hold", f"env.{key}")


def _check_string(data: dict[str, Any], key: str, fail: Any) -> str:
    """``data[key]``, a string field that may be absent (then empty)."""
    value = data.get(key, "")
    if not isinstance(value, str):
        raise fail(f"must be a string, got {reprlib.repr(value)}", key)
    return value


def _check_metadata(metadata: object, fail: Any) -> dict[str, Any]:
    """A deep copy of ``metadata`` (plain JSON data), its provisioner stanza and encryption
    schemes checked; the stanza is replaced by its checked form."""
    if not isinstance(metadata, dict):
        raise fail(f"must be an object, got {type(metadata).__name__}", "metadata")
    try:
        copy: dict[str, Any] = json.loads(json.dumps(metadata))  # a deep copy of plain JSON data
    except RecursionError:
        raise fail(_TOO_DEEP, "metadata") from None
    except (TypeError, ValueError) as exc:  # not JSON data, or a circular reference
        raise fail(f"must be plain JSON data: {exc}", "metadata") from exc
    stanza = copy.get("kernel_provisioner")
    if stanza is not None:
        copy["kernel_provisioner"] = _check_stanza(stanza, fail)
    _check_encryption(copy.get("supported_encryption"), fail)
    return copy


def _check_stanza(stanza: object, fail: Any) -> ProvisionerStanza:
    where = "metadata.kernel_provisioner"
    if not isinstance(stanza, dict):
        raise fail(f"must be an object, got {type(stanza).__name__}", where)
    name = stanza.get("provisioner_name")
    if not isinstance(name, str) or not name:
        raise fail(
            f"must be a non-empty string, got {reprlib.repr(name)}", f"{where}.provisioner_name"
        )
    config = stanza.get("config", {})
    if not isinstance(config, dict):
        raise fail(f"must be an object, got {type(config).__name__}", f"{where}.config")
    return {"provisioner_name": name, "config": config}


def _check_protocol_version(version: object, fail: Any) -> None:
    """``kernel_protocol_version`` is empty or a dotted version of two or three numbers."""
    where = "kernel_protocol_version"
    if not isinstance(version, str):
        raise fail(f"must be a string such as '5.5', got {reprlib.repr(version)}", where)
    if version and not _PROTOCOL_VERSION.fullmatch(version):
        raise fail(f"must be a version such as '5.5', got {reprlib.repr(version)}", where)


def _check_encryption(value: object, fail: Any) -> frozenset[str] | None:
    """``metadata.supported_encryption``: absent, a scheme name, or a list of them (as
    jupyter_client accepts); the schemes, lowercased."""
    where = "metadata.supported_encryption"
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise fail(
            f"must be a list of scheme names such as ['curve'], got {reprlib.repr(value)}", where
        )
    return frozenset(item.strip().lower() for item in items)
