"""Calling a provisioner's hooks from the code that drives it: each call with a deadline.

Provisioners are plug-ins, and a plug-in's hook may hang, raise, or return what it must not.
Whoever stops a kernel (a kernel manager,
:func:`~kernel_nursery.provisioning.shutdown_kernel_process`) calls each hook through
:func:`call_hook`: the call is abandoned when its budget runs out, a failure is logged as an
error naming the provisioner's class and the hook, and the caller goes on with what it can do
itself (:func:`kill_group`). The compat bridge bounds its calls into
jupyter_client's provisioners the same way.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
from collections.abc import Callable
from typing import Any, Final

import anyio

from .._errors import ProvisionerHookError
from ._process import wait_for_group_exit

#: A provisioner (a KernelProvisionerBase, which imports this module: typed loosely here).
KernelProvisionerBase = Any

__all__ = ["FAILED", "call_hook", "hook_failed", "is_status", "kill_group", "sync_hook"]


class _Failed:
    """What :func:`call_hook` returns for a call that failed (and was logged)."""

    def __repr__(self) -> str:
        return "FAILED"


#: Returned by :func:`call_hook` when the hook raised, returned garbage or ran out of time.
FAILED: Final = _Failed()

#: Raised by a hook, these are not the hook's failure but the program's wish (or the caller's
#: own cancellation): they propagate, and the callers' ``finally`` clauses still clean up.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def is_status(value: object) -> bool:
    """Whether *value* can be an exit status (an int, not a bool) or ``None`` (running)."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


def hook_failed(
    provisioner: KernelProvisionerBase,
    hook: str,
    what: str,
    *,
    log: logging.Logger | logging.LoggerAdapter[Any],
    errors: list[ProvisionerHookError] | None,
    cause: BaseException | None = None,
) -> _Failed:
    """Log a hook's failure (it *what*) as an error naming the provisioner's class and the
    hook, and note it in *errors*; :data:`FAILED`."""
    name = f"{type(provisioner).__name__}.{hook}()"
    log.error(
        "Kernel %s: %s %s; going on without it", provisioner.kernel_id, name, what, exc_info=cause
    )
    if errors is not None:
        error = ProvisionerHookError(
            f"kernel {provisioner.kernel_id}: {name} {what}",
            provisioner=type(provisioner).__name__,
            hook=hook,
        )
        error.__cause__ = cause
        errors.append(error)
    return FAILED


async def call_hook(
    provisioner: KernelProvisionerBase,
    hook: str,
    seconds: float,
    *args: Any,
    errors: list[ProvisionerHookError] | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    check: Callable[[object], bool] | None = None,
    quiet_timeout: bool = False,
    **kwargs: Any,
) -> Any:
    """``await provisioner.<hook>(*args, **kwargs)`` for at most *seconds*.

    Returns what the hook returned, or :data:`FAILED` when it raised (any exception, even a
    :class:`BaseException` of its own, but not ``KeyboardInterrupt``, ``SystemExit`` or a
    cancellation from outside, which propagate), returned a value *check* refuses, or did not
    return within *seconds* (then it is cancelled and abandoned). Each failure is logged as an
    error on *log* (default: the provisioner's) naming the class and the hook, and appended to
    *errors* as a :class:`ProvisionerHookError`; a timeout with *quiet_timeout* (a ``wait()``
    that timed out because the kernel still runs is no failure) is neither.

    A hook that shields itself from cancellation cannot be abandoned: no one can bound it.
    """
    log = provisioner.log if log is None else log
    with anyio.move_on_after(seconds) as scope:
        try:
            result = getattr(provisioner, hook)(*args, **kwargs)
            if not inspect.isawaitable(result):
                what = f"returned {type(result).__name__}, not an awaitable (not async?)"
                return hook_failed(provisioner, hook, what, log=log, errors=errors)
            result = await result
        except anyio.get_cancelled_exc_class():
            raise
        except _PASS_THROUGH:
            raise
        except BaseException as exc:
            what = f"raised {type(exc).__name__}: {exc}"
            return hook_failed(provisioner, hook, what, log=log, errors=errors, cause=exc)
        if check is not None and not check(result):
            what = f"returned {result!r}, which it must not"
            return hook_failed(provisioner, hook, what, log=log, errors=errors)
        return result
    if scope.cancelled_caught and not quiet_timeout:
        what = f"did not return within {seconds:.3g} s and was abandoned"
        return hook_failed(provisioner, hook, what, log=log, errors=errors)
    return FAILED


def sync_hook(
    provisioner: KernelProvisionerBase,
    hook: str,
    fallback: float,
    *,
    errors: list[ProvisionerHookError] | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> float:
    """``provisioner.<hook>()`` for one of the plain hooks that answer a number of seconds
    (``get_shutdown_wait_time``, ``get_stable_start_time``); *fallback* when it raises or
    answers something else than a finite number of seconds, which is logged as
    :func:`call_hook` does. (A plain function that hangs blocks the loop: nothing bounds it.)"""
    log = provisioner.log if log is None else log
    try:
        value = getattr(provisioner, hook)()
    except _PASS_THROUGH:
        raise
    except BaseException as exc:
        what = f"raised {type(exc).__name__}: {exc}"
        hook_failed(provisioner, hook, what, log=log, errors=errors, cause=exc)
        return fallback
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        hook_failed(provisioner, hook, f"returned {value!r}, not seconds", log=log, errors=errors)
        return fallback
    return float(value)


async def kill_group(provisioner: KernelProvisionerBase, seconds: float) -> None:
    """SIGKILL to the kernel's process group, when the provisioner exposes one (a ``pgid``
    attribute, as :class:`~kernel_nursery.LocalProvisioner` has until its cleanup), and wait up
    to *seconds* for its members to exit: what the kernel's owner can still do itself when the
    provisioner's own hooks failed. Never raises; nothing happens where there is no group."""
    try:
        pgid = getattr(provisioner, "pgid", None)
    except Exception:
        return
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        return
    if not hasattr(os, "killpg") or pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return  # already empty, or not a group this process may (or should) touch
    provisioner.log.warning(
        "Kernel %s: killed its process group %d (SIGKILL) itself", provisioner.kernel_id, pgid
    )
    with anyio.move_on_after(seconds):
        await wait_for_group_exit(pgid)
