"""Running a command on a pseudo-terminal, as a user in a shell would: the terminal is the
command's controlling terminal, so typing Ctrl-C (``\\x03``) there sends SIGINT to it, and its
standard streams are that terminal."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

_TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """A command on its own pseudo-terminal; :attr:`output` is everything it has written."""

    def __init__(self, *args: str) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:  # a container without /dev/pts
            pytest.skip(f"no pseudo-terminal here: {exc}")
        self._master = master
        self.output = ""
        self._eof = False
        try:
            # In a new session (start_new_session), the command first takes the terminal as
            # its controlling terminal, then becomes kernel-nursery (same process).
            self.process = subprocess.Popen(
                [sys.executable, "-c", _TAKE_TERMINAL, "-m", "kernel_nursery", *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)

    def _read(self, deadline: float) -> None:
        """Read what the command wrote (or learn that it closed the terminal), until *deadline*."""
        ready, _, _ = select.select([self._master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            data = b""
        if not data:
            self._eof = True
        self.output += data.decode(errors="replace")

    def expect(self, text: str, timeout: float = 60) -> None:
        """Wait until *text* has been written (after what was already seen, or anywhere)."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self._eof or time.monotonic() >= deadline:
                raise AssertionError(f"{text!r} never came; the terminal shows:\n{self.output}")
            self._read(deadline)

    def echoes(self) -> bool:
        """Whether the terminal echoes what is typed (a program reading a password turns
        that off, and must turn it back on)."""
        import termios

        return bool(termios.tcgetattr(self._master)[3] & termios.ECHO)

    def type(self, data: bytes) -> None:
        """Type *data* on the terminal (``b"\\x03"`` is Ctrl-C)."""
        os.write(self._master, data)

    def wait(self, timeout: float = 60) -> int:
        """Read until the command closes the terminal; its exit status."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._read(deadline)
        return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Kill the command if it still runs (a failed test), and release the terminal."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)
