"""``SlurmProvisioner``: the kernel as a Slurm job, held by a foreground ``srun``."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode

from ..._errors import LaunchError, ProvisionerConfigError, ProvisionerError, ProvisionerInfoError
from ...connection import ConnectionInfo, new_key, validate_connection_info
from .. import _guardian
from .._base import KILL_WAIT_TIME, KernelProvisionerBase, check_kernel_id
from .._command import bad_launch_arguments, format_kernel_cmd
from .._process import UNKNOWN_EXIT_STATUS, process_start_time, spawn_shielded
from ._errors import JobEndedError, JobRejectedError, QueueTimeoutError

__all__ = ["SlurmProvisioner"]

_NODE_SCRIPT = Path(__file__).parents[1] / "_scripts" / "slurm_node.py"
#: Seconds a Slurm command (``scancel``) may take before it is given up (the controller is
#: unreachable): every clean-up path is bounded.
TOOL_TIMEOUT = 10.0
#: Longest line read from ``srun`` at once; longer output is passed on in pieces.
_LINE_LIMIT = 65536
#: Keywords that managers pass along and that are not for ``srun``.
_NOT_FOR_SRUN = frozenset({"extra_arguments", "kernel_id", "kernel_name", "cmd"})

JobState = Literal[
    "NEW",
    "SUBMITTED",
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
]

# What srun and slurmstepd write to srun's standard error, and what it tells us.
_QUEUED = re.compile(rb"srun: job (\d+) queued and waiting for resources")
_ALLOCATED = re.compile(rb"srun: job (\d+) has been allocated resources")
_STEP_WAIT = re.compile(rb"srun: Job (\d+) step creation temporarily disabled")
# srun's word that it withdraws the job it waited for (said before it has asked the controller).
_REVOKED = re.compile(rb"srun: Job allocation (\d+) has been revoked")
_ENDINGS: list[tuple[re.Pattern[bytes], JobState, str]] = [
    (
        re.compile(rb"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO TIME LIMIT"),
        "TIMEOUT",
        "its time limit was reached",
    ),
    (
        re.compile(rb"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ DUE TO PREEMPTION"),
        "PREEMPTED",
        "it was preempted",
    ),
    (re.compile(rb"DUE TO NODE FAILURE|[Nn]ode failure"), "NODE_FAIL", "its node failed"),
    (
        re.compile(rb"oom[-_]kill|OUT_OF_MEMORY|[Oo]ut [Oo]f [Mm]emory"),
        "OUT_OF_MEMORY",
        "it ran out of memory",
    ),
    (
        re.compile(rb"\*\*\* (?:JOB|STEP) \S+ ON \S+ CANCELLED AT \S+ \*\*\*"),
        "CANCELLED",
        "it was cancelled (scancel)",
    ),
]
# A job name Slurm's tools can name: squeue and scancel take comma-separated lists of names,
# and their output is split on white space.
_JOB_NAME = re.compile(r"[^\s,\x00-\x1f\x7f]+")
# A job or step id as Slurm prints it (it reaches scancel and srun --jobid).
_JOB_ID = re.compile(r"[0-9]{1,20}")
_SRUN_ERROR = re.compile(r"^srun: (?:error|fatal): (.*)$")
_TASK_REPORT = re.compile(r"^\S+: tasks? [\d,-]+: ")
# Endings that restart_policy "on-failure" does not restart: doing the same again would burn
# allocation for nothing (time limit, memory) or go against whoever ended it (scancel,
# preemption).
_NOT_RESTARTED_ON_FAILURE: frozenset[str] = frozenset(
    {"TIMEOUT", "CANCELLED", "PREEMPTED", "OUT_OF_MEMORY"}
)


def _is_event(line: bytes, name: str) -> bool:
    """Whether *line* is the node side's status line ``{"event": name, ...}``."""
    try:
        message = json.loads(line)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("event") == name


# The watcher step of a job taken over (load_provisioner_info): says it runs, then waits until
# Slurm ends the job, or its input closes. Closed without the words _LET_GO, the process that
# took the job over has gone (died): the job is its, and is cancelled.
_LET_GO = b"let go\n"
_WATCHER = f"""\
import os, subprocess, sys
print("watching", flush=True)
if sys.stdin.buffer.read() != {_LET_GO!r}:
    try:
        job = os.environ["SLURM_JOB_ID"]
        subprocess.run(["scancel", job], stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        print("kernel-nursery: cannot cancel the job:", exc, file=sys.stderr)
"""


@functools.cache
def _node_source() -> str:
    """The node side's source, read once (it travels on srun's command line)."""
    return _NODE_SCRIPT.read_text()


class _Lines:
    """Lines from a byte stream, safe to cancel between and during reads (nothing is lost)."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self.eof = stream is None

    async def next(self) -> bytes | None:
        """The next line without its newline, or ``None`` at the end of the stream."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0 or len(self._buffer) >= _LINE_LIMIT or (self.eof and self._buffer):
                cut = end if end >= 0 else min(len(self._buffer), _LINE_LIMIT)
                line = bytes(self._buffer[:cut])
                del self._buffer[: cut + 1 if end >= 0 else cut]
                return line
            if self.eof or self._stream is None:
                return None
            try:
                self._buffer += await self._stream.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self.eof = True


class SlurmProvisioner(KernelProvisionerBase):
    """Runs the kernel as a Slurm job: a foreground ``srun`` on this machine holds the job, and
    its exit is the job's end.

    - :meth:`pre_launch` builds the kernel's command (:attr:`kernel_command`, by default the
      spec's ``argv``) and a fresh message-signing key; no port is reserved here, since the
      kernel binds on its node.
    - :meth:`launch_kernel` runs ``srun`` with the configured resources (a job of its own, or a
      step of the allocation this process runs in), hands the node side its launch request on
      ``srun``'s standard input (the key never leaves that pipe), and waits, up to
      :attr:`queue_timeout`, for the one line the node side writes when the kernel runs: its
      node, job id and ports. Queue progress is logged, kept in :attr:`job_state` and
      :attr:`node`, and reported (:meth:`report_progress`, a manager's ``progress`` events)
      with the states ``SUBMITTED``, ``PENDING`` (waiting in the queue; not reported when the
      job starts at once) and ``RUNNING`` (with the node).
    - :meth:`wait` awaits ``srun``'s exit (reading its standard error meanwhile: the kernel's
      output, logged, and Slurm's word on how the job ended, kept in :attr:`end_reason`); it
      never asks the scheduler anything. :meth:`poll` answers at once. The kernel's output
      comes through that pipe, so something must await :meth:`wait` while the kernel runs (a
      manager always does); otherwise a kernel that writes more than a pipe holds (64 KiB)
      blocks until it is read.
    - :meth:`send_signal` and :meth:`terminate` use ``scancel --signal``, :meth:`kill` uses
      ``scancel``.
    - No job outlives its owner: a failed, timed-out or cancelled launch (also while the job is
      pending) and :meth:`cleanup` end ``srun``, which withdraws a pending job and ends a
      running one; if this process dies, ``srun`` is stopped by this process's guardian and, as
      the node side sees its standard input close, the kernel stops too.
    - :attr:`restart_policy` decides whether a job that Slurm ended may be submitted again.

    Transport: the kernel binds :attr:`ip` on its node (loopback by default, which reaches it
    only when the node is this machine). A kernel on another node must bind an address this
    machine can reach, and its messages then cross the cluster network unencrypted, signed
    only; kernel-nursery does not encrypt them yet (CurveZMQ) nor tunnel them: use a network
    you trust, or a tunnel of your own.

    .. versionadded:: 0.1
    """

    partition = Unicode("", config=True, help="The partition (srun --partition); default Slurm's.")
    time_limit = Unicode(
        "",
        config=True,
        help="The job's time limit (srun --time, e.g. '1:00:00' or '30'); default the partition's.",
    )
    cpus = Integer(
        None, allow_none=True, config=True, help="CPUs for the kernel (srun --cpus-per-task)."
    )
    memory = Unicode("", config=True, help="Memory for the kernel (srun --mem, e.g. '4G').")
    gres = Unicode("", config=True, help="Generic resources, e.g. GPUs (srun --gres, 'gpu:1').")
    account = Unicode("", config=True, help="The account charged (srun --account).")
    qos = Unicode("", config=True, help="The quality of service (srun --qos).")
    job_name = Unicode(
        "", config=True, help="The job's name (srun --job-name); default kernel-<kernel id>."
    )
    extra_options = List(
        Unicode(),
        config=True,
        help="More srun options, as separate arguments (e.g. ['--constraint=skylake']). srun "
        "accepts nearly all of sbatch's options.",
    )
    kernel_command = List(
        Unicode(),
        config=True,
        help="The command run on the node; default the kernel spec's argv. '{connection_file}' "
        "is replaced by the connection file written on the node.",
    )
    env = Dict(
        value_trait=Unicode(),
        config=True,
        help="More environment variables for the kernel (srun passes this process's "
        "environment and the kernel spec's env on).",
    )
    cwd = Unicode(
        "", config=True, help="The kernel's working directory on the node (srun --chdir)."
    )
    queue_timeout = Float(
        300.0,
        allow_none=True,
        config=True,
        help="Seconds from submission until the kernel must run on its node (pending in the "
        "queue included); then the job is cancelled and the launch fails with "
        "QueueTimeoutError. None waits as long as the queue takes.",
    )
    slurm_conf = Unicode(
        "",
        config=True,
        help="The slurm.conf the Slurm commands use (SLURM_CONF); default as the environment says.",
    )
    slurm_bin_dir = Unicode(
        "", config=True, help="Where srun and scancel are; default found on PATH."
    )
    python = Unicode(
        sys.executable,
        config=True,
        help="The Python interpreter that runs the small launcher on the node (standard "
        "library only); default this one, which suits a shared software tree.",
    )
    ip = Unicode(
        "127.0.0.1",
        config=True,
        help="The address the kernel binds on its node; empty: the node's own address. The "
        "default, loopback, reaches the kernel only when the node is this machine; beyond it "
        "messages travel unencrypted (see the class's description).",
    )
    use_allocation = Bool(
        True,
        config=True,
        help="Inside a Slurm allocation (SLURM_JOB_ID set), start the kernel as a job step of "
        "it rather than as a job of its own.",
    )
    restart_policy = Enum(
        ["on-failure", "always", "never"],
        default_value="on-failure",
        config=True,
        help="Whether a kernel whose job ended without being asked may be restarted (a new "
        "job, a new wait in the queue): 'on-failure' (the default) when the kernel crashed or "
        "its node failed, but not when Slurm ended the job for its time limit or memory, "
        "preemption or an outside scancel, which would happen again or undo someone's "
        "decision; 'always'; 'never'. Restarts asked for (restart_kernel) always happen.",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._process: anyio.abc.Process | None = None
        self._stderr = _Lines(None)
        self._wait_lock = anyio.Lock()
        self._launching = False
        self._last_status: int | None = None
        self._guard_token: int | None = None
        self._requested_stop = False
        self._adopted = False  # watching a job launched by another process (a watcher step)
        self._releasing = False  # handing the job over (release): srun's end is not the job's
        self._revoked = anyio.Event()  # srun said its pending job was withdrawn
        self._stdout = _Lines(None)  # the node side's status lines
        #: The job id (a string, as Slurm prints it), once known.
        self.job_id: str | None = None
        #: The step id within the job (``"0"`` for a job of its own).
        self.step_id: str | None = None
        #: Whether the kernel is a step of an allocation this process runs in, rather than a
        #: job of its own.
        self.in_allocation = False
        #: The node the kernel runs on, once it runs.
        self.node: str | None = None
        #: Where the job stands, as far as this provisioner has seen.
        self.job_state: JobState = "NEW"
        #: How the last job ended, in words, when Slurm ended it (time limit, scancel...).
        self.end_reason: str | None = None
        self._ended: JobState | None = None  # the state Slurm reported at the end, if it did
        self._tail: list[str] = []  # the last lines of srun's standard error

    # ------------------------------------------------------------------ state

    @property
    def has_process(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        """The local ``srun``'s process id, or ``None``."""
        return None if self._process is None else self._process.pid

    async def poll(self) -> int | None:
        """``None`` while the job runs; ``srun``'s exit status once it has ended (the kernel's
        exit status, 128 + N for a kernel killed by signal N); ``0`` when none was launched.
        Never waits, never asks Slurm."""
        if self._process is None:
            return self._last_status if self._last_status is not None else 0
        status = self._process.returncode
        if status is not None:
            status = UNKNOWN_EXIT_STATUS if self._adopted or self._releasing else status
            self._last_status = status
        return status

    async def wait(self) -> int | None:
        """Wait for the job to end and return its status (as :meth:`poll`).

        Reads ``srun``'s standard error meanwhile: the kernel's output is logged, Slurm's
        messages tell how the job ended (:attr:`end_reason`, :attr:`job_state`). Several tasks
        may wait; cancelling one affects only it, and leaves the job running.
        """
        process, lines = self._process, self._stderr  # this job's: a restart replaces them
        if process is None:
            return await self.poll()
        async with self._wait_lock:
            while (line := await lines.next()) is not None:
                self._on_stderr(line)
            status = await process.wait()
            if self._adopted or self._releasing:
                status = UNKNOWN_EXIT_STATUS
        if self._process is process:
            self._last_status = status
            self._finish(status)
        return status

    # ------------------------------------------------------------------ signals

    async def send_signal(self, signum: int) -> None:
        """Send *signum* to every process of the kernel's job step, through ``scancel
        --signal`` (``SIGKILL`` cancels the job). Nothing happens when no job runs."""
        if signum == signal.SIGKILL:
            await self.kill()
            return
        if signum in (signal.SIGTERM, signal.SIGHUP):
            self._requested_stop = True
        if self._process is None or self._process.returncode is not None:
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        if not await self._scancel(f"--signal={name}", step=True):
            # No job id yet (still pending), or the controller did not answer: srun itself
            # passes SIGTERM on, or withdraws a job still in the queue.
            if signum == signal.SIGTERM:
                self._signal_srun(signal.SIGTERM)

    async def terminate(self, restart: bool = False) -> None:
        """``scancel --signal=TERM``: the kernel may catch it and clean up."""
        self._requested_stop = True
        await self.send_signal(signal.SIGTERM)

    async def kill(self, restart: bool = False) -> None:
        """``scancel`` the job (the step, inside an allocation): Slurm ends every process of it.
        If Slurm cannot be reached, ``srun`` is told to end the job itself (SIGTERM)."""
        self._requested_stop = True
        if self._process is None or self._process.returncode is not None:
            return
        if not await self._scancel():
            self._signal_srun(signal.SIGTERM)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """The kernel was asked to exit: its job's end is expected, not a failure."""
        self._requested_stop = True

    # ------------------------------------------------------------------ launch

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Build the kernel's command and environment and make the message-signing key.

        After a job that ended without being asked to (an automatic restart), applies
        :attr:`restart_policy`.

        Raises:
            ProvisionerError: there is no kernel spec.
            InvalidKernelIdError: the kernel id is not one Slurm's tools can name its job by,
                nor a file name on the node (it holds a ``/``, a comma, white space...).
            ProvisionerConfigError: :attr:`job_name` holds white space, a comma or a control
                character, which Slurm's tools (``squeue --name``, ``scancel --name``, their
                output) cannot tell apart.
            JobEndedError: :attr:`restart_policy` does not allow submitting the kernel again
                after the way its last job ended.
        """
        spec = self.kernel_spec
        if spec is None:
            raise ProvisionerError("SlurmProvisioner needs a kernel_spec to launch a kernel")
        if not self.kernel_id:
            self.kernel_id = str(uuid.uuid4())
        check_kernel_id(self.kernel_id)  # it names the job and the connection file on the node
        if self.job_name and not _JOB_NAME.fullmatch(self.job_name):
            raise ProvisionerConfigError(
                f"SlurmProvisioner.job_name {self.job_name!r:.80} cannot be used: Slurm's tools "
                "cannot name a job whose name holds white space, a comma or a control character"
            )
        self._check_restart()
        kwargs = dict(kwargs)
        extra_arguments = list(kwargs.pop("extra_arguments", None) or ())
        argv = list(self.kernel_command) or list(spec.argv)
        cmd = format_kernel_cmd(
            argv,
            substitutions={"resource_dir": spec.resource_dir, "prefix": sys.prefix},
            extra_arguments=extra_arguments,
        )
        if not self.connection_info:
            self.connection_info = {"key": new_key(), "signature_scheme": "hmac-sha256"}
        result = await super().pre_launch(cmd=cmd, **kwargs)
        result["env"].update(self.env)
        return result

    def _check_restart(self) -> None:
        ended, reason = self._ended, self.end_reason
        if self.job_state == "NEW" or self._requested_stop:
            return
        policy = self.restart_policy
        if policy == "always":
            return
        if policy == "never" or (ended is not None and ended in _NOT_RESTARTED_ON_FAILURE):
            raise JobEndedError(
                f"kernel {self.kernel_id}: job {self.job_id} ended because "
                f"{reason or 'the kernel exited'}; not submitted again "
                f"(SlurmProvisioner.restart_policy={policy!r})",
                job_id=self.job_id,
                state=ended or "FAILED",
            )

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        """Submit the kernel with ``srun`` and return its connection info once it runs.

        Waits through the queue, up to :attr:`queue_timeout`. If this raises, or is cancelled
        (also while the job is pending), the job is withdrawn or ended and ``srun`` reaped
        before it returns: nothing is left in the queue.

        Raises:
            LaunchError: ``srun`` cannot be run (Slurm is not installed, not on PATH), an
                argument of the kernel command, an environment variable or the working
                directory holds what no OS takes (a NUL byte, '=' in a name), or the node side
                failed before the kernel ran (the message has its last words).
            JobRejectedError: Slurm refused the job (unknown partition or account, a resource
                request no node can satisfy...): the message is Slurm's.
            QueueTimeoutError: the job did not start within :attr:`queue_timeout`.
            ProvisionerError: this provisioner already runs a kernel.
        """
        if self._launching or (self._process is not None and self._process.returncode is None):
            raise ProvisionerError(
                f"kernel {self.kernel_id} is still running; stop it before launching again"
            )
        if self._process is not None:
            await self._reap()  # the previous job's srun (a restart)
        self._launching = True
        try:
            return await self._launch(cmd, kwargs)
        finally:
            self._launching = False

    async def _launch(self, cmd: list[str], kwargs: dict[str, Any]) -> ConnectionInfo:
        env, cwd = self._checked_launch(cmd, kwargs)
        argv = await self._srun_argv(env, cwd)
        info = self.connection_info
        request = {
            "argv": list(cmd),
            "key": info.get("key", ""),
            "signature_scheme": info.get("signature_scheme", "hmac-sha256"),
            "ip": self.ip,
            "kernel_id": self.kernel_id,
            "kernel_name": self.kernel_spec.name if self.kernel_spec else "",
        }
        self.job_id = self.step_id = self.node = self.end_reason = None
        self._ended = None
        self._releasing = False
        self._revoked = anyio.Event()
        self._tail = []
        self._requested_stop = False
        process = await _spawn_srun(argv, env)
        self._process = process
        self._adopted = False
        self._stderr = _Lines(process.stderr)
        try:
            await _guardian.register_off_loop(self._guard)
            await self._start_job(process, request)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):  # bounded: _abort is
                await self._abort()
                if isinstance(exc, anyio.BrokenResourceError | anyio.ClosedResourceError):
                    raise self._failure(argv) from None
            raise
        return validate_connection_info(self.connection_info)

    def _checked_launch(
        self, cmd: list[str], kwargs: dict[str, Any]
    ) -> tuple[dict[str, str], str | None]:
        """The environment and working directory for ``srun``, from ``launch_kernel``'s
        keywords (others are logged and ignored), with *cmd* checked at run time too (callers
        are not all type-checked).

        Raises:
            LaunchError: *cmd* is not a non-empty list of strings, or it, the environment or
                the working directory holds what no OS takes (the message names it).
        """
        command: object = cmd
        if (
            not isinstance(command, list | tuple)
            or not command
            or not all(isinstance(a, str) for a in command)
        ):
            raise LaunchError(
                f"the kernel command must be a non-empty list of strings, got {command!r:.200}",
                argv=[str(a) for a in command] if isinstance(command, list | tuple) else [],
            )
        options = {k: v for k, v in kwargs.items() if k not in _NOT_FOR_SRUN}
        env: dict[str, str] = dict(options.pop("env", None) or os.environ)
        cwd = options.pop("cwd", None) or self.cwd or None
        if options:
            self.log.debug("SlurmProvisioner ignores launch options %s", sorted(options))
        problem = bad_launch_arguments(list(command), env, cwd)
        if problem is not None:  # else a bare ValueError from the spawn
            raise LaunchError(f"cannot submit kernel {self.kernel_id}: {problem}", argv=list(cmd))
        return env, cwd

    async def _srun_argv(self, env: dict[str, str], cwd: str | None) -> list[str]:
        """The ``srun`` command that runs the node side, for a job of its own or (with
        :attr:`use_allocation`, inside one) a step of this process's allocation; *env*, srun's
        environment, is made to match (the allocation's variables, :attr:`slurm_conf`).

        Raises:
            LaunchError: srun is not found, or :attr:`slurm_conf` is not a file.
        """
        srun = self._tool("srun")
        step = self.use_allocation and bool(env.get("SLURM_JOB_ID"))
        self.in_allocation = step
        if not step:
            for name in ("SLURM_JOB_ID", "SLURM_JOBID"):
                env.pop(name, None)
        if self.slurm_conf:
            if not await anyio.Path(self.slurm_conf).is_file():
                raise LaunchError(
                    f"cannot submit kernel {self.kernel_id}: SlurmProvisioner.slurm_conf "
                    f"{self.slurm_conf!r} is not a file",
                    argv=[srun],
                )
            env["SLURM_CONF"] = self.slurm_conf
        options = self._srun_options(step=step, cwd=cwd)
        source = await anyio.to_thread.run_sync(_node_source)  # read once, then cached
        # -I -S: isolated from the user's Python settings, and no site packages, whose
        # start-up would only delay the kernel (the node side is standard library only).
        return [srun, *options, "--", self.python, "-I", "-S", "-c", source]

    async def _start_job(self, process: anyio.abc.Process, request: dict[str, Any]) -> None:
        """Send the node side its *request*, await the kernel's start through the queue, and
        take its connection info, job, step and node from the node side's report. The caller
        ends srun if this fails or is cancelled."""
        # Reports run a callback of the owner's, which may raise anything: inside.
        self._set_state("SUBMITTED")
        assert process.stdin is not None
        await process.stdin.send(json.dumps(request).encode() + b"\n")
        status = await self._await_running(process)
        connection = dict(status.get("connection") or {})
        connection["key"] = request["key"]
        connection["signature_scheme"] = request["signature_scheme"]
        self.connection_info = dict(validate_connection_info(connection))
        if status.get("job_id"):
            self.job_id = str(status["job_id"])
        self.step_id = str(status.get("step_id") or "0")
        self.node = str(status.get("node") or "") or None
        self._set_state("RUNNING")

    async def _await_running(self, process: anyio.abc.Process) -> dict[str, Any]:
        """Read srun's output until the node side reports the kernel running.

        Raises:
            QueueTimeoutError: not within :attr:`queue_timeout`.
            JobRejectedError, LaunchError: srun ended first.
        """
        self._stdout = stdout = _Lines(process.stdout)
        status: dict[str, Any] | None = None
        with anyio.move_on_after(
            self.queue_timeout if self.queue_timeout is not None else float("inf")
        ) as timeout:
            async with anyio.create_task_group() as tg:

                async def follow_stderr() -> None:
                    while (line := await self._stderr.next()) is not None:
                        self._on_stderr(line)

                tg.start_soon(follow_stderr)
                while (line := await stdout.next()) is not None:
                    try:
                        message = json.loads(line)
                    except ValueError:
                        self.log.info(
                            "kernel %s: %s", self.kernel_id, line.decode(errors="replace")
                        )
                        continue
                    if isinstance(message, dict) and message.get("event") == "running":
                        status = message
                        break
                tg.cancel_scope.cancel()
        if timeout.cancelled_caught:
            where = f"job {self.job_id}" if self.job_id else "the job"
            raise QueueTimeoutError(
                f"kernel {self.kernel_id}: {where} did not start within "
                f"{self.queue_timeout:g} s (SlurmProvisioner.queue_timeout); it was cancelled",
                job_id=self.job_id,
            )
        if status is None:
            raise anyio.BrokenResourceError  # srun ended first: _failure says why
        return status

    def _srun_options(self, *, step: bool, cwd: str | None) -> list[str]:
        options = [f"--job-name={self.job_name or f'kernel-{self.kernel_id}'}"]
        options += ["--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1"]
        more: list[tuple[str, str | None]] = []
        if not step:  # what a step cannot choose: its allocation's
            more += [
                ("--partition", self.partition),
                ("--time", self.time_limit),
                ("--account", self.account),
                ("--qos", self.qos),
            ]
        if self.cpus is not None:
            options.append(f"--cpus-per-task={self.cpus}")
        more += [("--mem", self.memory), ("--gres", self.gres), ("--chdir", cwd)]
        for flag, value in more:
            if value:
                options.append(f"{flag}={value}")
        return options + list(self.extra_options)

    def _tool(self, name: str) -> str:
        if self.slurm_bin_dir:
            path: str | None = str(Path(self.slurm_bin_dir) / name)
            if not os.access(str(path), os.X_OK):
                path = None
        else:
            path = shutil.which(name)
        if path is None:
            where = self.slurm_bin_dir or "PATH"
            raise LaunchError(
                f"cannot submit kernel {self.kernel_id}: Slurm's {name} is not in {where} "
                "(install Slurm's client commands, or set SlurmProvisioner.slurm_bin_dir)",
                argv=[name],
            )
        return path

    def _failure(self, argv: list[str]) -> ProvisionerError:
        """The error for an srun that ended before the kernel ran, from its last words."""
        # srun's own errors, but not its reports on the task (the job did run, then).
        errors = [
            m.group(1)
            for m in map(_SRUN_ERROR.match, self._tail)
            if m and not _TASK_REPORT.match(m.group(1))
        ]
        status = self._last_status
        if errors:
            message = "; ".join(dict.fromkeys(errors))
            return JobRejectedError(
                f"Slurm refused kernel {self.kernel_id}: {message}", job_id=self.job_id
            )
        ours = [line for line in self._tail if line.startswith("kernel-nursery: ")]
        tail = ours[-1].removeprefix("kernel-nursery: ") if ours else None
        tail = tail or " | ".join(self._tail[-3:]) or "no output"
        return LaunchError(
            f"kernel {self.kernel_id}: srun exited with status {status} before the kernel "
            f"ran: {tail}",
            argv=argv[:-1],
        )

    # ------------------------------------------------------------------ srun's messages

    def _on_stderr(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip()
        self._tail = [*self._tail[-19:], text]
        if self._queue_notice(line):
            return
        if _REVOKED.search(line):
            self._revoked.set()
        if not line.startswith((b"srun:", b"slurmstepd")):
            self.log.info("kernel %s: %s", self.kernel_id, text)  # the kernel's own output
            return
        for pattern, state, words in _ENDINGS:
            if pattern.search(line):
                if self._ended is None or state != "CANCELLED":
                    self._ended, self.end_reason = state, words
                break
        self.log.info("Kernel %s: %s", self.kernel_id, text)

    def _queue_notice(self, line: bytes) -> bool:
        """Whether *line* is srun's notice on the job's way through the queue, taken in.

        Only before the job runs, and only for this job once its id is known: the running
        kernel's own output comes through the same stream, and a nested ``srun`` of its (the
        user's) writes the same notices about other jobs; taken in, they would rename the job
        (``scancel`` would then name another) and take it back to ``PENDING``.
        """
        if self.job_state not in ("SUBMITTED", "PENDING"):
            return False
        for pattern in (_QUEUED, _ALLOCATED, _STEP_WAIT):
            if m := pattern.search(line):
                job_id = m.group(1).decode()
                if self.job_id is not None and job_id != self.job_id:
                    return False
                self.job_id = job_id
                if pattern is _ALLOCATED:
                    self.log.info("Kernel %s: job %s has been allocated", self.kernel_id, job_id)
                else:
                    self._set_state("PENDING")
                return True
        return False

    def _set_state(self, state: JobState) -> None:
        """Record where the job stands; the stages of a launch (``SUBMITTED``, ``PENDING``,
        ``RUNNING``) are logged and reported as progress (a manager's ``progress`` events)."""
        if state == self.job_state:
            return
        self.job_state = state
        if state not in ("SUBMITTED", "PENDING", "RUNNING"):
            self.log.debug("Kernel %s: job %s is %s", self.kernel_id, self.job_id, state)
            return
        job = f"job {self.job_id}" if self.job_id else "the job"
        if state == "SUBMITTED":
            detail = "submitted to Slurm (srun)"
        elif state == "PENDING":
            detail = f"{job} is pending in the queue"
        else:
            detail = f"{job} is running on node {self.node}"
        level = logging.DEBUG if state == "SUBMITTED" else logging.INFO
        self.log.log(level, "Kernel %s: %s", self.kernel_id, detail)
        self.report_progress(state, node=self.node if state == "RUNNING" else None, detail=detail)

    def _finish(self, status: int) -> None:
        """srun has exited with *status*: record how the job ended."""
        if self._releasing:
            return  # the job runs on, someone else's
        if self.job_state not in ("SUBMITTED", "PENDING", "RUNNING"):
            return  # recorded already
        if self._ended == "CANCELLED" and self._requested_stop:
            self._ended = self.end_reason = None  # our own scancel
        if self._ended is not None:
            self._set_state(self._ended)
            self.log.warning(
                "Kernel %s: job %s ended because %s", self.kernel_id, self.job_id, self.end_reason
            )
        elif self.job_state != "RUNNING" or self._requested_stop:
            self._set_state("CANCELLED" if status else "COMPLETED")
        else:
            self._set_state("COMPLETED" if status == 0 else "FAILED")

    # ------------------------------------------------------------------ stopping

    async def _scancel(
        self, *options: str, by_name: bool = False, step: bool = False, quiet: bool = False
    ) -> bool:
        """``scancel [options] JOB[.STEP]``; whether it was sent (a job id is known and
        scancel succeeded). With *step*, the kernel's step only, once known (a signal must not
        reach another process's watcher step, see :meth:`load_provisioner_info`). With
        *by_name* and no job id, the job is named by its default name instead, which holds the
        kernel id (a name configured by the user may be shared by other jobs: never used so).
        With *quiet*, a refusal (the job has ended already) is logged at debug level only.
        Bounded by :data:`TOOL_TIMEOUT`."""
        if self.job_id is None:
            if not (by_name and not self.job_name and not self.in_allocation):
                return False
            target = f"--name=kernel-{self.kernel_id}"
            options = (*options, f"--user={os.getuid()}")
        elif step and self.step_id is not None:
            target = f"{self.job_id}.{self.step_id}"
        elif self.in_allocation:
            if self.step_id is None:
                return False  # not running yet: srun withdraws it
            target = f"{self.job_id}.{self.step_id}"
        else:
            target = self.job_id
        try:
            scancel = self._tool("scancel")
        except LaunchError as exc:
            self.log.warning("%s", exc)
            return False
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        with anyio.move_on_after(TOOL_TIMEOUT):
            try:
                result = await anyio.run_process(
                    [scancel, *options, target], env=env, check=False, stdin=subprocess.DEVNULL
                )
            except OSError as exc:
                self.log.warning("Cannot run %s: %s", scancel, exc)
                return False
            if result.returncode == 0:
                return True
            self.log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "scancel %s failed: %s",
                target,
                result.stderr.decode(errors="replace").strip(),
            )
            return False
        self.log.warning("scancel %s did not answer within %g s", target, TOOL_TIMEOUT)
        return False

    def _signal_srun(self, signum: int) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    async def _abort(self) -> None:
        """A launch failed or was cancelled: end srun (which withdraws a pending job or ends a
        running one), escalating, and reap it. Shielded by the caller, bounded."""
        process = self._process
        if process is None:
            return
        self._requested_stop = True
        self._signal_srun(signal.SIGTERM)
        async with anyio.create_task_group() as tg:

            async def escalate() -> None:
                with anyio.move_on_after(KILL_WAIT_TIME):
                    # srun, told to withdraw a pending job, says so, and then now and then
                    # lingers for good (seen with Slurm 22.05), whether or not it has asked the
                    # controller yet. scancel makes sure (it returns once the controller has
                    # ended the job; one already ended is no error here), then srun goes.
                    await self._revoked.wait()
                    # srun's exit must not cut it short; scancel is bounded (TOOL_TIMEOUT).
                    with anyio.CancelScope(shield=True):
                        await self._scancel(by_name=True, quiet=True)
                    self._signal_srun(signal.SIGKILL)
                    return
                # srun did not end the job: Slurm does it (a job srun had not yet named is
                # found by its name), then srun goes.
                await self._scancel(by_name=True)
                self._signal_srun(signal.SIGKILL)

            tg.start_soon(escalate)
            with anyio.move_on_after(2 * KILL_WAIT_TIME):
                await self.wait()
            tg.cancel_scope.cancel()
        await self._reap()

    async def cleanup(self, restart: bool = False) -> None:
        """Make sure the job is gone, then reap ``srun``. Shielded and bounded: a job still
        running is cancelled (``scancel``; if that fails, ``srun`` is told to end it). With
        *restart* the key is kept for the next launch."""
        with anyio.CancelScope(shield=True):  # bounded: scancel, then each wait, are
            process = self._process
            if process is not None and process.returncode is None:
                await self.kill(restart)
                with anyio.move_on_after(KILL_WAIT_TIME):
                    await self.wait()
                if process.returncode is None:
                    self._signal_srun(signal.SIGKILL)
                    with anyio.move_on_after(KILL_WAIT_TIME):
                        await process.wait()
            await self._reap()
            if not restart:
                self.connection_info = {}

    async def _reap(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            self.log.error("Kernel %s: srun (pid %s) did not exit", self.kernel_id, process.pid)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
        else:
            self._last_status = process.returncode
            # The process's aclose, not only its streams': on asyncio that closes the pipes
            # themselves, which srun's helper child can hold open for seconds after srun's exit
            # (a pipe left to the garbage collector warns). srun has exited: nothing waits.
            await process.aclose()
        self._process = None
        self._stderr = self._stdout = _Lines(None)
        self._unguard()

    # ------------------------------------------------------------------ persistence

    async def get_provisioner_info(self) -> dict[str, Any]:
        """The base info plus the job's ``job_id``, ``step_id``, ``node``, ``job_state`` and
        ``slurm_conf``. Plain JSON data."""
        info = await super().get_provisioner_info()
        info.update(
            {
                "job_id": self.job_id,
                "step_id": self.step_id,
                "node": self.node,
                "job_state": self.job_state,
                "in_allocation": self.in_allocation,
                "slurm_conf": self.slurm_conf or None,
            }
        )
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """Take over the kernel job described by *provisioner_info*, from another process:
        afterwards :meth:`poll`, :meth:`wait`, :meth:`send_signal`, :meth:`kill` and
        :meth:`cleanup` act on that job.

        The job's end is awaited through a watcher of this process's own: a second job step
        (``srun --jobid=JOB --overlap``) that does nothing until Slurm ends it with the job. Its
        exit status is the job's, which only its own ``srun`` learns, so :meth:`poll` and
        :meth:`wait` report :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`.

        This process then owns the job too: :meth:`cleanup` ends it, and so does this
        process's death (even SIGKILL): the watcher step sees its input close without a word
        and cancels the job from the node (``scancel``). A job not handed over
        (:meth:`release`) also still ends when the process that launched it stops it or dies.

        Raises:
            ProvisionerError: this provisioner already runs a kernel.
            ProvisionerInfoError: the saved job or step id is not one (digits), or the kernel
                is a step of an allocation (its end cannot be told from the allocation's);
                nothing is taken over.
            InvalidKernelIdError: the saved kernel id is not one (see :meth:`pre_launch`).
            LaunchError: ``srun`` cannot be run.
            JobEndedError: the job is no longer running (the watcher could not join it).
        """
        if self._process is not None or self._launching:
            raise ProvisionerError("this provisioner already manages a kernel job")
        job_id = _checked_job(provisioner_info)
        await super().load_provisioner_info(provisioner_info)
        if provisioner_info.get("slurm_conf"):
            self.slurm_conf = str(provisioner_info["slurm_conf"])
        if not job_id:
            return
        self.job_id, self.step_id = job_id, "0"
        self.node = provisioner_info.get("node")
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        argv = [
            self._tool("srun"),
            f"--jobid={self.job_id}",
            "--overlap",
            "--nodes=1",
            "--ntasks=1",
            "--job-name=kernel-watcher",
            "--",
            self.python,
            "-I",
            "-S",
            "-c",
            _WATCHER,
        ]
        process = await _spawn_srun(argv, env)
        self._process = process
        self._adopted = True
        self._releasing = False
        self._stderr = _Lines(process.stderr)
        self._requested_stop = False
        await self._join(process)

    async def _join(self, process: anyio.abc.Process) -> None:
        """Await the watcher step's word that it runs in the job. Failing or cancelled, it
        lets go of the job (shielded, bounded) before the error propagates.

        Raises:
            JobEndedError: the watcher could not join: the job has ended.
        """
        try:
            self._set_state("RUNNING")  # reported: the owner's callback may raise anything
            joined = await _Lines(process.stdout).next() == b"watching"
        except BaseException:
            with anyio.CancelScope(shield=True):  # bounded: _let_go is
                await self._let_go()
            raise
        if not joined:  # it could not join: the job has ended
            with anyio.CancelScope(shield=True):  # bounded: _let_go is
                await self._let_go()
            raise JobEndedError(
                f"kernel {self.kernel_id}: job {self.job_id} is not running: "
                f"{' | '.join(self._tail[-2:]) or 'srun exited'}",
                job_id=self.job_id,
                state="COMPLETED",
            )

    async def _let_go(self) -> None:
        """Stop watching an adopted job, leaving the job alone: the watcher step ends when its
        input closes after the words that say so. Shielded by the caller, bounded."""
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            try:
                await process.stdin.send(_LET_GO)  # a few bytes into an empty pipe: buffered
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the watcher has gone already
            await process.stdin.aclose()
        with anyio.move_on_after(KILL_WAIT_TIME):
            await self.wait()
        if process.returncode is None:
            self._signal_srun(signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT_TIME):
                await process.wait()
        await self._reap()

    async def release(self) -> dict[str, Any]:
        """Hand the running kernel job over: let go of it so that it outlives this
        provisioner and this process, and return what another process needs to take it over
        with :meth:`load_provisioner_info` (:meth:`get_provisioner_info`).

        The node side is told first, and answers: from then on it ends the job itself
        (``scancel`` on the node) when the kernel exits, since no ``srun`` of this side holds
        the job any more. Then this side's ``srun`` is killed (``SIGKILL``, which leaves its
        job running; ``SIGTERM`` would end it) and reaped, and the guardian forgets it.
        Afterwards this provisioner manages no kernel (:attr:`has_process` is false, a task in
        :meth:`wait` returns :data:`~kernel_nursery.provisioning.UNKNOWN_EXIT_STATUS`), and
        the job runs until its new owner (or anyone, ``scancel``) stops it, the kernel exits,
        or its time limit. On a cluster with ``InactiveLimit`` set, Slurm also ends it that
        many seconds after its ``srun`` went.

        Not for a provisioner a :class:`~kernel_nursery.KernelManager` runs: its supervisor
        would take the kernel for dead and start another. Use it where the provisioner is
        driven directly.

        Shielded and bounded (:data:`TOOL_TIMEOUT`): a cancelled caller still finds the job
        either handed over or, if the node side did not answer, still held here.

        Raises:
            ProvisionerError: no job of this provisioner's own is running (none was launched,
                it is still pending, it ended, it was itself taken over from another process,
                or it is a step of an allocation, whose end cannot be told from the
                allocation's); or the node side did not acknowledge (the job is then still
                held here).

        .. versionadded:: 0.1
        """
        process = self._process
        if (
            process is None
            or process.returncode is not None
            or process.stdin is None
            or self._launching
            or self._adopted
            or self.in_allocation
            or self.job_state != "RUNNING"
        ):
            raise ProvisionerError(
                f"kernel {self.kernel_id}: no running job of this provisioner's own to hand "
                "over (none runs, or it is being launched or handed over; a job taken over "
                "from another process or a step of an allocation cannot be)"
            )
        info = await self.get_provisioner_info()
        self._launching = True  # one hand-over at a time, and no launch meanwhile
        try:
            await self._hand_over(process)
        finally:
            self._launching = False
        self.log.info("Kernel %s: job %s handed over", self.kernel_id, self.job_id)
        return info

    async def _hand_over(self, process: anyio.abc.Process) -> None:
        """:meth:`release`'s work: the node side's word, then srun's end. Shielded."""
        assert process.stdin is not None
        acknowledged = False
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(TOOL_TIMEOUT):
                try:
                    await process.stdin.send(json.dumps({"detach": True}).encode() + b"\n")
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # srun has gone: the job with it
                else:
                    while (line := await self._stdout.next()) is not None:
                        if _is_event(line, "detached"):
                            acknowledged = True
                            break
            if not acknowledged:
                raise ProvisionerError(
                    f"kernel {self.kernel_id}: job {self.job_id} could not be handed over: "
                    "its node side did not answer (the job has ended, or is still held here)"
                )
            self._releasing = True
            self._requested_stop = True  # its end here was asked for: no restart_policy case
            self._signal_srun(signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT_TIME):
                await process.wait()
            await self._reap()
            self._last_status = UNKNOWN_EXIT_STATUS
            self.connection_info = {}

    # ------------------------------------------------------------------ the guardian

    def _guard(self) -> None:
        """If this process dies, its guardian stops srun (SIGTERM: srun ends the job). Run
        through :func:`~kernel_nursery.provisioning._guardian.register_off_loop` (the first
        registration spawns the guardian)."""
        process = self._process
        if process is None or not _guardian.SUPPORTED:
            return
        self._guard_token = _guardian.register(
            process.pid,
            pgid=process.pid,
            start_time=process_start_time(process.pid),
            connection_file=None,
            log=self.log,
        )

    def _unguard(self) -> None:
        token, self._guard_token = self._guard_token, None
        if token is not None:
            _guardian.unregister(token, log=self.log)


def _checked_job(info: dict[str, Any]) -> str | None:
    """The job id of take-over *info*, checked with its step id: digits (they reach srun's
    command line), and a job of its own (step ``0``), not a step of an allocation, whose end
    cannot be told from the allocation's.

    Raises:
        InvalidKernelIdError: the info's kernel id is not one.
        ProvisionerInfoError: the job or step id is not one, or it is a step of an allocation.
    """
    job_id, step_id = info.get("job_id"), info.get("step_id")
    kernel_id = check_kernel_id(info.get("kernel_id"))
    for name, value in (("job_id", job_id), ("step_id", step_id)):
        if value is not None and not (isinstance(value, str) and _JOB_ID.fullmatch(value)):
            raise ProvisionerInfoError(
                f"kernel {kernel_id}: the saved {name} {value!r:.40} is not a Slurm job id"
            )
    if job_id and (info.get("in_allocation") or step_id not in (None, "0")):
        raise ProvisionerInfoError(
            f"kernel {kernel_id} is step {step_id} of allocation {job_id}; only a "
            "kernel that is a job of its own can be taken over"
        )
    return job_id


async def _spawn_srun(argv: list[str], env: dict[str, str]) -> anyio.abc.Process:
    """Run *argv* (``srun ... -c SOURCE``) in a session of its own, its standard streams
    piped to us; shielded (see :func:`spawn_shielded`).

    Raises:
        LaunchError: srun cannot be run.
    """
    return await spawn_shielded(
        argv,
        program=f"srun ({argv[0]})",
        shown=argv[:-1],  # not the source of the script
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
