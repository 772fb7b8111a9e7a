"""Tests for kernel_nursery.provisioning._encryption: which kernels get CurveZMQ keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kernel_nursery import KernelSpec, LocalProvisioner, TransportEncryptionError
from kernel_nursery.provisioning._encryption import curve_keys_for_launch

pytestmark = pytest.mark.anyio

#: Every address of the host: beyond loopback.
ANY = "0.0.0.0"  # noqa: S104 (what the policy must see as reachable from the network)


def spec(**metadata: Any) -> KernelSpec:
    return KernelSpec(argv=["k", "{connection_file}"], name="k", metadata=metadata)


@pytest.mark.parametrize(
    ("policy", "transport", "ip", "metadata", "encrypted"),
    [
        ("auto", "tcp", "127.0.0.1", {"supported_encryption": ["curve"]}, True),
        ("auto", "ipc", "/tmp/k", {"supported_encryption": ["curve"]}, True),
        ("auto", "tcp", "127.0.0.1", {}, False),
        ("auto", "tcp", ANY, {}, True),
        ("auto", "tcp", "10.1.2.3", {"supported_encryption": ["curve"]}, True),
        ("auto", "tcp", ANY, {"supported_encryption": []}, False),
        ("auto", "ipc", "/tmp/k", {}, False),
        ("required", "tcp", "127.0.0.1", {}, True),
        ("required", "ipc", "/tmp/k", {"supported_encryption": "curve"}, True),
        ("disabled", "tcp", ANY, {"supported_encryption": ["curve"]}, False),
    ],
)
def test_policy(policy: str, transport: str, ip: str, metadata: Any, encrypted: bool) -> None:
    """auto: a spec declaring curve, anywhere, and beyond loopback unless the spec rules it
    out; required: always; disabled: never."""
    keys = curve_keys_for_launch(policy, spec=spec(**metadata), transport=transport, ip=ip)
    assert bool(keys) is encrypted
    if encrypted:
        assert set(keys) == {"curve_publickey", "curve_secretkey"}


def test_required_with_a_spec_that_rules_it_out_is_refused() -> None:
    """required, for a kernel whose spec lists other schemes only, is a typed error."""
    with pytest.raises(TransportEncryptionError, match="without 'curve'"):
        curve_keys_for_launch(
            "required", spec=spec(supported_encryption=["tls"]), transport="tcp", ip="127.0.0.1"
        )


def test_unknown_policy_is_a_value_error() -> None:
    """A policy name that does not exist is refused."""
    with pytest.raises(ValueError, match="transport_encryption"):
        curve_keys_for_launch("maybe", spec=spec(), transport="tcp", ip="127.0.0.1")


async def test_kernel_beyond_loopback_is_encrypted_by_default() -> None:
    """A LocalProvisioner listening on 0.0.0.0 writes a Curve key pair in the connection file
    by default; nothing is left after it."""
    async with LocalProvisioner(kernel_spec=spec(), ip=ANY) as p:
        await p.pre_launch()
        on_disk = json.loads(Path(p.connection_file).read_text())
        assert len(on_disk["curve_publickey"]) == 40
        assert on_disk["curve_publickey"] == p.connection_info["curve_publickey"]
        await p.cleanup()


async def test_required_refusal_leaves_nothing() -> None:
    """A refused launch reserves no port and writes no file (the autouse check)."""
    async with LocalProvisioner(
        kernel_spec=spec(supported_encryption=[]), transport_encryption="required"
    ) as p:
        with pytest.raises(TransportEncryptionError):
            await p.pre_launch()


def test_loopback_is_told_by_name_or_address() -> None:
    """'localhost' and loopback addresses count as loopback; other names and addresses do not
    (a name other than localhost is not resolved: it may point anywhere)."""
    from kernel_nursery.provisioning._encryption import _is_loopback

    assert _is_loopback("localhost") and _is_loopback("127.0.0.5") and _is_loopback("::1")
    assert not _is_loopback("10.1.2.3") and not _is_loopback("gpu1.example.org")
