"""Tests for kernel_nursery._limits: running out of descriptors, and raising the limit."""

from __future__ import annotations

import errno
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import kernel_nursery
from kernel_nursery import KernelManager, ResourceLimitError, _limits, raise_open_file_limit

from .helpers.kernels import SpecFactory
from .helpers.procs import is_running

MANY_KERNELS = str(Path(__file__).parent / "helpers" / "many_kernels.py")

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts descriptors in /proc/self/fd"
)


async def run_many(backend: str, *, limit: int, count: int, ready_timeout: float) -> dict[str, Any]:
    """Run many_kernels.py in a process of its own; its report."""
    done = await anyio.run_process(
        [sys.executable, MANY_KERNELS, backend, str(limit), str(count), str(ready_timeout)],
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@linux_only
@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_out_of_descriptors_is_a_fast_typed_error(
    anyio_backend: str, jupyter_dirs: dict[str, Path]
) -> None:
    """Under a 128 soft limit, starts beyond what fits fail fast with ResourceLimitError,
    leaving nothing, and the kernels that started still answer."""
    report = await run_many(anyio_backend, limit=128, count=60, ready_timeout=60)
    failures, pids = report["failures"], report["pids"]
    assert failures, "all 60 kernels fit: the test no longer tests running out"
    assert len(pids) >= 10
    assert {f["type"] for f in failures} == {"ResourceLimitError"}
    assert all("ulimit -n" in f["message"] for f in failures)
    assert max(f["seconds"] for f in failures) < 30  # ready_timeout is 60
    assert report["connection_files"] == len(pids)  # none left by the failed starts
    assert report["answered"] == 5
    assert report["fds_after"] - report["fds_before"] < 16  # no kernel's descriptors remain
    assert not any(is_running(pid) for pid in pids)
    assert not list(jupyter_dirs["runtime"].glob("kernel-*.json"))


@linux_only
@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_forty_kernels_fit_under_256_open_files(anyio_backend: str) -> None:
    """A kernel costs its manager few descriptors: 40 start at once under a 256 soft limit
    (at five sockets per manager, about 20 did)."""
    report = await run_many(anyio_backend, limit=256, count=40, ready_timeout=60)
    assert report["failures"] == []
    assert len(report["pids"]) == 40
    assert (report["fds_running"] - report["fds_before"]) / 40 <= 4


def test_raise_open_file_limit_reports_what_it_did() -> None:
    """raise_open_file_limit lifts the soft limit to the hard one and says from what."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        old, new = raise_open_file_limit()
        assert old == lowered
        assert new == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert new == hard or hard == resource.RLIM_INFINITY
        assert raise_open_file_limit() == (new, new)  # nothing more to raise
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_resource_limit_error_is_an_os_error() -> None:
    """ResourceLimitError is a KernelNurseryError and an OSError carrying its errno."""
    exc = ResourceLimitError("out", limit="open files", errno=24)
    assert isinstance(exc, kernel_nursery.KernelNurseryError)
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.limit, str(exc)) == (24, "open files", "out")


@pytest.mark.anyio
async def test_manager_channels_open_again_on_demand(fake_spec: SpecFactory) -> None:
    """Once its kernel is ready a manager keeps only control open: shell opens again when
    asked for, and a shutdown is still asked for politely on control."""
    async with KernelManager(kernel_spec=fake_spec(), shutdown_wait_time=10) as km:
        await km.start_kernel()
        await km.wait_for_ready(timeout=30)  # on shell, opened again for it
        await km.wait_for_ready(timeout=30)  # and kept open
        async with km.events() as events:
            await km.shutdown_kernel()
            event = await events.receive()
    assert (event.kind, event.exit_status) == ("shutdown", 0)  # it exited on the request


def test_limit_errors_are_found_through_causes_and_groups() -> None:
    """EMFILE, ENFILE or ENOMEM anywhere in an error's causes, contexts or group members
    becomes a ResourceLimitError naming the limit and what to do; anything else is left alone."""
    emfile = OSError(errno.EMFILE, "Too many open files")
    try:
        try:
            raise emfile
        except OSError as exc:
            raise RuntimeError("spawn failed") from exc
    except RuntimeError as wrapped:
        error = _limits.limit_error(BaseExceptionGroup("starts", [wrapped]), "start")
    assert error is not None and error.limit == "open files" and error.errno == errno.EMFILE
    assert "open files" in str(error) and "\n" not in str(error)
    enfile = _limits.limit_error(OSError(errno.ENFILE, "table full"), "start")
    assert enfile is not None and "fs.file-max" in str(enfile)
    enomem = _limits.limit_error(OSError(errno.ENOMEM, "no memory"), "start")
    assert enomem is not None and enomem.limit == "memory"
    assert _limits.limit_error(OSError(errno.ENOENT, "missing"), "start") is None
    assert _limits.limit_error(enomem, "start") is None  # already typed: left as it is


@pytest.mark.parametrize(
    ("soft", "hard", "advice"),
    [
        (256, resource.RLIM_INFINITY, "the hard limit is unlimited"),
        (256, 4096, "ulimit -n 4096"),
        (4096, 4096, "it is the hard limit already"),
    ],
)
def test_the_open_files_error_says_how_to_raise_the_limit(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, advice: str
) -> None:
    """The message names the soft limit and the way to raise it that applies."""
    monkeypatch.setattr(_limits, "open_file_limits", lambda: (soft, hard))
    error = _limits._open_files_error("starting kernel k")
    assert f"limit of {soft} open files" in str(error) and advice in str(error)


async def test_a_start_that_cannot_fit_is_refused_at_once(anyio_backend: str) -> None:
    """With no start under way, a claim larger than the free descriptors fails at once, and
    nothing stays claimed; a claim that fits is held until released."""
    soft = _limits.open_file_limits()
    assert soft is not None
    with pytest.raises(ResourceLimitError, match="descriptors are free"):
        await _limits.claim_descriptors("starting kernel k", keep=soft[0])
    assert _limits._claimed() == 0
    release = await _limits.claim_descriptors("starting kernel k", keep=2)
    assert _limits._claimed() == _limits.START_PEAK + 2
    release()
    release()  # idempotent
    assert _limits._claimed() == 0
    with pytest.raises(ResourceLimitError):
        _limits.check_free_descriptors("a client", soft[0])
    _limits.check_free_descriptors("a client", 1)
    assert _limits.at_open_file_limit(margin=soft[0] + 1)
    assert not _limits.at_open_file_limit(margin=1)


async def test_a_start_waits_for_the_descriptors_of_starts_under_way(anyio_backend: str) -> None:
    """A claim that fits only once another start's claim is released waits for that release,
    and then holds its own."""
    limits = _limits.open_file_limits()
    used = _limits._open_descriptors()
    assert limits is not None and used is not None
    first = await _limits.claim_descriptors("first", keep=2)
    # Fits beside nothing, not beside the first claim (10 descriptors to spare for noise).
    keep = limits[0] - used - _limits.START_PEAK - 10
    got: list[Callable[[], None]] = []

    async def second() -> None:
        got.append(await _limits.claim_descriptors("second", keep=keep))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert not got  # waiting for the first start
            first()
    assert _limits._claimed() == _limits.START_PEAK + keep
    got[0]()
    assert _limits._claimed() == 0


def test_no_limits_or_no_descriptor_left_to_count_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the OS has no limits nothing is checked; where counting the open descriptors
    itself fails for want of one, that is the typed error (and the limit counts as reached)."""
    monkeypatch.setattr(_limits, "open_file_limits", lambda: None)
    _limits.check_free_descriptors("a client", 10**9)  # nothing to check against
    assert str(_limits._open_files_error("a client")) == "a client: too many open files"

    def no_descriptor_left() -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(_limits, "open_file_limits", lambda: (256, 4096))
    monkeypatch.setattr(_limits, "_open_descriptors", no_descriptor_left)
    with pytest.raises(ResourceLimitError, match="limit of 256 open files"):
        _limits.check_free_descriptors("a client", 1)
    assert _limits.at_open_file_limit()
