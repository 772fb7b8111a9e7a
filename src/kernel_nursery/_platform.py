"""Which of the operating system's facilities the library uses, decided once, here.

Linux gives the library two things other platforms lack: pidfds (``os.pidfd_open``: a handle on
one process, not on a number that can be reused, readable when that process exits) and
``/proc`` (a process's group, start time and command line; the ephemeral port range). Every
path that needs them asks :data:`LINUX` and, where it is false, takes the fallback that macOS and
other platforms get: no guardian process, no taking over of kernels started elsewhere, a
process group signalled rather than awaited member by member.

A testing aid: the environment variable ``KERNEL_NURSERY_PORTABLE=1``, read when this module is
first imported, makes :data:`LINUX` false on Linux too, so that a test run (``nox -s
portable``) goes through those fallbacks. It is not meant for production use.
"""

from __future__ import annotations

import os
import sys

__all__ = ["LINUX", "PORTABLE_VARIABLE"]

#: The environment variable that hides the Linux-only facilities (a testing aid).
PORTABLE_VARIABLE = "KERNEL_NURSERY_PORTABLE"

#: Whether the Linux-only facilities (pidfds, ``/proc``) are used.
LINUX = (
    sys.platform.startswith("linux")
    and hasattr(os, "pidfd_open")
    and os.environ.get(PORTABLE_VARIABLE, "") in ("", "0")
)
