"""``input()`` and ``getpass()`` in the code ``run`` runs, answered from the terminal."""

from __future__ import annotations

import os
import sys

import anyio

from ..messaging import StdinHandler

__all__ = ["terminal_stdin"]

#: What the kernel is sent when the person types Ctrl-D (end of input) at a prompt: the
#: protocol has no end-of-file, and this is the character that would have meant it.
_EOF = "\x04"


def terminal_stdin() -> StdinHandler | None:
    """The stdin handler of ``run``: the terminal, when standard input is one; otherwise none,
    so the kernel is told that stdin is not allowed (the code's ``input()`` raises there)."""
    if sys.platform == "win32":
        return None  # the terminal is read as a POSIX one (termios, a readable descriptor)
    try:
        if not sys.stdin.isatty():
            return None
    except (AttributeError, ValueError):  # standard input closed (0<&-) or detached
        return None
    return _from_terminal


async def _from_terminal(prompt: str, password: bool) -> str:
    """Show *prompt* on standard error (standard output carries only the code's output) and
    read one line from the terminal, without echoing it for a password.

    Waits for the terminal to be readable, so the wait can be cancelled (the kernel was
    interrupted while it waited for input) with no thread left reading; the terminal's echo
    is put back however the wait ends.
    """
    import termios  # POSIX only: terminal_stdin gives this handler nowhere else

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if password else None
    try:
        if saved is not None:
            # Echo off before the prompt shows, so nothing typed after it is ever echoed;
            # TCSANOW, so nothing typed ahead is thrown away.
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        sys.stdout.flush()
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = b""
        while not line.endswith(b"\n"):
            await anyio.wait_readable(fd)
            # The terminal is in canonical mode: a read returns what the person typed up to
            # and including Enter (or what was typed before Ctrl-D; nothing at all is the end).
            chunk = os.read(fd, 4096)
            if not chunk:
                if not line:
                    return _EOF
                break
            line += chunk
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
            sys.stderr.write("\n")  # the person's Enter was not echoed
            sys.stderr.flush()
    return line.decode(errors="replace").removesuffix("\n")
