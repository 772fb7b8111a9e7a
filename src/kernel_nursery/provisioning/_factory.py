"""``KernelProvisionerFactory``: finds provisioners through entry points and creates them."""

from __future__ import annotations

import importlib
import os
import sys
import time
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from traitlets import TraitError, Unicode, default
from traitlets.config import LoggingConfigurable, SingletonConfigurable

from .._errors import ProvisionerConfigError, ProvisionerError
from .._kernelspec import KernelSpec, ProvisionerStanza
from ._base import KernelProvisionerBase

__all__ = [
    "DEFAULT_PROVISIONER_ENV",
    "ENTRY_POINT_GROUP",
    "JUPYTER_PREFIX",
    "KernelProvisionerFactory",
]

#: The entry-point group in which packages register provisioners. It is kernel-nursery's own:
#: provisioners written for jupyter_client (``jupyter_client.kernel_provisioners``) use its
#: synchronous-in-places API and are not loaded by mistake.
ENTRY_POINT_GROUP = "kernel_nursery.provisioners"
#: Traits of every provisioner that the kernel manager (or traitlets) sets, never a kernel spec:
#: ``log``, ``parent``, ``config``, ``kernel_id``, ``kernel_spec``, ``connection_info``.
_INTERNAL_TRAITS = frozenset(KernelProvisionerBase.class_trait_names())
#: Prefix of the names that stand for jupyter_client's provisioners: ``jupyter:<name>`` is the
#: provisioner ``<name>`` of jupyter_client's group ``jupyter_client.kernel_provisioners``, run
#: through :class:`kernel_nursery.compat.JupyterProvisioner`. Only names with the prefix reach
#: jupyter_client's group: a kernel spec opts in by naming one.
JUPYTER_PREFIX = "jupyter:"
_JUPYTER_GROUP = "jupyter_client.kernel_provisioners"
#: The bridge, above this layer: imported by name, only when a spec names a jupyter: provisioner.
_BRIDGE_MODULE, _BRIDGE_CLASS = "kernel_nursery.compat", "JupyterProvisioner"
#: Environment variable that sets :attr:`KernelProvisionerFactory.default_provisioner_name`.
DEFAULT_PROVISIONER_ENV = "KERNEL_NURSERY_DEFAULT_PROVISIONER"


class KernelProvisionerFactory(SingletonConfigurable):
    """Creates the provisioner a kernel spec asks for; shared by the kernel spec manager (to hide
    kernels whose provisioner is not installed) and kernel managers (to run kernels).

    Provisioners are found through the entry-point group :data:`ENTRY_POINT_GROUP`. A name that
    is not in :attr:`provisioners` is looked up again in the installed packages' metadata before
    it is declared missing, so a provisioner installed while the program runs is found.

    Names of the form ``jupyter:<name>`` (:data:`JUPYTER_PREFIX`) are jupyter_client's
    provisioners (its group ``jupyter_client.kernel_provisioners``), run through
    :class:`kernel_nursery.compat.JupyterProvisioner`: the stanza's ``config`` sets the traits of
    jupyter_client's provisioner. They are listed with the prefix when jupyter_client is
    installed.

    .. versionadded:: 0.1
    """

    default_provisioner_name = Unicode(
        config=True,
        help="Provisioner for kernel specs that name none in metadata.kernel_provisioner. "
        f"Defaults to ${DEFAULT_PROVISIONER_ENV}, or 'local-provisioner'.",
    )

    @default("default_provisioner_name")
    def _default_provisioner_name_default(self) -> str:
        return os.environ.get(DEFAULT_PROVISIONER_ENV) or "local-provisioner"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Entry points found so far, by provisioner name (this instance's own dict).
        self.provisioners: dict[str, EntryPoint] = _scan()

    @classmethod
    def for_parent(cls, parent: LoggingConfigurable) -> KernelProvisionerFactory:
        """The factory that *parent* (a kernel manager, a spec manager, an application) uses.

        When *parent*'s configuration has a ``KernelProvisionerFactory`` section, a new factory
        configured by it, with *parent* as its parent; otherwise the process's shared
        :meth:`instance`. Either way, configuration given to *parent* reaches the factory.

        .. versionadded:: 0.1
        """
        if cls.__name__ in parent.config:
            return cls(parent=parent)
        return cls.instance()

    # ------------------------------------------------------------------ queries

    def is_provisioner_available(self, kernel_spec: KernelSpec) -> bool:
        """Whether the provisioner that *kernel_spec* names (or the default one) is registered.

        Logs a warning naming the kernel and the provisioner when it is not.
        """
        name = self._stanza(kernel_spec)["provisioner_name"]
        if self._entry_point(name) is not None:
            return True
        self.log.warning(
            "Kernel %r needs provisioner %r, which is not registered in entry-point group %r; "
            "install the package that provides it.",
            kernel_spec.name or kernel_spec.display_name,
            name,
            ENTRY_POINT_GROUP,
        )
        return False

    def get_provisioner_entries(self) -> dict[str, str]:
        """Every registered provisioner: name → ``"module:object"``, freshly read."""
        self.provisioners = _scan()
        return {name: ep.value for name, ep in sorted(self.provisioners.items())}

    # ------------------------------------------------------------------ creation

    def create_provisioner_instance(
        self, kernel_id: str, kernel_spec: KernelSpec, parent: LoggingConfigurable | None
    ) -> KernelProvisionerBase:
        """Create the provisioner for *kernel_spec*, configured by its stanza's ``config``.

        A spec without a ``kernel_provisioner`` stanza gets :attr:`default_provisioner_name`
        with no config; the spec itself is never modified.

        Raises:
            ModuleNotFoundError: the provisioner is not registered (as the reference API says);
                the message names it and the entry-point group.
            ProvisionerError: it is registered but cannot be loaded, or is not a provisioner.
            ProvisionerConfigError: ``config`` names a trait the provisioner does not have, one
                of the base class's internal traits (``log``, ``parent``, ``config``,
                ``kernel_id``, ``kernel_spec``, ``connection_info``), or a value its trait
                rejects (a :class:`~traitlets.TraitError`, named by key). An exception raised by
                the provisioner's own ``__init__`` propagates as it is.
        """
        stanza = self._stanza(kernel_spec)
        name = stanza["provisioner_name"]
        ep = self._registered(name, kernel_spec)
        if name.startswith(JUPYTER_PREFIX):
            return self._create_jupyter(name, kernel_id, kernel_spec, parent, stanza["config"])
        cls = _provisioner_class(name, ep)
        config = dict(stanza["config"])
        where = f"(from metadata.kernel_provisioner.config of kernel {kernel_spec.name!r})"
        _check_config(name, cls, config, where)
        self.log.debug("Creating provisioner %r for kernel %s", name, kernel_id)
        try:
            return cls(kernel_id=kernel_id, kernel_spec=kernel_spec, parent=parent, **config)
        except TraitError as exc:
            # A value a trait rejects. Anything else is a bug in the provisioner's own code and
            # propagates as itself.
            keys = [key for key in config if f"'{key}'" in str(exc)]
            key = f"config key {keys[0]!r}: " if len(keys) == 1 else ""
            raise ProvisionerConfigError(
                f"kernel provisioner {name!r}: {key}{exc} {where}"
            ) from exc

    def _registered(self, name: str, kernel_spec: KernelSpec) -> EntryPoint:
        """The entry point that registers provisioner *name*.

        Raises:
            ModuleNotFoundError: none does; the message names the entry-point group (and
                jupyter_client's, for a ``jupyter:`` name).
        """
        ep = self._entry_point(name)
        if ep is None and name.startswith(JUPYTER_PREFIX):
            raise ModuleNotFoundError(
                f"kernel provisioner {name!r} (needed by kernel "
                f"{kernel_spec.name or kernel_spec.display_name!r}) is not registered in "
                f"jupyter_client's entry-point group {_JUPYTER_GROUP!r}; install jupyter_client "
                "(pip install kernel-nursery[jupyter]) and the package that provides it",
                name=name,
            )
        if ep is None:
            raise ModuleNotFoundError(
                f"kernel provisioner {name!r} (needed by kernel "
                f"{kernel_spec.name or kernel_spec.display_name!r}) is not registered in "
                f"entry-point group {ENTRY_POINT_GROUP!r}; install the package that provides it",
                name=name,
            )
        return ep

    def _create_jupyter(
        self,
        name: str,
        kernel_id: str,
        kernel_spec: KernelSpec,
        parent: LoggingConfigurable | None,
        config: dict[str, Any],
    ) -> KernelProvisionerBase:
        """The bridge to jupyter_client's provisioner *name* (``jupyter:...``)."""
        bridge = getattr(importlib.import_module(_BRIDGE_MODULE), _BRIDGE_CLASS)
        self.log.debug("Creating provisioner %r for kernel %s", name, kernel_id)
        provisioner: KernelProvisionerBase = bridge(
            kernel_id=kernel_id,
            kernel_spec=kernel_spec,
            parent=parent,
            jupyter_provisioner_name=name[len(JUPYTER_PREFIX) :],
            jupyter_config=dict(config),
        )
        return provisioner

    # ------------------------------------------------------------------ helpers

    def _stanza(self, kernel_spec: KernelSpec) -> ProvisionerStanza:
        stanza = kernel_spec.kernel_provisioner
        if stanza is None:
            return {"provisioner_name": self.default_provisioner_name, "config": {}}
        return stanza

    def _entry_point(self, name: str) -> EntryPoint | None:
        ep = self.provisioners.get(name)
        if ep is None:
            # Not seen yet: maybe installed since the last scan.
            self.provisioners = _scan()
            ep = self.provisioners.get(name)
        return ep


#: The last scan, and the state of the import path it was made in (see _scan).
_scanned: tuple[tuple[object, ...], dict[str, EntryPoint]] | None = None


def _scan() -> dict[str, EntryPoint]:
    """The registered provisioners, read again only when the import path may have changed.

    Reading every installed distribution's entry points costs milliseconds to tens of
    milliseconds, and lookups run on the event loop's thread. Installing or removing a package
    adds or removes an entry in a directory of :data:`sys.path`, which changes that directory's
    modification time, so the scan is kept until :data:`sys.path`, or the modification time of
    one of its directories, changes: a stat per entry instead of a file read per distribution.
    A directory changed within the last few seconds is not trusted (file systems record times
    in ticks of a few milliseconds, so a second change within a tick would go unseen): its
    scan is not kept, as git does with "racily clean" files.
    """
    global _scanned
    key = _path_state()
    if key is None or _scanned is None or _scanned[0] != key:
        found = _read_entry_points()
        _scanned = None if key is None else (key, found)
        return found
    return dict(_scanned[1])


#: Seconds during which a directory's modification time is too recent to be trusted.
_RACY = 2.0


def _path_state() -> tuple[object, ...] | None:
    """:data:`sys.path` with each directory's modification time; ``None`` when one changed
    too recently to tell a later change from it."""
    recent = time.time_ns() - int(_RACY * 1e9)
    state: list[object] = []
    for entry in sys.path:
        try:
            mtime = os.stat(entry or ".").st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and mtime >= recent:
            return None
        state.append((entry, mtime))
    return tuple(state)


def _read_entry_points() -> dict[str, EntryPoint]:
    """Our group's provisioners, and jupyter_client's under :data:`JUPYTER_PREFIX`."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for ep in entry_points(group=_JUPYTER_GROUP):
        # Ours, registered there for jupyter_client, would only come back to us the long way.
        if not ep.value.startswith("kernel_nursery."):
            name = JUPYTER_PREFIX + ep.name
            found.setdefault(name, EntryPoint(name, ep.value, _JUPYTER_GROUP))
    return found


def _provisioner_class(name: str, ep: EntryPoint) -> type[KernelProvisionerBase]:
    """Load the class entry point *ep* registers for provisioner *name*.

    Raises:
        ProvisionerError: it cannot be loaded, or is not a provisioner class.
    """
    try:
        cls = ep.load()
    except Exception as exc:
        raise ProvisionerError(
            f"kernel provisioner {name!r} ({ep.value}) failed to load: {exc}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, KernelProvisionerBase)):
        raise ProvisionerError(
            f"kernel provisioner {name!r} ({ep.value}) is not a KernelProvisionerBase subclass"
        )
    return cls


def _check_config(
    name: str, cls: type[KernelProvisionerBase], config: dict[str, Any], where: str
) -> None:
    """Refuse a kernel spec's provisioner *config* that sets what it may not.

    Raises:
        ProvisionerConfigError: it sets an internal trait (the manager sets those) or one
            *cls* does not have.
    """
    # Twin of compat/_from_jupyter.py's config check (jupyter_client's provisioners): the
    # same checks, there against jupyter_client's internal traits and in its own words.
    internal = sorted(set(config) & _INTERNAL_TRAITS)
    if internal:
        raise ProvisionerConfigError(
            f"kernel provisioner {name!r}: config may not set "
            f"{', '.join(map(repr, internal))}, which the kernel manager sets {where}"
        )
    unknown = sorted(set(config) - set(cls.class_trait_names()))
    if unknown:
        raise ProvisionerConfigError(
            f"kernel provisioner {name!r} has no trait(s) {', '.join(map(repr, unknown))} {where}"
        )
