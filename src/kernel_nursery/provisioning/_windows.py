"""Interrupting a kernel on Windows, where there is no SIGINT to send to another process.

Jupyter kernels on Windows watch an inheritable event handle named by ``JPY_INTERRUPT_EVENT`` and
interrupt themselves when it is set; ``JPY_PARENT_PID`` lets them exit when their parent does.
This path follows that convention. It is type-checked but **not tested here** (kernel-nursery's
CI runs on Linux only).
"""

from __future__ import annotations

import sys

__all__ = ["create_interrupt_event", "send_interrupt"]

if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    class _SecurityAttributes(ctypes.Structure):
        _fields_ = [  # ctypes reads this class attribute
            ("nLength", wintypes.DWORD),
            ("lpSecurityDescriptor", wintypes.LPVOID),
            ("bInheritHandle", wintypes.BOOL),
        ]

    def create_interrupt_event() -> int:
        """A new inheritable, auto-reset event handle for the kernel to watch."""
        attributes = _SecurityAttributes()
        attributes.nLength = ctypes.sizeof(attributes)
        attributes.lpSecurityDescriptor = 0
        attributes.bInheritHandle = 1
        handle = ctypes.windll.kernel32.CreateEventA(ctypes.byref(attributes), False, False, b"")
        if not handle:
            raise ctypes.WinError()
        return int(handle)

    def send_interrupt(event: int) -> None:
        """Set the event, which the kernel takes as an interrupt."""
        if not ctypes.windll.kernel32.SetEvent(event):
            raise ctypes.WinError()

else:

    def create_interrupt_event() -> int:
        raise NotImplementedError("interrupt events exist on Windows only")

    def send_interrupt(event: int) -> None:
        raise NotImplementedError("interrupt events exist on Windows only")
