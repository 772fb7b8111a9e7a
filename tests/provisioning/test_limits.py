"""The limits vocabulary shared by isolating provisioners (provisioning/_limits.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kernel_nursery import ProvisionerConfigError
from kernel_nursery.provisioning._limits import (
    ResourceLimits,
    format_memory,
    parse_memory,
    resource_limits,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512m", 512 * 2**20),
        ("2G", 2 * 2**30),
        ("65536k", 64 * 2**20),
        (" 8 m ", 8 * 2**20),
        (10 * 2**20, 10 * 2**20),
        ("10485760b", 10 * 2**20),
        ("10485760", 10 * 2**20),
    ],
)
def test_memory_sizes_in_powers_of_1024(text: object, size: int) -> None:
    """Memory is bytes or a number with a unit (b, k, m, g; either case), as Docker reads it."""
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "1.5g", "-1m", "12t", "", True, None, 1.5, "1k"])
def test_bad_memory_sizes_are_one_line_config_errors(text: object) -> None:
    """Anything else, and a size no kernel starts in, is a one-line ProvisionerConfigError."""
    with pytest.raises(ProvisionerConfigError, match="memory") as caught:
        parse_memory(text)
    assert "\n" not in str(caught.value)


def test_format_memory_uses_the_largest_exact_unit() -> None:
    """A size is written back in the largest unit that divides it."""
    assert [format_memory(n) for n in (2**30, 3 * 2**29, 2**10 + 1)] == ["1g", "1536m", "1025b"]


@pytest.mark.parametrize(
    ("settings", "limits"),
    [
        ({"memory": "", "cpus": 0, "pids_limit": 0}, ResourceLimits()),
        (
            {"memory": "64m", "cpus": 0.5, "pids_limit": 100},
            ResourceLimits(memory=64 * 2**20, cpus=0.5, pids_limit=100),
        ),
        ({"memory": None, "cpus": "2", "pids_limit": None}, ResourceLimits(cpus=2.0)),
    ],
)
def test_resource_limits(settings: dict[str, Any], limits: ResourceLimits) -> None:
    """Empty, zero or None means no limit; the others are checked and kept."""
    assert resource_limits(**settings) == limits


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"cpus": -1}, "cpus"),
        ({"cpus": "nan"}, "cpus"),
        ({"cpus": True}, "cpus"),
        ({"pids_limit": -5}, "pids_limit"),
        ({"pids_limit": 2.5}, "pids_limit"),
    ],
)
def test_bad_limits_name_their_setting(settings: dict[str, Any], words: str) -> None:
    """A bad cpus or pids_limit is a ProvisionerConfigError naming it."""
    given = {"memory": "", "cpus": 0, "pids_limit": 0, **settings}
    with pytest.raises(ProvisionerConfigError, match=words):
        resource_limits(**given)
