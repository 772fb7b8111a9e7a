"""The container provisioner's configuration, checked, and the ``run`` command it becomes."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..._errors import ProvisionerConfigError
from .._command import bad_launch_arguments
from .._limits import Limits
from ._engine import LABEL_DIRECTORY, LABEL_KERNEL, LABEL_OWNER

__all__ = ["NETWORKS", "ContainerConfig", "Mount", "check_config"]

#: The network modes: the host's (the kernel binds loopback), none (ipc sockets in the
#: bind-mounted runtime directory), or the engine's bridge with the ports published on
#: 127.0.0.1 only.
NETWORKS = ("host", "none", "published")
_MOUNT_MODES = ("ro", "rw")
# What a user (name, uid, name:group) may look like; no white space, no option.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
# A reference to an image (name[:tag][@digest], with a registry): no white space, no option.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container."""

    source: str
    target: str
    read_only: bool

    def argument(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True, kw_only=True)
class ContainerConfig:
    """A provisioner's settings once checked: what ``run`` gets."""

    command: list[str]
    image: str
    mounts: list[Mount]
    env: dict[str, str]
    workdir: str
    user: str
    limits: Limits
    network: str
    init: bool
    engine_args: list[str]

    def run_argv(
        self,
        *,
        cid_file: str,
        kernel_id: str,
        owner: str,
        directory: str,
        ports: Sequence[int],
        env_names: Sequence[str],
    ) -> list[str]:
        """``COMMAND run -d ...`` for the kernel (its command is appended by the caller).
        Environment values are not on the command line: ``-e NAME`` takes each from the
        client's environment, which the caller sets."""
        argv = [*self.command, "run", "-d", "--cidfile", cid_file]
        argv += ["--label", f"{LABEL_KERNEL}={kernel_id}", "--label", f"{LABEL_OWNER}={owner}"]
        argv += ["--label", f"{LABEL_DIRECTORY}={directory}"]
        # The runtime directory at the same path inside: the connection file and ipc sockets
        # have one name on both sides.
        argv += ["-v", f"{directory}:{directory}:rw"]
        for mount in self.mounts:
            argv += ["-v", mount.argument()]
        if self.network == "published":
            for port in ports:
                argv += ["-p", f"127.0.0.1:{port}:{port}"]
        else:
            argv += ["--network", self.network]
        for name in env_names:
            argv += ["-e", name]
        if self.workdir:
            argv += ["--workdir", self.workdir]
        if self.user:
            argv += ["--user", self.user]
        argv += self._limit_args()
        if self.init:
            argv.append("--init")
        return [*argv, *self.engine_args, self.image]

    def _limit_args(self) -> list[str]:
        """The engine's options for the limits: cgroup limits for memory (swap included: no
        extra room), pids and cpus, rlimits (``--ulimit``) for the others."""
        limits = self.limits
        args: list[str] = []
        if limits.memory is not None:
            args += ["--memory", str(limits.memory), "--memory-swap", str(limits.memory)]
        if limits.pids is not None:
            args += ["--pids-limit", str(limits.pids)]
        if limits.cpus is not None:
            args += ["--cpus", f"{limits.cpus:g}"]
        if limits.cpu_time is not None:
            # The soft limit sends SIGXCPU, which tells the limit apart; the hard one, a
            # second later, SIGKILL (as the sandbox sets it).
            args += ["--ulimit", f"cpu={limits.cpu_time}:{limits.cpu_time + 1}"]
        for name, value in (("fsize", limits.file_size), ("nofile", limits.open_files)):
            if value is not None:
                args += ["--ulimit", f"{name}={value}:{value}"]
        return args


def _mount(text: object) -> Mount:
    if not isinstance(text, str):
        raise ProvisionerConfigError(f"mounts: {text!r:.60} is not a 'SOURCE:TARGET[:ro|rw]'")
    parts = text.split(":")
    if len(parts) == 2:
        parts.append("rw")
    if len(parts) != 3 or parts[2] not in _MOUNT_MODES:
        raise ProvisionerConfigError(
            f"mounts: {text!r:.60} is not 'SOURCE:TARGET[:ro|rw]' (paths without ':')"
        )
    source, target, mode = parts
    for path in (source, target):
        if not os.path.isabs(path) or "," in path or bad_launch_arguments([path], None, None):
            raise ProvisionerConfigError(f"mounts: {path!r:.60} is not an absolute path")
    if not os.path.exists(source):
        raise ProvisionerConfigError(f"mounts: the source {source!r:.60} does not exist here")
    return Mount(source, target, mode == "ro")


def check_config(
    *,
    command: str,
    command_args: Sequence[str],
    image: str,
    mounts: Sequence[object],
    env: Mapping[str, str],
    workdir: str,
    user: str,
    limits: Limits,
    network: str,
    init: bool,
    engine_args: Sequence[str],
) -> ContainerConfig:
    """Check every setting before anything starts.

    Raises:
        ProvisionerConfigError: a setting is missing or holds what it cannot (one line naming
            it): no image, an image or user that looks like an option, a mount that is not
            ``SOURCE:TARGET[:ro|rw]`` with absolute paths and an existing source, a relative
            working directory, a bad environment variable. (The limits come checked, by
            :func:`~kernel_nursery.provisioning._limits.parse_limits`.)
    """
    if not command:
        raise ProvisionerConfigError("command must name the engine's client, docker or podman")
    if not image:
        raise ProvisionerConfigError("image is required: the container image to run the kernel")
    if not _IMAGE.fullmatch(image):
        raise ProvisionerConfigError(f"image {image!r:.60} is not an image reference")
    if network not in NETWORKS:
        raise ProvisionerConfigError(f"network must be one of {', '.join(NETWORKS)}")
    if workdir and not workdir.startswith("/"):
        raise ProvisionerConfigError(f"workdir {workdir!r:.60} must be an absolute path")
    if user and not _USER.fullmatch(user):
        raise ProvisionerConfigError(f"user {user!r:.60} is not a user name or id[:group]")
    problem = bad_launch_arguments([*command_args, *engine_args, workdir], env, None)
    if problem is not None:
        raise ProvisionerConfigError(f"the container's settings: {problem}")
    return ContainerConfig(
        command=[command, *command_args],
        image=image,
        mounts=[_mount(m) for m in mounts],
        env=dict(env),
        workdir=workdir,
        user=user,
        limits=limits,
        network=network,
        init=init,
        engine_args=list(engine_args),
    )
