"""Tests for kernel_nursery.connection._files: connection files, keys, the runtime directory."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kernel_nursery import ConnectionFileError
from kernel_nursery.connection import (
    PORT_NAMES,
    connection_file_path,
    new_connection_info,
    new_key,
    read_connection_file,
    release_connection_info,
    reserved_ports,
    runtime_dir,
    write_connection_file,
)

GOOD = json.dumps(
    {
        "ip": "127.0.0.1",
        "shell_port": 1001,
        "iopub_port": 1002,
        "stdin_port": 1003,
        "control_port": 1004,
        "hb_port": 1005,
        "key": "abc",
        "signature_scheme": "hmac-sha256",
    }
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_has_256_random_bits() -> None:
    """Keys are 64 hex characters (256 bits) and differ each time."""
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in keys)


def test_runtime_dir_is_private(jupyter_dirs: dict[str, Path]) -> None:
    """The runtime directory is created with mode 0700 where Jupyter expects it."""
    path = runtime_dir()
    assert path == jupyter_dirs["runtime"]
    assert mode(path) == 0o700


def test_runtime_dir_is_tightened(jupyter_dirs: dict[str, Path]) -> None:
    """An existing runtime directory readable by others is made private."""
    jupyter_dirs["runtime"].mkdir(parents=True)
    jupyter_dirs["runtime"].chmod(0o777)
    assert mode(runtime_dir()) == 0o700


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    """A written file is mode 0600 JSON that reads back to the same info."""
    info = new_connection_info(kernel_name="python3")
    try:
        path = write_connection_file(info, tmp_path / "sub" / "k.json")
        assert mode(path) == 0o600
        assert json.loads(path.read_text()) == info
        assert read_connection_file(path) == info
    finally:
        release_connection_info(info)


def test_write_replaces_a_planted_link(tmp_path: Path) -> None:
    """Writing over a symlink replaces the link; the file it pointed at is untouched."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "k.json"
    link.symlink_to(victim)
    info = new_connection_info()
    try:
        write_connection_file(info, link)
    finally:
        release_connection_info(info)
    assert victim.read_text() == "precious"
    assert not link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", "victim"]


def test_default_path_is_in_runtime_dir(jupyter_dirs: dict[str, Path]) -> None:
    """The default connection file is <runtime>/kernel-<id>.json, as Jupyter names it."""
    assert connection_file_path("abc") == jupyter_dirs["runtime"] / "kernel-abc.json"


def test_new_info_reserves_until_released() -> None:
    """Five distinct ports are reserved at creation and released by release_connection_info."""
    info = new_connection_info()
    ports = {info[k] for k in PORT_NAMES}
    assert len(ports) == 5
    assert {("tcp", p) for p in ports} <= reserved_ports()
    assert info["signature_scheme"] == "hmac-sha256"
    assert len(info["key"]) == 64
    release_connection_info(info)
    release_connection_info(info)  # twice is fine
    assert not reserved_ports()


def test_ipc_info_and_release_removes_endpoints(tmp_path: Path) -> None:
    """ipc endpoints skip existing files; release removes the endpoint files."""
    prefix = str(tmp_path / "kernel-ipc")
    Path(f"{prefix}-1").touch()
    info = new_connection_info(transport="ipc", ip=prefix)
    assert info["shell_port"] == 2
    Path(f"{prefix}-2").touch()  # as the kernel's bind would
    release_connection_info(info)
    assert not Path(f"{prefix}-2").exists()
    assert Path(f"{prefix}-1").exists()  # not ours


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "not valid JSON"),
        ('{"ip": "127.0.0.1"}', "missing"),
        ('{"ip": "127.0.0.1", "key": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (GOOD.replace('"hmac-sha256"', '["hmac-sha256"]'), "'signature_scheme'"),
        (GOOD.replace('"hmac-sha256"', '{"a": 1}'), "'signature_scheme'"),
        (GOOD.replace('"shell_port": 1001', '"shell_port": true'), "'shell_port'"),
        (GOOD.replace('"key": "abc"', '"key": "\\udc80"'), "'key': must be text"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    """A missing, non-JSON (deeply nested included), incomplete or ill-typed file raises a
    one-line ConnectionFileError naming it."""
    path = tmp_path / "c.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConnectionFileError, match=message) as info:
        read_connection_file(path)
    assert info.value.path == os.fspath(path)
    assert "\n" not in str(info.value)


def test_non_ascii_key_from_jupyter_client(tmp_path: Path) -> None:
    """A connection file jupyter_client writes with a non-ASCII key (it encodes keys as UTF-8)
    reads back with the same key, and is written back with it."""
    from jupyter_client.connect import write_connection_file as jupyter_write

    key = "clé-ключ-🔑"
    path, _ = jupyter_write(
        str(tmp_path / "theirs.json"),
        shell_port=2001,
        iopub_port=2002,
        stdin_port=2003,
        control_port=2004,
        hb_port=2005,
        ip="127.0.0.1",
        key=key.encode("utf-8"),
    )
    info = read_connection_file(path)
    assert info["key"] == key
    ours = write_connection_file(info, tmp_path / "ours.json")
    assert json.loads(ours.read_text(encoding="utf-8"))["key"] == key
