"""Whether a kernel about to be launched gets CurveZMQ keys: the ``transport_encryption`` policy.

``"auto"`` (the default) encrypts a tcp kernel that listens beyond loopback, where anyone on the
network path could otherwise read its messages, unless its spec says it cannot
(``metadata.supported_encryption`` present without ``"curve"``). A spec that does not say is
tried: a kernel that then ignores the keys is caught at readiness, at once, with a
:class:`~kernel_nursery.TransportEncryptionError`. Loopback and ipc kernels stay in clear under
``"auto"`` (other users of the host are kept out by the connection file's permissions and the
HMAC key; see the security page for what encryption adds there).

``"required"`` encrypts every kernel (tcp or ipc), and refuses one whose spec rules it out.
``"disabled"`` never encrypts.
"""

from __future__ import annotations

import ipaddress

from .._errors import TransportEncryptionError
from .._kernelspec import KernelSpec
from ..connection import curve_supported, new_curve_keypair

__all__ = ["ENCRYPTION_POLICIES", "curve_keys_for_launch"]

#: The values of ``transport_encryption``, the first being the default.
ENCRYPTION_POLICIES = ("auto", "required", "disabled")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def curve_keys_for_launch(
    policy: str, *, spec: KernelSpec, transport: str, ip: str
) -> dict[str, str]:
    """The ``curve_publickey``/``curve_secretkey`` entries for a new kernel's connection info
    under *policy*, or ``{}`` when it is to be reached in clear.

    Raises:
        TransportEncryptionError: *policy* is ``"required"`` and the spec says the kernel
            does not support CurveZMQ, or this libzmq has none.
        ValueError: *policy* is not one of :data:`ENCRYPTION_POLICIES`.
    """
    if policy not in ENCRYPTION_POLICIES:
        raise ValueError(
            f"transport_encryption must be one of {', '.join(ENCRYPTION_POLICIES)}, got {policy!r}"
        )
    if policy == "disabled":
        return {}
    declared = spec.supported_encryption
    ruled_out = declared is not None and "curve" not in declared
    if policy == "required":
        if ruled_out:
            raise TransportEncryptionError(
                f"transport_encryption='required', but the spec of kernel "
                f"{spec.name or spec.display_name!r} declares metadata.supported_encryption "
                f"{sorted(declared or ())} without 'curve'"
            )
    elif transport != "tcp" or _is_loopback(ip) or ruled_out or not curve_supported():
        return {}
    public, secret = new_curve_keypair()
    return {"curve_publickey": public, "curve_secretkey": secret}
