"""Fixtures shared by every test.

Every async test runs on both backends through anyio's pytest plugin (the ``anyio_backend``
fixture below); trio-only tests use ``@pytest.mark.trio``. pytest-trio's ``trio_mode`` is off.

The autouse fixtures isolate Jupyter's directories in a temporary folder, reset the provisioner
factory singleton, and check after each test that it left nothing behind: no child process, no
reserved port, no connection file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel_nursery import KernelSpec
from kernel_nursery._platform import LINUX, PORTABLE_VARIABLE
from kernel_nursery.connection import reserved_ports
from kernel_nursery.provisioning import ENTRY_POINT_GROUP, KernelProvisionerFactory, _guardian

from .helpers.cancel_points import CountingProvisioner
from .helpers.kernels import FAKE_KERNEL, TOY_KERNEL, SpecFactory, spec_maker
from .helpers.procs import live_children

__all__ = ["FAKE_KERNEL", "TOY_KERNEL", "Installer", "write_kernel"]


def pytest_report_header() -> str | None:
    """Say so when the library's Linux-only facilities are hidden (``nox -s portable``)."""
    if LINUX or not sys.platform.startswith("linux"):
        return None
    return f"kernel_nursery: Linux facilities hidden ({PORTABLE_VARIABLE}): the portable fallbacks"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each anyio test once per backend."""
    return str(request.param)


@pytest.fixture(autouse=True)
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Point Jupyter's runtime, data and config directories at fresh temporary folders.

    The runtime directory is a short one of its own, removed after the test: pytest's
    temporary folders (deeper still under pytest-xdist) leave no room for ipc endpoints, whose
    paths must fit in a Unix socket address (107 bytes).
    """
    dirs = {name: tmp_path / "jupyter" / name for name in ("data", "config", "path")}
    short = Path(tempfile.mkdtemp(prefix="kn-"))
    dirs["runtime"] = short / "runtime"  # not created: the code under test does that
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(dirs["runtime"]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(dirs["config"]))
    monkeypatch.setenv("JUPYTER_PATH", str(dirs["path"]))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.delenv("KERNEL_NURSERY_DEFAULT_PROVISIONER", raising=False)
    yield dirs
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_factory() -> Iterator[None]:
    """The provisioner factory is a singleton; give each test its own."""
    KernelProvisionerFactory.clear_instance()
    yield
    KernelProvisionerFactory.clear_instance()


@pytest.fixture(autouse=True)
def nothing_left_behind(jupyter_dirs: dict[str, Path]) -> Iterator[None]:
    """Fail a test that leaves a child process, a reserved port or a connection file."""
    children_before = live_children()
    yield
    leftover = live_children() - children_before
    assert not leftover, f"test left child processes running: {sorted(leftover)}"
    assert not reserved_ports(), f"test left ports reserved: {sorted(reserved_ports())}"
    runtime = jupyter_dirs["runtime"]
    files = sorted(p.name for p in runtime.glob("kernel-*")) if runtime.exists() else []
    assert not files, f"test left files in the runtime directory: {files}"


@pytest.fixture
def toy_spec() -> SpecFactory:
    """Make a kernel spec that runs the toy kernel with extra arguments."""
    return spec_maker(TOY_KERNEL, "toy")


@pytest.fixture
def fake_spec() -> SpecFactory:
    """Make a kernel spec for the fake (protocol-speaking, misbehaving on demand) kernel."""
    return spec_maker(FAKE_KERNEL, "fake")


Installer = Callable[..., None]


@pytest.fixture
def install_provisioner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Installer]:
    """Install a provisioner the way a package would: a module plus a dist-info folder with an
    entry point in our group, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def installer(name: str, obj: str, source: str) -> None:
        module = f"kn_test_provisioner_{len(modules)}_{abs(hash(str(tmp_path)))}"
        modules.append(module)
        (site / f"{module}.py").write_text(source)
        dist = site / f"kn_test_{name.replace('-', '_')}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: kn-test-{name}\nVersion: 1.0\n"
        )
        (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {module}:{obj}\n")

    yield installer
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def counting_spec(fake_spec: SpecFactory, install_provisioner: Installer) -> SpecFactory:
    """Make a fake kernel spec whose provisioner is CountingProvisioner, which cancels a scope
    at an armed hook call (tests/helpers/cancel_points.py)."""
    source = f"from {CountingProvisioner.__module__} import CountingProvisioner as Provisioner\n"
    install_provisioner("counting", "Provisioner", source)

    def make(*args: str) -> KernelSpec:
        metadata = {"kernel_provisioner": {"provisioner_name": "counting"}}
        return fake_spec(*args, metadata=metadata)

    return make


@pytest.fixture
def fresh_guardian() -> Iterator[None]:
    """This process's kernel guardian state starts afresh for the test (no guardian running),
    and the previous state comes back after it; the test's guardian is stopped and reaped."""
    previous = _guardian._state
    _guardian._state = _guardian._State()
    try:
        yield
    finally:
        state = _guardian._state
        if state.fd is not None:
            os.close(state.fd)  # end of file: the guardian stops what is left, then exits
        if state.popen is not None:
            state.popen.wait(30)
        _guardian._state = previous


def write_kernel(directory: Path, name: str, spec: dict[str, Any] | str) -> Path:
    """Write ``<directory>/<name>/kernel.json`` (a dict as JSON, a str as is)."""
    folder = directory / name
    folder.mkdir(parents=True, exist_ok=True)
    text = spec if isinstance(spec, str) else json.dumps(spec)
    (folder / "kernel.json").write_text(text, encoding="utf-8")
    return folder
