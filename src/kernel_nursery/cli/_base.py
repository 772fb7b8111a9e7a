"""What every ``kernel-nursery`` subcommand shares: the backend, the one configuration file,
help that leads with usage, and errors a user can fix as one line and exit status 2."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Generator
from copy import deepcopy
from typing import Any, ClassVar, NoReturn

import anyio
from jupyter_core.application import JupyterApp, base_aliases, base_flags
from traitlets import CaselessStrEnum, Enum, HasTraits, TraitError, TraitType, Unicode
from traitlets.config import Application
from traitlets.config.loader import ConfigFileNotFound

from .._errors import KernelNurseryError
from .._version import __version__
from ..kernelspec import KernelSpecManager
from ..manager import KernelManager
from ..provisioning import KernelProvisionerFactory, LocalProvisioner
from ._output import EXIT_CLOSED_PIPE, close_stdout

__all__ = ["EXIT_CODE_RAISED", "EXIT_ERROR", "KernelNurseryCommand", "UsageError"]

#: Exit status when kernel-nursery could not do what was asked (bad input, failed start...).
EXIT_ERROR = 2
#: Exit status of ``run`` when the code raised.
EXIT_CODE_RAISED = 1
#: The one configuration file every subcommand reads (``.py`` or ``.json``), in Jupyter's
#: config path (``jupyter --paths``), after ``jupyter_config``.
CONFIG_FILE_NAME = "kernel_nursery_config"


class UsageError(Exception):
    """Something the user asked for that cannot be done: one line on stderr, exit 2."""


class KernelNurseryCommand(JupyterApp):
    """The base of every subcommand: the backend, configuration, one-line errors."""

    version = __version__
    #: Usage lines and examples, shown first by ``--help``.
    usage: ClassVar[str] = ""
    backend = Enum(
        ["asyncio", "trio"],
        default_value="asyncio",
        config=True,
        help="The async backend to run on: asyncio (default) or trio (needs trio installed).",
    )
    kernel_output = Unicode(
        "stderr",
        config=True,
        help=(
            "Where the kernel's own standard output and error go: 'stderr' (this command's "
            "standard error, the default), 'null' (discarded), or a file to append them to. "
            "Never standard output, which carries only what the command promises."
        ),
    )
    aliases: ClassVar[dict[str, Any]] = {  # type: ignore[misc]
        **base_aliases,
        "backend": "KernelNurseryCommand.backend",
        "kernel-output": "KernelNurseryCommand.kernel_output",
    }
    flags: ClassVar[dict[str, Any]] = dict(base_flags)  # type: ignore[misc]
    classes: ClassVar[list[Any]] = [  # type: ignore[misc]
        KernelManager,
        KernelProvisionerFactory,
        KernelSpecManager,
        LocalProvisioner,
    ]
    raise_config_file_errors = True

    def _config_file_name_default(self) -> str:
        return CONFIG_FILE_NAME

    def _find_subcommand(self, name: str) -> str:
        return ""  # never run a program named kernel-nursery-NAME found on PATH

    def initialize(self, argv: Any = None) -> None:
        """Parse the command line, then read the configuration file; the command line wins.

        Unlike JupyterApp's, a bad value or a broken config file is a :class:`UsageError`.
        """
        try:
            self.parse_command_line(argv)
            if self.subapp is not None:
                return
            cl_config = deepcopy(self.config)
            self.load_config_file()
            self.update_config(cl_config)
            self.check_config()
        except (UsageError, BrokenPipeError):
            raise
        except TraitError as exc:
            raise UsageError(_one_line(exc)) from exc
        except Exception as exc:  # a config file that raised, or traitlets' parser
            raise UsageError(_one_line(exc)) from exc

    # traitlets' own versions log a CRITICAL line and exit 1 on a bad value: call what they
    # wrap, so that our initialize() turns the error into one line and exit 2.
    def parse_command_line(self, argv: Any = None) -> None:
        self.check_options(sys.argv[1:] if argv is None else list(argv))
        _unwrapped(Application.parse_command_line)(self, argv)

    def initialize_subcommand(self, subc: str, argv: Any = None) -> None:
        _unwrapped(Application.initialize_subcommand)(self, subc, argv)

    def load_config_file(self, suppress_errors: bool = True) -> None:  # type: ignore[override]
        """Read ``jupyter_config`` then ``kernel_nursery_config`` (``.py`` or ``.json``) from
        Jupyter's config path, or the file given with ``--config``; a broken file raises."""
        load = _unwrapped(Application.load_config_file)
        if self.config_file:
            if not os.path.isfile(self.config_file):
                raise UsageError(f"no config file {self.config_file}")
            directory, filename = os.path.split(self.config_file)
            names, paths = [filename], [directory or "."]
        else:
            names, paths = ["jupyter_config", CONFIG_FILE_NAME], self.config_file_paths
        for filename in names:
            try:
                load(self, filename, path=paths)
            except ConfigFileNotFound:
                pass

    def check_options(self, argv: list[str]) -> None:
        """Refuse an option this command does not know (traitlets would only warn)."""
        if argv and argv[0] in self.subcommands:
            return
        later = [a for a in argv if a in self.subcommands]
        if later and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
            raise UsageError(
                f"options go after the subcommand: kernel-nursery {later[0]} [OPTIONS] ..."
            )
        known = {*_names(self.aliases), *_names(self.flags), "help", "help-all", "version"}
        classes = {c.__name__ for c in self._classes_inc_parents()} | {
            c.__name__ for c in type(self).__mro__
        }
        takes_value = _names(self.aliases)
        for i, arg in enumerate(argv):
            if arg == "--":
                break
            if not arg.startswith("-") or arg == "-" or _is_number(arg):
                continue
            key = arg.lstrip("-").split("=", 1)[0]
            if key in takes_value and "=" not in arg and i + 1 == len(argv):
                raise UsageError(f"option {arg} needs a value (see {self._help_hint()})")
            if "=" in arg or i + 1 < len(argv):
                value = arg.split("=", 1)[1] if "=" in arg else argv[i + 1]
                self._check_choice(arg.split("=", 1)[0], key, value)
            if "." in key:
                if key.split(".", 1)[0] not in classes:
                    raise UsageError(
                        f"unknown option {arg.split('=', 1)[0]}: no class "
                        f"{key.split('.', 1)[0]!r} to configure (see {self._help_hint()})"
                    )
            elif key not in known:
                raise UsageError(f"unknown option {arg.split('=', 1)[0]} (see {self._help_hint()})")

    def _check_choice(self, option: str, key: str, value: str) -> None:
        """Refuse a value that an option with choices (an Enum trait) does not take, in our
        words rather than traitlets' ("The 'backend' trait of a RunApp instance...")."""
        trait = self._option_trait(key)
        if not isinstance(trait, Enum) or trait.values is None:
            return
        choices = [str(c) for c in trait.values]
        given = value.strip("'\"")
        if given in choices:
            return
        if isinstance(trait, CaselessStrEnum) and given.lower() in [c.lower() for c in choices]:
            return
        raise UsageError(f"{option} must be one of {', '.join(choices)} (got {given!r})")

    def _option_trait(self, key: str) -> TraitType[Any, Any] | None:
        """The trait that option *key* sets (an alias, or ``Class.trait``), if any."""
        target = self.aliases.get(key, key)
        if isinstance(target, tuple):
            target = target[0]
        if not isinstance(target, str) or "." not in target:
            return None
        class_name, trait_name = target.rsplit(".", 1)
        for cls in (*self._classes_inc_parents(), *type(self).__mro__):
            if cls.__name__ == class_name and issubclass(cls, HasTraits):
                trait: TraitType[Any, Any] | None = cls.class_traits().get(trait_name)
                return trait
        return None

    def _help_hint(self) -> str:
        return " ".join(["kernel-nursery", *self.name.split("-")[2:], "--help"])

    def check_config(self) -> None:
        """Try every configured value now, so that a bad one is a one-line error before any
        kernel starts, not a traceback from deep inside."""
        if self.generate_config and self.parent is not None:
            raise UsageError(
                "--generate-config takes no subcommand: kernel-nursery --generate-config"
            )
        for cls in self.classes:
            if cls.__name__ in self.config and not issubclass(cls, Application):
                cls(parent=self)

    def check_kernel_output(self) -> None:
        """A --kernel-output file must be one this command can append to (it is created
        now, empty, if missing)."""
        if self.kernel_output in ("stderr", "null"):
            return
        try:
            # O_NONBLOCK: a FIFO nobody reads is an error here, not a hang.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
            os.close(os.open(self.kernel_output, flags, 0o600))
        except OSError as exc:
            self.fail(f"cannot write --kernel-output {self.kernel_output}: {exc.strerror or exc}")

    def fail(self, message: str) -> NoReturn:
        raise UsageError(message)

    def run(self, fn: Callable[[], Awaitable[int]]) -> NoReturn:
        """Run *fn* on the chosen backend and exit with its status; errors a user can fix
        become one line."""
        try:
            status = anyio.run(fn, backend=self.backend)
        except ModuleNotFoundError as exc:
            if exc.name == "trio" and self.backend == "trio":
                self.fail("--backend trio needs trio: pip install 'kernel-nursery[trio]'")
            self.fail(str(exc))
        except KernelNurseryError as exc:
            self.fail(str(exc))
        except TraitError as exc:
            self.fail(_one_line(exc))
        except BrokenPipeError:
            raise
        except OSError as exc:  # a file of ours (--kernel-output) that could not be opened
            where = f"{exc.filename}: " if exc.filename else ""
            self.fail(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:  # Ctrl-C before (or after) the kernel's scope
            status = 128 + signal.SIGINT
        raise SystemExit(status)

    def kernel_manager(self, kernel_name: str) -> KernelManager:
        return KernelManager(kernel_name=kernel_name, parent=self)

    # Help: usage and examples first, then the generic options.
    def emit_description(self) -> Generator[str, None, None]:
        if self.usage:
            yield self.usage.strip()
            yield ""
        yield from super().emit_description()

    def emit_examples(self) -> Generator[str, None, None]:
        if self.examples:
            yield "Examples"
            yield "--------"
            yield ""
            yield self.examples.strip()
            yield ""

    def emit_help(self, classes: bool = False) -> Generator[str, None, None]:
        yield from self.emit_description()
        yield from self.emit_examples()
        yield from self.emit_subcommands_help()
        yield from self.emit_options_help()
        if classes:
            help_classes = self._classes_with_config_traits()
            yield "Class options"
            yield "============="
            for cls in help_classes:
                yield cls.class_get_help()
        yield from self.emit_help_epilogue(classes)


def _unwrapped(method: Any) -> Any:
    """The method that traitlets' ``catch_config_error`` wraps."""
    return getattr(method, "__wrapped__", method)


def _names(table: dict[Any, Any]) -> set[str]:
    """Option names of an aliases or flags table (keys may be tuples of names)."""
    names: set[str] = set()
    for key in table:
        names.update(key if isinstance(key, tuple) else (key,))
    return names


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


#: traitlets' wording of a bad value: "The 'x' trait of a C instance expected E, not the T V."
_TRAIT_ERROR = re.compile(
    r"^The '(?P<trait>\w+)' trait of an? (?P<cls>\w+) instance expected (?P<expected>.+?), "
    r"not the \w+ (?P<value>.+?)\.?$"
)


def _one_line(exc: BaseException) -> str:
    """*exc*'s message on one line; traitlets' wording of a bad value said as ours."""
    text = " ".join(str(exc).split())
    match = _TRAIT_ERROR.match(text)
    if match:
        expected = match["expected"].removeprefix("any of ")
        return f"{match['cls']}.{match['trait']} must be {expected} (got {match['value']})"
    return text or type(exc).__name__


def exit_on_user_error(fn: Callable[[], None]) -> None:
    """Run *fn* (the application's whole life); a :class:`UsageError` is one line and exit 2;
    a reader of standard output that went away (``| head -1``) ends it quietly, with 141."""
    try:
        fn()
    except UsageError as exc:
        print(f"kernel-nursery: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_ERROR) from None
    except BrokenPipeError:
        close_stdout()
        raise SystemExit(EXIT_CLOSED_PIPE) from None
    except KeyboardInterrupt:  # Ctrl-C before any kernel was started: nothing to clean up
        raise SystemExit(128 + signal.SIGINT) from None
