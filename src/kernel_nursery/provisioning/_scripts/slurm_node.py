"""The node side of a Slurm kernel: the job's task, which starts the kernel on the compute node.

:class:`~kernel_nursery.provisioning.SlurmProvisioner` runs this file's source as
``python -I -S -c <source>`` through ``srun``, so nothing of kernel-nursery needs to be installed
where the job runs (only a Python 3 interpreter). It is never imported by the package. Standard
library only, and few modules of it: everything this script does before the kernel starts
delays the kernel (``-S`` skips the site packages' start-up, which nothing here needs).

The conversation, over the ``srun`` step's standard streams (nothing is written to a shared file
system, nothing polls):

1. standard input, first line: a JSON object from the submitting side, with the kernel's
   ``argv`` (``{connection_file}`` still in it), the message-signing ``key`` and
   ``signature_scheme``, the ``ip`` to bind (empty: the node's own address), ``kernel_id`` and
   ``kernel_name``. The key travels on this pipe only: never on a command line, in the job's
   environment or on a shared disk.
2. this script picks five free ports on the node, writes the connection file (mode 0600) in a
   private directory of the node's temporary directory (``TMPDIR``, else ``/tmp``), and starts
   the kernel as its child at once (the kernel's standard output goes to standard error:
   standard output is for status only);
3. standard output, one line, right after the kernel's start: ``{"event": "running", ...}``
   with the node, the job and step ids, and the connection info less the key, which the
   submitting side already has; nothing else is done or waited for before it;
4. it then watches standard input: end of file means the submitting side has gone (``srun``
   closes the task's input when its own ends), and the kernel is stopped (SIGTERM, SIGKILL after
   a grace period). Slurm's own signals (``scancel --signal``) reach the kernel directly, as
   every process of the step; this script passes SIGTERM on too and ignores SIGINT (the
   interrupt is the kernel's);
5. a line ``{"detach": true}`` on standard input (the submitting side hands the job over, see
   ``SlurmProvisioner.release``) is answered with ``{"event": "detached"}`` on standard output;
   from then on standard input is not watched (its ``srun`` is about to be killed, and the job
   belongs to whoever takes it over), and when the kernel exits this script cancels its own
   job (``scancel``), since no ``srun`` is left to end it: Slurm keeps an allocation whose
   ``srun`` died until its time limit;
6. when the kernel exits, the connection file and its directory are removed and this script
   exits with the kernel's status (128 + N for a kernel killed by signal N, as a shell does).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading

#: Seconds the kernel gets between SIGTERM and SIGKILL once the submitting side has gone.
GRACE = 5.0
_PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def _node_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _free_ports(ip: str, count: int) -> list[int]:
    """*count* distinct ports free on *ip* now (the sockets are held until all are found)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((ip, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _stop(kernel: subprocess.Popen[bytes], directory: str) -> None:
    """The submitting side has gone: end the kernel, politely first. Its connection file goes
    first (Slurm may kill this script before the kernel ends)."""
    _remove(directory)
    try:
        kernel.terminate()
        kernel.wait(GRACE)
    except subprocess.TimeoutExpired:
        kernel.kill()
    except OSError:
        pass


def main() -> int:
    setup = json.loads(sys.stdin.buffer.readline() or b"null")
    if not isinstance(setup, dict):
        print("kernel-nursery: no launch request on standard input", file=sys.stderr)
        return 2
    ip = setup.get("ip") or _node_address()
    try:
        ports = _free_ports(ip, len(_PORT_NAMES))
    except OSError as exc:
        node = socket.gethostname()
        print(f"kernel-nursery: cannot listen on {ip} on {node}: {exc}", file=sys.stderr)
        return 1
    info: dict[str, object] = dict(zip(_PORT_NAMES, ports, strict=True))
    info.update(
        ip=ip,
        transport="tcp",
        key=setup["key"],
        signature_scheme=setup["signature_scheme"],
        kernel_name=setup.get("kernel_name", ""),
    )
    detached = threading.Event()  # the job was handed over (a "detach" request came)
    directory, path = _write_connection_file(info, setup["kernel_id"])
    try:
        argv = [arg.replace("{connection_file}", path) for arg in setup["argv"]]
        signal.signal(signal.SIGINT, lambda *_: None)  # a handler, not SIG_IGN: not inherited
        try:
            kernel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
        except OSError as exc:
            node = socket.gethostname()
            print(f"kernel-nursery: cannot start the kernel on {node}: {exc}", file=sys.stderr)
            return 127

        def on_term(signum: int, frame: object) -> None:
            # Slurm may follow with SIGKILL (after KillWait) before the ``finally`` below
            # runs: the key goes now. The kernel read its connection file when it started.
            _remove(directory)
            kernel.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        _report_running(kernel, info)
        watcher = threading.Thread(
            target=_watch_input, args=(kernel, directory, detached), daemon=True
        )
        watcher.start()
        while True:
            try:
                code = kernel.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue
    finally:
        _remove(directory)
    if detached.is_set():
        _cancel_own_job()
    return 128 - code if code < 0 else code


def _write_connection_file(info: dict[str, object], kernel_id: object) -> tuple[str, str]:
    """Write the kernel's connection file (mode 0600) in a new private directory (mode 0700);
    return both paths."""
    directory = _private_directory()
    # The submitting side checks the id; a stray separator still never leaves the directory.
    safe_id = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(kernel_id))
    path = os.path.join(directory, f"kernel-{safe_id}.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    return directory, path


def _private_directory() -> str:
    """A new directory (mode 0700) in the node's temporary directory: ``TMPDIR`` (which Slurm
    sites often set per job), ``TEMP`` or ``TMP``, else ``/tmp``. Not :mod:`tempfile`, whose
    import (with :mod:`shutil`'s) would delay the kernel's start."""
    environ = os.environ
    # A fresh name made with os.urandom, mode 0700, never an existing directory: safe in /tmp.
    base = environ.get("TMPDIR") or environ.get("TEMP") or environ.get("TMP") or "/tmp"  # noqa: S108
    for _ in range(100):
        path = os.path.join(base, f"kernel-nursery-{os.urandom(8).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no new directory in {base}")


def _remove(directory: str) -> None:
    """Remove *directory* and the files in it (the connection file, and whatever the kernel
    may have put beside it); never raises."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        os.rmdir(directory)
    except OSError:
        pass


def _report_running(kernel: subprocess.Popen[bytes], info: dict[str, object]) -> None:
    """Tell the submitting side (one line on standard output) that the kernel runs: where,
    in which job and step, and its connection info without the key (which it has)."""
    public = {k: v for k, v in info.items() if k != "key"}
    status = {
        "event": "running",
        "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "step_id": os.environ.get("SLURM_STEP_ID"),
        "pid": kernel.pid,
        "connection": public,
    }
    sys.stdout.write(json.dumps(status) + "\n")
    sys.stdout.flush()


def _watch_input(
    kernel: subprocess.Popen[bytes], directory: str, detached: threading.Event
) -> None:
    """In a thread: read the submitting side's requests until its input closes, then stop
    the kernel (srun has gone), unless a "detach" request came first (the job was handed
    over: it is answered, and the input is no longer ours to watch)."""
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        if isinstance(request, dict) and request.get("detach") is True:
            detached.set()
            sys.stdout.write(json.dumps({"event": "detached"}) + "\n")
            sys.stdout.flush()
            return
    _stop(kernel, directory)


def _cancel_own_job() -> None:
    """End this job: the kernel has exited and the job was handed over, so no ``srun`` of the
    submitting side is left to end it. Bounded; a failure is said on standard error."""
    import shutil  # here, not above: only after the kernel has run, never before its start

    job = os.environ.get("SLURM_JOB_ID")
    scancel = shutil.which("scancel")
    if not job or scancel is None:
        print("kernel-nursery: cannot cancel the job: no scancel or job id", file=sys.stderr)
        return
    try:
        subprocess.run([scancel, job], timeout=30, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"kernel-nursery: cannot cancel job {job}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.stdout.flush()
    os._exit(main())  # not sys.exit: the input watcher may still be reading
