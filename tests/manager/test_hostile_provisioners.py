"""No provisioner hook, hanging, raising or answering garbage, makes a manager's scope hang.

Each case runs a real fake kernel through :class:`~tests.helpers.hostile.HostileProvisioner`,
a LocalProvisioner whose one hook does its work, then misbehaves. The caller's deadline is set
once the kernel is ready (or a little after the start began, for a start hook that hangs): the
scope must end within the manager's documented bound (:meth:`KernelManager.stop_bound`), with an
error logged that names the hook, and no kernel process left.
"""

from __future__ import annotations

import logging
import math
import signal

import anyio
import pytest

from kernel_nursery import KernelManager, KernelNursery, ProvisionerHookError

from ..helpers.hostile import LAUNCHED, HostileProvisioner
from ..helpers.kernels import SpecFactory
from ..helpers.procs import is_running, zombie_children

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

#: Short settings, so that a hook abandoned at its budget costs little.
WAIT = 0.3  # shutdown_wait_time
KILL = 0.3  # kill_wait_time
#: How long after its start the caller gives up on a start whose hook hangs.
START_WAIT = 2.0
#: What a loaded machine may add to the bound (scheduling, the kernel's own exit).
SLACK = 10.0

START_HOOKS = ("pre_launch", "launch_kernel", "post_launch")
ASYNC_HOOKS = (
    *START_HOOKS,
    "poll",
    "wait",
    "send_signal",
    "terminate",
    "kill",
    "shutdown_requested",
    "cleanup",
)
CASES = [(hook, how) for hook in ASYNC_HOOKS for how in ("hang", "raise", "base")] + [
    ("pre_launch", "garbage"),
    ("poll", "garbage"),
    ("wait", "garbage"),
    ("get_shutdown_wait_time", "raise"),
    ("get_shutdown_wait_time", "base"),
    ("get_shutdown_wait_time", "garbage"),
]
# get_provisioner_info and load_provisioner_info are not here: a manager never calls them
# (a take-over does, in the bridges); get_stable_start_time is called only on a death.


@pytest.fixture
def hostile_spec(fake_spec: SpecFactory, install_provisioner: object) -> SpecFactory:
    """A fake kernel spec run by HostileProvisioner, told which hook misbehaves and how."""
    source = f"from {HostileProvisioner.__module__} import HostileProvisioner as Provisioner\n"
    install_provisioner("hostile", "Provisioner", source)  # type: ignore[operator]

    def make(hook: str, behaviour: str, *args: str, spare: int = 0) -> object:
        config = {"hook": hook, "behaviour": behaviour, "spare": spare}
        stanza = {"provisioner_name": "hostile", "config": config}
        return fake_spec(*args, metadata={"kernel_provisioner": stanza})

    return make  # type: ignore[return-value]


async def _run_until_deadline(km: KernelManager, hook: str, scope: anyio.CancelScope) -> None:
    """Start the kernel, then let the caller's deadline come (at once)."""
    await km.start_kernel()
    if hook == "send_signal":
        await km.signal_kernel(signal.SIGWINCH)  # ignored by the kernel; the hook misbehaves
    scope.deadline = anyio.current_time()
    await anyio.sleep_forever()


@pytest.mark.parametrize(("hook", "behaviour"), CASES)
async def test_a_hostile_hook_cannot_hold_the_scope(
    hostile_spec: SpecFactory, caplog: pytest.LogCaptureFixture, hook: str, behaviour: str
) -> None:
    """A hook that hangs, raises (an Exception or a BaseException of its own) or answers
    garbage: the scope ends within the documented bound after the caller's deadline, an error
    names the hook, what reaches the caller is one documented exception, and no kernel
    process is left."""
    # The kernel must ignore the shutdown request and SIGTERM for the escalation to need them;
    # and for wait() to be called at all: a kernel that exits at once on the request may be
    # found gone by the poll before the escalation's first wait.
    stubborn = ("--ignore-shutdown", "--ignore-term")
    args = stubborn if hook in ("terminate", "kill", "send_signal", "wait") else ()
    spec = hostile_spec(hook, behaviour, *args)
    LAUNCHED.clear()
    caught: list[BaseException] = []
    km = KernelManager(kernel_spec=spec, shutdown_wait_time=WAIT, kill_wait_time=KILL)
    bound = km.stop_bound()
    with anyio.fail_after(60), anyio.CancelScope() as scope:
        if hook in START_HOOKS and behaviour == "hang":
            scope.deadline = anyio.current_time() + START_WAIT
        try:
            async with km:
                await _run_until_deadline(km, hook, scope)
        except Exception as exc:
            caught.append(exc)
    late = anyio.current_time() - scope.deadline
    assert late <= bound + SLACK, f"ended {late:.3g} s after the deadline (bound {bound:.3g} s)"
    for exc in caught:
        assert not isinstance(exc, BaseExceptionGroup)
        assert isinstance(exc, ProvisionerHookError | RuntimeError), repr(exc)
    lowest = logging.WARNING if (hook, behaviour) == ("launch_kernel", "hang") else logging.ERROR
    named = f"HostileProvisioner.{hook}()"
    logged = [r.getMessage() for r in caplog.records if r.levelno >= lowest]
    assert any(named in message for message in logged), logged
    assert all(not is_running(pid) for pid in LAUNCHED)
    assert not zombie_children()
    assert math.isfinite(bound)


async def test_a_nursery_stops_every_kernel_and_raises_one_error(hostile_spec: SpecFactory) -> None:
    """Kernels whose cleanup raises: shutdown_all stops them all and raises one
    ProvisionerHookError (not a group), and so does the end of a nursery's block."""
    spec = hostile_spec("cleanup", "raise")
    settings = {"kernel_spec": spec, "shutdown_wait_time": WAIT, "kill_wait_time": KILL}
    LAUNCHED.clear()
    with anyio.fail_after(60):
        async with KernelNursery() as nursery:
            for _ in range(2):
                await nursery.start_kernel(**settings)
            with pytest.raises(ProvisionerHookError, match="cleanup") as caught:
                await nursery.shutdown_all()
            assert not nursery.list_kernels()
        assert isinstance(caught.value.__cause__, RuntimeError)
        with pytest.raises(ProvisionerHookError, match="cleanup"):
            async with KernelNursery() as nursery:
                await nursery.start_kernel(**settings)
    assert len(LAUNCHED) == 3
    assert all(not is_running(pid) for pid in LAUNCHED)


async def test_a_restart_whose_launch_raises_reports_the_kernel_dead(
    hostile_spec: SpecFactory,
) -> None:
    """A kernel that crashes, and whose automatic restart fails in launch_kernel with a
    plug-in's own error: the kernel is reported dead (logged), the supervisor does not die of
    it (no exception group), and no kernel process is left."""
    spec = hostile_spec("launch_kernel", "raise", "--crash-after", "0.2", spare=1)
    LAUNCHED.clear()
    with anyio.fail_after(60):
        km = KernelManager(kernel_spec=spec, shutdown_wait_time=WAIT, kill_wait_time=KILL)
        async with km, km.events() as events:
            await km.start_kernel()
            async for event in events:
                if event.kind == "dead":
                    break
            assert km.dead
    assert len(LAUNCHED) == 2
    assert all(not is_running(pid) for pid in LAUNCHED)
