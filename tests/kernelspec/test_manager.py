"""Tests for kernel_nursery.kernelspec._manager: finding kernel specs."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from traitlets.config import Config, LoggingConfigurable

from kernel_nursery import KernelSpecError, KernelSpecManager, NoSuchKernelSpecError
from kernel_nursery.provisioning import KernelProvisionerFactory

from ..conftest import write_kernel


def spec(name: str, **extra: object) -> dict[str, object]:
    return {"argv": [name, "{connection_file}"], "display_name": name.title(), **extra}


def test_first_directory_wins(tmp_path: Path) -> None:
    """A name found in two directories comes from the earlier one, as in Jupyter."""
    first, second = tmp_path / "a", tmp_path / "b"
    write_kernel(first, "k", spec("first"))
    write_kernel(second, "k", spec("second"))
    write_kernel(second, "other", spec("other"))
    ksm = KernelSpecManager(kernel_dirs=[str(first), str(second)], ensure_native_kernel=False)
    assert ksm.find_kernel_specs() == {"k": str(first / "k"), "other": str(second / "other")}
    assert ksm.get_kernel_spec("k").argv[0] == "first"


def test_default_dirs_follow_jupyter_path(jupyter_dirs: dict[str, Path]) -> None:
    """By default kernels are found in JUPYTER_PATH before the user's data directory."""
    write_kernel(jupyter_dirs["path"] / "kernels", "k", spec("from-path"))
    write_kernel(jupyter_dirs["data"] / "kernels", "k", spec("from-data"))
    write_kernel(jupyter_dirs["data"] / "kernels", "d", spec("data-only"))
    ksm = KernelSpecManager(ensure_native_kernel=False)
    assert ksm.get_kernel_spec("k").argv[0] == "from-path"
    assert ksm.get_kernel_spec("d").argv[0] == "data-only"


def test_names_are_case_insensitive_and_checked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Names are lowercased; directories with characters Jupyter forbids are skipped."""
    write_kernel(tmp_path, "MyKernel", spec("mine"))
    write_kernel(tmp_path, "bad name!", spec("bad"))
    (tmp_path / "no-json").mkdir()
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with caplog.at_level(logging.WARNING):
        assert list(ksm.find_kernel_specs()) == ["mykernel"]
    assert "bad name!" in caplog.text
    k = ksm.get_kernel_spec("MYKERNEL")
    assert (k.name, k.display_name) == ("mykernel", "Mine")


def test_native_kernel_when_none_installed(tmp_path: Path) -> None:
    """With ipykernel importable and no python3 spec installed, ipykernel's own is offered."""
    import sys

    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)])
    k = ksm.get_kernel_spec("python3")
    assert k.argv[:3] == [sys.executable, "-m", "ipykernel_launcher"]
    assert k.language == "python"
    assert (
        KernelSpecManager(
            kernel_dirs=[str(tmp_path)], ensure_native_kernel=False
        ).find_kernel_specs()
        == {}
    )


def test_installed_python3_beats_native(tmp_path: Path) -> None:
    """An installed python3 spec takes precedence over the native one."""
    write_kernel(tmp_path, "python3", spec("custom"))
    assert (
        KernelSpecManager(kernel_dirs=[str(tmp_path)]).get_kernel_spec("python3").argv[0]
        == "custom"
    )


def test_unknown_kernel_lists_the_known_ones(tmp_path: Path) -> None:
    """NoSuchKernelSpecError names the kernel asked for and lists those that exist."""
    write_kernel(tmp_path, "alpha", spec("a"))
    write_kernel(tmp_path, "beta", spec("b"))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with pytest.raises(NoSuchKernelSpecError, match=r"'gamma' \(available: alpha, beta\)") as info:
        ksm.get_kernel_spec("gamma")
    assert isinstance(info.value, LookupError)


def test_unknown_kernel_suggests_the_closest(tmp_path: Path) -> None:
    """A near miss ends the message with the closest name; a far one with nothing more."""
    write_kernel(tmp_path, "python3", spec("p"))
    write_kernel(tmp_path, "ir", spec("r"))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with pytest.raises(NoSuchKernelSpecError) as info:
        ksm.get_kernel_spec("Pyton3")
    assert str(info.value) == (
        "no kernel named 'Pyton3' (available: ir, python3); did you mean 'python3'?"
    )
    with pytest.raises(NoSuchKernelSpecError) as info:
        ksm.get_kernel_spec("julia-1.10")
    assert str(info.value) == "no kernel named 'julia-1.10' (available: ir, python3)"


def test_missing_python3_names_ipykernel(tmp_path: Path) -> None:
    """No python3 kernel (ipykernel's own spec not offered): the message says that ipykernel
    provides it, and how to register it."""
    write_kernel(tmp_path, "ir", spec("r"))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with pytest.raises(NoSuchKernelSpecError, match=r"; ipykernel provides it: .* install --user$"):
        ksm.get_kernel_spec("python3")


def test_allowed_kernelspecs(tmp_path: Path) -> None:
    """allowed_kernelspecs hides the others, and the error says why one is missing."""
    write_kernel(tmp_path, "alpha", spec("a"))
    write_kernel(tmp_path, "beta", spec("b"))
    ksm = KernelSpecManager(
        kernel_dirs=[str(tmp_path)], ensure_native_kernel=False, allowed_kernelspecs={"beta"}
    )
    assert list(ksm.find_kernel_specs()) == ["beta"]
    with pytest.raises(NoSuchKernelSpecError, match=r"KernelSpecManager\.allowed_kernelspecs"):
        ksm.get_kernel_spec("alpha")


def test_unavailable_provisioner_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel whose provisioner is not installed is not listed nor returned, with a warning."""
    write_kernel(
        tmp_path,
        "remote",
        spec("r", metadata={"kernel_provisioner": {"provisioner_name": "no-such-provisioner"}}),
    )
    write_kernel(
        tmp_path,
        "local",
        spec("l", metadata={"kernel_provisioner": {"provisioner_name": "local-provisioner"}}),
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with caplog.at_level(logging.WARNING):
        assert list(ksm.get_all_specs()) == ["local"]
    assert "no-such-provisioner" in caplog.text
    with pytest.raises(NoSuchKernelSpecError, match="'no-such-provisioner' is not installed"):
        ksm.get_kernel_spec("remote")


def test_get_all_specs_skips_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One broken kernel.json does not hide the others; get_kernel_spec on it raises."""
    write_kernel(tmp_path, "good", spec("g"))
    write_kernel(tmp_path, "broken", "{")
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with caplog.at_level(logging.WARNING):
        specs = ksm.get_all_specs()
    assert list(specs) == ["good"]
    assert specs["good"]["spec"]["argv"] == ["g", "{connection_file}"]
    assert specs["good"]["resource_dir"] == str(tmp_path / "good")
    assert "broken" in caplog.text
    with pytest.raises(KernelSpecError, match="not valid JSON"):
        ksm.get_kernel_spec("broken")


# ---------------------------------------------------------------- unreadable entries (issue 12)

# Deeper than the JSON decoder of every supported Python goes: 3.11 stops at its recursion
# limit (1,000), 3.12 and 3.13 at their C recursion limits (3.13: about 10,000).
DEEP = "[" * 100_000 + "]" * 100_000


def make_loop(kernels: Path) -> str:
    """A symlink to itself: every stat through it fails with ELOOP."""
    kernels.mkdir(parents=True, exist_ok=True)
    os.symlink("loop", kernels / "loop")
    return "loop"


def make_json_loop(kernels: Path) -> str:
    """A kernel directory whose kernel.json is a symlink to itself."""
    (kernels / "jsonloop").mkdir(parents=True)
    os.symlink("kernel.json", kernels / "jsonloop" / "kernel.json")
    return "jsonloop"


def make_json_dir(kernels: Path) -> str:
    """A kernel directory whose kernel.json is a directory."""
    (kernels / "jsondir" / "kernel.json").mkdir(parents=True)
    return "jsondir"


def make_locked(kernels: Path) -> str:
    """A kernel directory nobody may look into (EACCES)."""
    locked = write_kernel(kernels, "locked", spec("locked"))
    locked.chmod(0)
    try:
        (locked / "kernel.json").stat()
    except PermissionError:
        return "locked"
    locked.chmod(0o700)
    pytest.skip("permissions do not stop this user (root, or CAP_DAC_OVERRIDE)")


@pytest.mark.parametrize(
    "make_bad",
    [
        make_loop,
        make_json_loop,
        make_json_dir,
        make_locked,
    ],
)
def test_unreadable_entry_is_skipped_with_a_warning(
    jupyter_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture, make_bad: Callable[[Path], str]
) -> None:
    """An entry that cannot be examined (ELOOP, EACCES, a kernel.json that is a directory) is
    skipped with a warning naming it; every other kernel is still found."""
    kernels = jupyter_dirs["path"] / "kernels"
    write_kernel(kernels, "good", spec("good"))
    bad = make_bad(kernels)
    try:
        ksm = KernelSpecManager()
        with caplog.at_level(logging.WARNING):
            assert ksm.get_kernel_spec("python3").language == "python"
            assert ksm.get_kernel_spec("good").argv[0] == "good"
            found = set(ksm.get_all_specs())  # with the kernels installed in this environment
        assert {"good", "python3"} <= found and bad not in found
        assert f"Skipping kernel directory {kernels / bad}" in caplog.text
        with pytest.raises(NoSuchKernelSpecError, match=f"no kernel named {bad!r}"):
            ksm.get_kernel_spec(bad)
    finally:
        if bad == "locked":
            (kernels / bad).chmod(0o700)  # so that tmp_path can be removed


def test_deeply_nested_kernel_json_is_a_spec_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel.json nested 3,000 levels deep is a KernelSpecError for that kernel alone:
    get_all_specs skips it with a warning, get_kernel_spec of its name raises."""
    write_kernel(tmp_path, "good", spec("good"))
    write_kernel(tmp_path, "deep", '{"argv": ["k"], "metadata": {"x": ' + DEEP + "}}")
    ksm = KernelSpecManager(kernel_dirs=[str(tmp_path)], ensure_native_kernel=False)
    with caplog.at_level(logging.WARNING):
        assert list(ksm.get_all_specs()) == ["good"]
    assert "Skipping kernel 'deep'" in caplog.text
    assert "nested too deeply" in caplog.text
    with pytest.raises(KernelSpecError, match="nested too deeply") as info:
        ksm.get_kernel_spec("deep")
    assert info.value.path == str(tmp_path / "deep" / "kernel.json")


@pytest.mark.parametrize("through", ["config", "parent"])
def test_configured_factory_decides_what_is_listed(tmp_path: Path, through: str) -> None:
    """Factory configuration given to the spec manager, or to its parent (an application),
    decides which kernels can be started; the process's shared factory is left as it was."""
    write_kernel(tmp_path, "plain", spec("p"))
    config = Config({"KernelProvisionerFactory": {"default_provisioner_name": "not-installed"}})
    kw: dict[str, object] = {"kernel_dirs": [str(tmp_path)], "ensure_native_kernel": False}
    if through == "config":
        ksm = KernelSpecManager(config=config, **kw)
    else:
        ksm = KernelSpecManager(parent=LoggingConfigurable(config=config), **kw)
    assert ksm.provisioner_factory.default_provisioner_name == "not-installed"
    assert ksm.get_all_specs() == {}
    with pytest.raises(NoSuchKernelSpecError, match=r"'not-installed' .*is not installed"):
        ksm.get_kernel_spec("plain")
    assert KernelProvisionerFactory.instance().default_provisioner_name == "local-provisioner"
    unconfigured = KernelSpecManager(**kw)
    assert unconfigured.provisioner_factory is KernelProvisionerFactory.instance()
    assert list(unconfigured.get_all_specs()) == ["plain"]
