"""Talking to a container engine through its command-line client (``docker`` or ``podman``):
one bounded call, the labels that mark our containers, and the search for stale ones."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..._errors import ProvisionerError
from .._process import process_start_time

__all__ = [
    "ENGINE_ENV",
    "LABEL_DIRECTORY",
    "LABEL_KERNEL",
    "LABEL_OWNER",
    "RUNTIME_PREFIX",
    "EngineResult",
    "engine_env",
    "owner_gone",
    "owner_label",
    "reason_of",
    "remove_stale_containers",
    "run_engine",
]

#: The label holding the kernel's id.
LABEL_KERNEL = "kernel-nursery.kernel-id"
#: The label naming the managing process: ``BOOT_ID:PID_NAMESPACE:PID:START_TIME``, or
#: ``independent``.
LABEL_OWNER = "kernel-nursery.owner"
#: The label naming the container's runtime directory on the managing host.
LABEL_DIRECTORY = "kernel-nursery.runtime-dir"
#: How runtime directories are named (the guardian removes only directories so named).
RUNTIME_PREFIX = "kn-docker-"
#: Environment variables the engine's client reads to find its engine: handed to the guardian
#: with the command, so that it reaches the same engine.
ENGINE_ENV = (
    "PATH",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "CONTAINER_HOST",
    "CONTAINERS_CONF",
    "XDG_RUNTIME_DIR",
)
#: Seconds a quick engine call (inspect, kill, rm, ps) may take before it counts as hung.
ENGINE_CALL_TIME = 30.0


@dataclass(frozen=True)
class EngineResult:
    """What an engine call printed and how it ended."""

    returncode: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        """The engine's reason, for a message: its last line other than a pointer to help."""
        return reason_of(self.stderr) or f"exit status {self.returncode}"


def reason_of(stderr: str) -> str:
    """The last line of a client's error output that is not ``Run 'docker run --help'...``
    (the error's own line comes before it)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Run '", "See '"))]
    return lines[-1] if lines else ""


def engine_env() -> dict[str, str]:
    """The part of this process's environment that says which engine the client talks to."""
    return {name: os.environ[name] for name in ENGINE_ENV if name in os.environ}


async def run_engine(
    command: Sequence[str], *args: str, seconds: float = ENGINE_CALL_TIME
) -> EngineResult:
    """Run ``command + args`` (the engine's client) to its end, at most *seconds*.

    Cancelling it ends the client (it only asked the engine something; what the engine was
    asked to do may still happen, which callers that create containers account for).

    Raises:
        ProvisionerError: the client cannot be run, or did not end within *seconds*.
    """
    argv = [*command, *args]
    try:
        with anyio.fail_after(seconds):
            done = await anyio.run_process(
                argv, check=False, stdin=subprocess.DEVNULL, start_new_session=True
            )
    except TimeoutError:
        raise ProvisionerError(
            f"the container engine did not answer {' '.join(argv[:3])}... within {seconds:g} s"
        ) from None
    except OSError as exc:
        raise ProvisionerError(
            f"cannot run the container engine's client {argv[0]!r}: {exc.strerror or exc}"
        ) from exc
    return EngineResult(
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def _where() -> str:
    """This boot of this machine and this process's pid namespace: where a pid means a
    process (the boot id changes at each boot; a namespace's inode number names it)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "unknown"
    return f"{boot}:{namespace}"


def owner_label() -> str:
    """This process as a container's owner: where it runs (:func:`_where`), its pid and its
    start time (which tell it from a later process with its pid)."""
    pid = os.getpid()
    return f"{_where()}:{pid}:{process_start_time(pid) or 0}"


def owner_gone(label: str) -> bool:
    """Whether the owner a label names has certainly ended: it ran on this boot of this
    machine, in this pid namespace (owners on other machines sharing the engine, or in other
    containers, are never judged), and no process with its pid and start time runs now.
    ``independent`` containers have no owner."""
    try:
        boot, namespace, pid, start = label.split(":")
        pid_number, start_time = int(pid), int(start)
    except ValueError:
        return False
    if f"{boot}:{namespace}" != _where() or "unknown" in (boot, namespace):
        return False
    return process_start_time(pid_number) != start_time


async def remove_stale_containers(command: Sequence[str]) -> list[str]:
    """Remove the containers of kernel-nursery whose owner has ended (see :func:`owner_gone`)
    from the engine *command* talks to, with their runtime directories; return their ids.

    Asks the engine (``ps`` filtered by label, then one ``inspect`` of what it lists, which
    Docker and Podman format alike): there is no event for "the owner of this container is
    gone" to wait for, and the guardian removes the containers of an owner that dies, so only
    its own death leaves any.

    Raises:
        ProvisionerError: the engine cannot be reached.
    """
    listing = await run_engine(
        command, "ps", "-aq", "--no-trunc", "--filter", f"label={LABEL_OWNER}"
    )
    if listing.returncode:
        raise ProvisionerError(f"cannot list containers: {listing.last_line()}")
    ids = listing.stdout.split()
    if not ids:
        return []
    labels = " ".join(
        f'{{{{index .Config.Labels "{name}"}}}}' for name in (LABEL_OWNER, LABEL_DIRECTORY)
    )
    described = await run_engine(command, "inspect", "--format", f"{{{{.Id}}}} {labels}", *ids)
    stale: list[tuple[str, str]] = []
    for line in described.stdout.splitlines():  # those removed meanwhile are not listed
        fields = line.split(" ")
        if len(fields) >= 2 and owner_gone(fields[1]):
            stale.append((fields[0], fields[2] if len(fields) > 2 else ""))
    for cid, directory in stale:  # one by one: Podman refuses all if one went meanwhile
        await run_engine(command, "rm", "-f", cid)
        await anyio.to_thread.run_sync(remove_runtime_dir, directory)
    return [cid for cid, _dir in stale]


# Twin of _scripts/guardian.py _remove_private_directory: the guardian script runs alone and
# cannot import this module, so the same checks stand in both.
def remove_runtime_dir(path: str) -> None:
    """Remove a runtime directory and what it holds: only a private one of ours (named
    :data:`RUNTIME_PREFIX`, mode 0700, this user's), never through a symbolic link."""
    if not path or not os.path.basename(path).startswith(RUNTIME_PREFIX):
        return
    try:
        found = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
        return
    shutil.rmtree(path, ignore_errors=True)
