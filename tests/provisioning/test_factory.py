"""Tests for kernel_nursery.provisioning._factory: finding provisioners by entry point."""

from __future__ import annotations

import copy
import logging
import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import LoggingConfigurable

from kernel_nursery import KernelSpec, LocalProvisioner, ProvisionerConfigError, ProvisionerError
from kernel_nursery.provisioning import (
    DEFAULT_PROVISIONER_ENV,
    ENTRY_POINT_GROUP,
    KernelProvisionerFactory,
)

Installer = Callable[..., None]


@pytest.fixture
def install(install_provisioner: Installer) -> Installer:
    """install_provisioner with this module's example provisioner as the default source."""

    def installer(name: str, obj: str = "Provisioner", source: str = CUSTOM) -> None:
        install_provisioner(name, obj, source)

    return installer


CUSTOM = textwrap.dedent(
    """
    from traitlets import Unicode
    from kernel_nursery import LocalProvisioner

    class Provisioner(LocalProvisioner):
        greeting = Unicode("hello", config=True)

        def _finalize_env(self, env):
            super()._finalize_env(env)
            env["GREETING"] = self.greeting

    class NotAProvisioner:
        pass
    """
)


def spec_for(name: str | None, config: dict[str, Any] | None = None) -> KernelSpec:
    metadata: dict[str, Any] = {"debugger": False}
    if name is not None:
        metadata["kernel_provisioner"] = {"provisioner_name": name, "config": config or {}}
    return KernelSpec(argv=["python", "-c", "pass"], name="k", metadata=metadata)


def test_local_provisioner_is_registered_and_default() -> None:
    """local-provisioner is in our group and is the default for specs without a stanza."""
    factory = KernelProvisionerFactory.instance()
    assert factory.default_provisioner_name == "local-provisioner"
    assert factory.get_provisioner_entries()["local-provisioner"] == (
        "kernel_nursery.provisioning:LocalProvisioner"
    )
    assert factory.provisioners["local-provisioner"].group == ENTRY_POINT_GROUP


def test_default_stanza_is_fabricated_without_touching_the_spec() -> None:
    """A spec without kernel_provisioner gets LocalProvisioner; its metadata is unchanged."""
    spec = spec_for(None)
    before = copy.deepcopy(spec.metadata)
    parent = LoggingConfigurable()
    p = KernelProvisionerFactory.instance().create_provisioner_instance("kid", spec, parent)
    assert type(p) is LocalProvisioner
    assert (p.kernel_id, p.kernel_spec, p.parent) == ("kid", spec, parent)
    assert spec.metadata == before


def test_default_name_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment variable sets the default provisioner name."""
    monkeypatch.setenv(DEFAULT_PROVISIONER_ENV, "other")
    assert KernelProvisionerFactory.instance().default_provisioner_name == "other"


def test_unregistered_provisioner(caplog: pytest.LogCaptureFixture) -> None:
    """Not registered: unavailable (with a warning); ModuleNotFoundError names it and the group."""
    factory = KernelProvisionerFactory.instance()
    spec = spec_for("missing-prov")
    with caplog.at_level(logging.WARNING):
        assert not factory.is_provisioner_available(spec)
    assert "missing-prov" in caplog.text
    with pytest.raises(ModuleNotFoundError, match=f"'missing-prov'.*{ENTRY_POINT_GROUP}") as info:
        factory.create_provisioner_instance("k", spec, None)
    assert info.value.name == "missing-prov"


def test_custom_provisioner_installed_after_startup(install: Installer) -> None:
    """A provisioner installed after the factory was created is found on the next lookup, and
    the stanza's config sets its traits."""
    factory = KernelProvisionerFactory.instance()
    assert "greeter" not in factory.get_provisioner_entries()
    install("greeter")
    spec = spec_for("greeter", {"greeting": "hi", "ip": "127.0.0.1"})
    assert factory.is_provisioner_available(spec)
    p = factory.create_provisioner_instance("k", spec, None)
    assert type(p).__name__ == "Provisioner"
    assert (p.greeting, p.ip) == ("hi", "127.0.0.1")  # type: ignore[attr-defined]
    assert "greeter" in factory.get_provisioner_entries()


def test_entry_points_are_read_again_when_a_package_is_installed(
    install: Installer, tmp_path: Path
) -> None:
    """The scan of entry points is kept while the import path is unchanged, and read again
    when a package is installed into a directory of it, even one untouched for an hour."""
    install("first")
    site = tmp_path / "site"
    an_hour_ago = time.time() - 3600
    os.utime(site, (an_hour_ago, an_hour_ago))
    factory = KernelProvisionerFactory.instance()
    assert "first" in factory.get_provisioner_entries()
    assert not factory.is_provisioner_available(spec_for("second"))
    install("second")
    assert factory.is_provisioner_available(spec_for("second"))
    assert KernelProvisionerFactory().provisioners.keys() >= {"first", "second"}


@pytest.mark.anyio
async def test_custom_provisioner_runs_a_kernel(install: Installer, tmp_path: Path) -> None:
    """A provisioner registered by entry point launches a real process with its customisation."""
    install("greeter")
    out = tmp_path / "out"
    spec = KernelSpec(
        argv=[
            "python",
            "-c",
            "import os, sys; open(sys.argv[1], 'w').write(os.environ['GREETING'])",
            str(out),
        ],
        metadata={
            "kernel_provisioner": {"provisioner_name": "greeter", "config": {"greeting": "bonjour"}}
        },
    )
    p = KernelProvisionerFactory.instance().create_provisioner_instance("k", spec, None)
    async with p:
        kw = await p.pre_launch()
        await p.launch_kernel(kw.pop("cmd"), **kw)
        assert await p.wait() == 0
    assert out.read_text() == "bonjour"


def test_unknown_config_trait(install: Installer) -> None:
    """config naming a trait the provisioner lacks is a ProvisionerConfigError naming it."""
    install("greeter")
    with pytest.raises(ProvisionerConfigError, match="'colour'"):
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("greeter", {"colour": "red"}), None
        )


def test_bad_config_value(install: Installer) -> None:
    """A value the trait rejects is a ProvisionerConfigError."""
    install("greeter")
    with pytest.raises(ProvisionerConfigError, match="greeter"):
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("greeter", {"greeting": 42}), None
        )


def test_entry_point_to_something_else(install: Installer) -> None:
    """An entry point that is not a provisioner class is refused with ProvisionerError."""
    install("wrong", obj="NotAProvisioner")
    with pytest.raises(ProvisionerError, match="not a KernelProvisionerBase"):
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("wrong"), None
        )


def test_entry_point_that_fails_to_import(install: Installer) -> None:
    """A provisioner whose module fails to import is a ProvisionerError, with the cause."""
    install("broken", source="raise RuntimeError('boom')\n")
    with pytest.raises(ProvisionerError, match="failed to load: boom") as info:
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("broken"), None
        )
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    "config",
    [{"log": "x"}, {"kernel_id": 5}, {"connection_info": []}, {"parent": 1}, {"config": {}}],
)
def test_base_traits_cannot_be_configured(config: dict[str, Any]) -> None:
    """config may not set the base class's internal traits: ProvisionerConfigError naming it."""
    [key] = config
    with pytest.raises(ProvisionerConfigError, match=f"may not set '{key}'"):
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("local-provisioner", config), None
        )


def test_bad_config_value_names_the_key() -> None:
    """A value of the wrong type for a provisioner's trait is a ProvisionerConfigError naming
    the key, chained to the TraitError."""
    message = r"config key 'independent': .*expected a boolean"
    with pytest.raises(ProvisionerConfigError, match=message) as info:
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("local-provisioner", {"independent": "yes please"}), None
        )
    assert type(info.value.__cause__).__name__ == "TraitError"


BUGGY = textwrap.dedent(
    """
    from kernel_nursery import LocalProvisioner

    class Provisioner(LocalProvisioner):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            1 / 0
    """
)


def test_bug_in_provisioner_init_propagates(install: Installer) -> None:
    """An error in a provisioner's own __init__ propagates as itself, not as a config error."""
    install("buggy", source=BUGGY)
    with pytest.raises(ZeroDivisionError):
        KernelProvisionerFactory.instance().create_provisioner_instance(
            "k", spec_for("buggy"), None
        )
