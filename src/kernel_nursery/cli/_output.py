"""Where the commands' text goes.

Standard output carries only what a command promises (the code's output for ``run``, the
connection file's path for ``start``, a listing). Everything else goes to standard error: the
command's messages, the kernel's own output (relayed through a pipe, see :func:`kernel_output`),
and, on a terminal, a progress line that is wiped before anything else is written there.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TextIO, cast

import anyio

from .._taskgroup import OwnedTaskGroup
from ..messaging import Message

__all__ = [
    "EXIT_CLOSED_PIPE",
    "CoordinatedStderr",
    "alongside",
    "close_stdout",
    "install_stderr",
    "kernel_output",
    "print_output",
    "progress",
    "say",
    "stdout_closed",
    "until_stdout_closes",
    "write",
]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_WIPE = "\r\x1b[2K"
#: How long the relay of the kernel's output may take to copy what the kernel left in the pipe
#: once the kernel is gone (a grandchild that escaped the kernel's group may hold it open).
_DRAIN_TIME = 2.0


class CoordinatedStderr:
    """``sys.stderr`` while a command runs: every write first wipes the progress line, if one
    is shown, so that the line never shares a line with other text.

    Installed by :func:`install_stderr` before logging is set up, so that log records, warnings
    and the relayed kernel output all come through here.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._status_shown = False
        self._line_open = False
        self._broken = False

    def write(self, text: str) -> int:
        if self._broken:
            return len(text)
        try:
            if self._status_shown:
                self.stream.write(_WIPE)
                self._status_shown = False
            if text:
                self._line_open = not text.endswith("\n")
            written = self.stream.write(text)
            self.stream.flush()
        except OSError:
            # Nobody reads standard error any more: what the command had to say is lost, and
            # that must not stop it from shutting its kernel down.
            self._broken = True
            return len(text)
        return written

    def show_status(self, text: str) -> None:
        """Draw the progress line, unless some text has left a line unfinished."""
        if self._line_open:
            return
        self.write(f"{_WIPE}{text}")
        self._line_open = False
        self._status_shown = True

    def clear_status(self) -> None:
        if self._status_shown:
            self.write("")
            self._line_open = False

    def flush(self) -> None:
        if not self._broken:
            try:
                self.stream.flush()
            except OSError:
                self._broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def install_stderr() -> Callable[[], None]:
    """Make ``sys.stderr`` a :class:`CoordinatedStderr`; return what puts the old one back."""
    previous = sys.stderr
    # With standard error closed (2>&-), Python has None there, and print(file=None) would
    # write to standard output: send it all to /dev/null instead.
    stream = previous if previous is not None else open(os.devnull, "w")
    sys.stderr = cast(TextIO, CoordinatedStderr(stream))

    def restore() -> None:
        sys.stderr = previous

    return restore


def _stderr() -> CoordinatedStderr | None:
    err = sys.stderr
    return err if isinstance(err, CoordinatedStderr) else None


def say(text: str) -> None:
    """A message of the command's own: one line on standard error."""
    print(text, file=sys.stderr, flush=True)


@asynccontextmanager
async def alongside(fn: Callable[[], Coroutine[Any, Any, None]]) -> AsyncIterator[None]:
    """Run *fn* in a task while the block runs; cancel it when the block ends. An exception
    raised in the block propagates as itself, never wrapped in an ExceptionGroup."""
    group = OwnedTaskGroup()
    tg = await group.open(lambda: tg.cancel_scope.cancel())
    tg.start_soon(fn)
    try:
        yield
    finally:
        await group.close()


@asynccontextmanager
async def progress(message: str) -> AsyncIterator[None]:
    """A turning progress line on standard error while the block runs, only when standard
    error is a terminal; other text written there meanwhile wipes it first. Nothing is shown
    when standard error is piped."""
    err = _stderr()
    if err is None or not err.stream.isatty():
        yield
        return
    frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    async def spin() -> None:
        for i in range(sys.maxsize):
            err.show_status(f"{frames[i % len(frames)]} {message}…")
            await anyio.sleep(0.1)  # an animation's frame rate, not a poll

    try:
        async with alongside(spin):
            yield
    finally:
        err.clear_status()


def print_output(msg: Message) -> None:
    """Print a kernel's output message as it arrives: streams to their stream, the text of
    results to standard output, errors with their traceback to standard error. Colour codes
    are kept on a terminal and removed when the output is piped."""
    content = msg.content
    if msg.msg_type == "stream":
        stream = sys.stderr if content.get("name") == "stderr" else sys.stdout
        write(stream, str(content.get("text", "")))
    elif msg.msg_type in ("execute_result", "display_data"):
        text = content.get("data", {}).get("text/plain")
        if text is not None:
            write(sys.stdout, f"{text}\n")
    elif msg.msg_type == "error":
        traceback = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        write(sys.stderr, "\n".join(str(line) for line in traceback) + "\n")


def write(stream: TextIO, text: str) -> None:
    """Write and flush *text*; colour codes only on a terminal. When standard output's reader
    has gone (``... | head -1``), the blocks in :func:`until_stdout_closes` are cancelled and
    nothing more is written there."""
    if stream is sys.stdout and _stdout.closed:
        return
    if not stream.isatty():
        text = _ANSI.sub("", text)  # colours are for terminals
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        if stream is not sys.stdout:
            raise
        _stdout.close()


#: The exit status when standard output's reader went away, as a shell reports a program
#: SIGPIPE ended (128 + 13).
EXIT_CLOSED_PIPE = 141


class _Stdout:
    """Whether standard output's reader has gone, and the blocks that end when it does."""

    def __init__(self) -> None:
        self.closed = False
        self.scopes: list[anyio.CancelScope] = []

    def close(self) -> None:
        self.closed = True
        close_stdout()
        for scope in self.scopes:
            scope.cancel()


def close_stdout() -> None:
    """What Python's documentation advises once standard output's reader has gone: point the
    descriptor at /dev/null, so that the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


_stdout = _Stdout()


@contextmanager
def until_stdout_closes() -> Iterator[None]:
    """Cancel the block when standard output's reader goes away; the command then ends
    quietly (its kernel shut down by the block's cleanup) with :data:`EXIT_CLOSED_PIPE`."""
    scope = anyio.CancelScope()
    _stdout.scopes.append(scope)
    try:
        with scope:
            yield
    finally:
        _stdout.scopes.remove(scope)


def stdout_closed() -> bool:
    return _stdout.closed


@asynccontextmanager
async def kernel_output(destination: str) -> AsyncIterator[dict[str, Any]]:
    """Where the kernel's own standard output and error go; yields the launch keywords
    (``stdout``/``stderr``) for :meth:`KernelManager.start_kernel`, valid for restarts too.

    *destination* is ``"stderr"`` (relayed, line by line, to this command's standard error
    through a pipe, so it never lands on standard output and never shares a line with the
    progress line), ``"null"`` (discarded) or a file path (appended to; created with mode
    0600, as it may show what the kernel computes).

    Use it around the kernel manager's block: on the way out, once the kernel is gone, what it
    left in the pipe is still copied (for at most a couple of seconds, shielded), and the pipe
    or file is closed.

    Raises:
        OSError: the file cannot be opened.
    """
    if destination == "null":
        yield {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    elif destination == "stderr" and sys.platform != "win32":
        async with _relay_to_stderr() as fd:
            yield {"stdout": fd, "stderr": fd}
    elif destination == "stderr":
        yield {"stdout": sys.__stderr__, "stderr": sys.__stderr__}
    else:
        fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            yield {"stdout": fd, "stderr": fd}
        finally:
            os.close(fd)


@asynccontextmanager
async def _relay_to_stderr() -> AsyncIterator[int]:
    """A pipe whose write end (yielded) the kernel writes to; a task copies what comes out of
    it to ``sys.stderr`` (so through :class:`CoordinatedStderr`)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    done = anyio.Event()
    # The relay only copies what is written; it is cancelled after a bounded drain below.
    relay_scope = anyio.CancelScope(shield=True)

    async def relay() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Shielded so that it keeps copying while the kernel shuts down after a cancellation
        # (the kernel must never block on a full pipe); ended by EOF or by relay_scope.cancel().
        with relay_scope:
            try:
                while True:
                    await anyio.wait_readable(read_fd)
                    try:
                        data = os.read(read_fd, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        break
                    if not _stdout.closed:  # the user stopped reading: keep it quiet
                        sys.stderr.write(decoder.decode(data))
            finally:
                done.set()

    try:
        async with alongside(relay):
            try:
                yield write_fd
            finally:
                os.close(write_fd)
                write_fd = -1
                with anyio.move_on_after(_DRAIN_TIME, shield=True):
                    await done.wait()
                relay_scope.cancel()
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
