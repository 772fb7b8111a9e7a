"""Tests for kernel_nursery.provisioning._limits: the limits' vocabulary, shared by provisioners."""

from __future__ import annotations

import pytest

from kernel_nursery import ProvisionerConfigError
from kernel_nursery.provisioning._limits import (
    LIMIT_NAMES,
    Limits,
    format_limit,
    parse_limits,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (1, 1),
        (536870912, 512 * 1024**2),
        ("512m", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512MiB", 512 * 1024**2),
        ("512mb", 512 * 1024**2),
        ("1g", 1024**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("10k", 10240),
        (" 2t ", 2 * 1024**4),
        ("4096", 4096),
    ],
)
def test_sizes_parse_with_binary_suffixes(text: object, size: int) -> None:
    """Sizes are bytes, with optional binary suffixes k, m, g, t (b or ib after them)."""
    assert parse_size(text, where="x") == size


@pytest.mark.parametrize("bad", [0, -1, "", "m", "12q", "1e9", True, 1.5, "-5m", None, [1]])
def test_a_bad_size_is_a_one_line_config_error(bad: object) -> None:
    """A size that is none is refused with a ProvisionerConfigError naming where it was."""
    with pytest.raises(ProvisionerConfigError, match=r"^memory in X must be a size") as caught:
        parse_size(bad, where="memory in X")
    assert "\n" not in str(caught.value)


def test_limits_parse_every_name() -> None:
    """Every limit parses to its unit: bytes, counts, whole seconds, processors."""
    limits = parse_limits(
        {
            "memory": "256m",
            "pids": 64,
            "cpu_time": "1.5m",
            "cpus": "0.5",
            "file_size": "1m",
            "open_files": "128",
        },
        where="here",
    )
    assert limits == Limits(
        memory=256 * 1024**2,
        pids=64,
        cpu_time=90,
        cpus=0.5,
        file_size=1024**2,
        open_files=128,
    )
    assert [name for name, _value in limits.items()] == list(LIMIT_NAMES)
    assert limits.describe() == {
        "memory": "256 MiB",
        "pids": "64 processes",
        "cpu_time": "90 s",
        "cpus": "0.5 CPUs",
        "file_size": "1 MiB",
        "open_files": "128 files",
    }


def test_no_limits() -> None:
    """None, an empty mapping and None values all mean: no limit."""
    assert parse_limits(None, where="x") == Limits()
    assert parse_limits({}, where="x").items() == []
    assert parse_limits({"memory": None}, where="x") == Limits()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], r"^L must be a mapping of limit names to values, not list$"),
        ({"memroy": 1}, r"^L: unknown limit 'memroy'; the limits are memory, pids, "),
        ({"pids": 0}, r"^L\['pids'\] must be a whole number above 0, not 0$"),
        ({"pids": 2.5}, r"^L\['pids'\] must be a whole number"),
        ({"open_files": "many"}, r"^L\['open_files'\] must be a whole number"),
        ({"cpu_time": "5 days"}, r"^L\['cpu_time'\] must be seconds above 0"),
        ({"cpu_time": 0}, r"^L\['cpu_time'\] must be seconds above 0"),
        ({"cpus": "nan"}, r"^L\['cpus'\] must be a number of processors above 0"),
        ({"cpus": 0}, r"^L\['cpus'\] must be a number of processors above 0"),
        ({"memory": "lots"}, r"^L\['memory'\] must be a size in bytes above 0"),
        ({"file_size": -1}, r"^L\['file_size'\] must be a size in bytes above 0"),
    ],
)
def test_bad_limits_are_one_line_config_errors(value: object, message: str) -> None:
    """A bad name or value is a ProvisionerConfigError naming the limit and the value."""
    with pytest.raises(ProvisionerConfigError, match=message) as caught:
        parse_limits(value, where="L")
    assert "\n" not in str(caught.value)


def test_format_limit_small_sizes() -> None:
    """Sizes below a KiB are shown in bytes; others in the largest binary unit under them."""
    assert format_limit("file_size", 100) == "100 bytes"
    assert format_limit("memory", 1536) == "1.5 KiB"
