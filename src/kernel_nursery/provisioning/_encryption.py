"""Whether a kernel about to be launched gets CurveZMQ keys: the ``transport_encryption`` policy.

``"auto"`` (the default) encrypts a kernel whose spec declares ``"curve"`` in
``metadata.supported_encryption`` (ipykernel 7.4's does), whatever its transport: on a shared
machine any local user can subscribe to a kernel's iopub port on loopback and read every output
(messages are signed, not encrypted). It also encrypts a tcp kernel that listens beyond loopback
unless its spec rules it out (``supported_encryption`` present without ``"curve"``): a spec that
does not say is tried, and a kernel that then ignores the keys is caught at readiness, at once,
with a :class:`~kernel_nursery.TransportEncryptionError`. Other kernels run in clear (a debug
log line says why). Only clients that speak CurveZMQ can then talk to the kernel (ours and
jupyter_client's since 8.9 do, with the connection file's keys); where the connection file is
handed to other tools, ``"disabled"`` keeps the kernel in clear (``kernel-nursery start`` and
the jupyter_client bridge do by default; see the security page).

``"required"`` encrypts every kernel (tcp or ipc), and refuses one whose spec rules it out.
``"disabled"`` never encrypts.
"""

from __future__ import annotations

import ipaddress
import logging

from .._errors import TransportEncryptionError
from .._kernelspec import KernelSpec
from ..connection import curve_supported, new_curve_keypair

__all__ = ["ENCRYPTION_POLICIES", "curve_keys_for_launch"]

_log = logging.getLogger(__name__)

#: The values of ``transport_encryption``, the first being the default.
ENCRYPTION_POLICIES = ("auto", "required", "disabled")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _clear_under_auto(declared: frozenset[str] | None, *, transport: str, ip: str) -> str | None:
    """Why ``"auto"`` leaves a kernel in clear, or ``None`` when it encrypts it."""
    if not curve_supported():
        return "this libzmq has no CURVE"
    if declared is not None and "curve" in declared:
        return None
    if declared is not None:
        return f"its spec declares supported_encryption {sorted(declared)} without 'curve'"
    if transport == "tcp" and not _is_loopback(ip):
        return None  # beyond loopback: tried (a kernel ignoring the keys fails readiness)
    return "its spec does not declare 'curve' in metadata.supported_encryption"


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
    name = spec.name or spec.display_name
    if policy == "required":
        if ruled_out:
            raise TransportEncryptionError(
                f"transport_encryption='required', but the spec of kernel {name!r} declares "
                f"metadata.supported_encryption {sorted(declared or ())} without 'curve'"
            )
    else:
        why = _clear_under_auto(declared, transport=transport, ip=ip)
        if why is not None:
            _log.debug("Kernel %r runs in clear under transport_encryption='auto': %s", name, why)
            return {}
    public, secret = new_curve_keypair()
    return {"curve_publickey": public, "curve_secretkey": secret}
