"""Tests for kernel_nursery.provisioning._base: the provisioner contract and its defaults."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from traitlets import Float, HasTraits
from traitlets.config import LoggingConfigurable

from kernel_nursery import ConnectionFileError, KernelSpec
from kernel_nursery.connection import ConnectionInfo
from kernel_nursery.provisioning import (
    DEFAULT_SHUTDOWN_WAIT_TIME,
    DEFAULT_STABLE_START_TIME,
    KernelProvisionerBase,
    LaunchProgress,
)

pytestmark = pytest.mark.anyio


class Minimal(KernelProvisionerBase):
    """The least a provisioner must implement; it runs nothing."""

    @property
    def has_process(self) -> bool:
        return False

    async def poll(self) -> int | None:
        return 0

    async def wait(self) -> int | None:
        return 0

    async def send_signal(self, signum: int) -> None:
        pass

    async def kill(self, restart: bool = False) -> None:
        pass

    async def terminate(self, restart: bool = False) -> None:
        pass

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> ConnectionInfo:
        raise NotImplementedError

    async def cleanup(self, restart: bool = False) -> None:
        pass


class Manager(LoggingConfigurable):
    shutdown_wait_time = Float(1.5)
    stable_start_time = Float(2.5)


def test_abstract_methods_are_the_reference_ones() -> None:
    """Exactly the methods the reference API makes abstract are abstract."""
    assert KernelProvisionerBase.__abstractmethods__ == {
        "has_process",
        "poll",
        "wait",
        "send_signal",
        "kill",
        "terminate",
        "launch_kernel",
        "cleanup",
    }


def test_connection_info_belongs_to_each_instance() -> None:
    """No shared mutable default: one provisioner's info is not another's."""
    a, b = Minimal(), Minimal()
    a.connection_info["ip"] = "x"
    assert b.connection_info == {}
    assert isinstance(a, HasTraits)


async def test_pre_launch_builds_env_without_touching_inputs() -> None:
    """Spec env is added with ${VAR} substituted from the launch env; unknown names stay;
    neither the caller's env nor the spec is modified."""
    spec = KernelSpec(
        argv=["k"], language="python", env={"A": "${BASE}/a", "B": "${NOPE}", "C": "plain"}
    )
    env = {"BASE": "/b", "PYTHONEXECUTABLE": "/x"}
    kw = await Minimal(kernel_spec=spec).pre_launch(env=env, cwd="/w")
    assert kw == {"cwd": "/w", "env": {"BASE": "/b", "A": "/b/a", "B": "${NOPE}", "C": "plain"}}
    assert env == {"BASE": "/b", "PYTHONEXECUTABLE": "/x"}
    assert spec.env == {"A": "${BASE}/a", "B": "${NOPE}", "C": "plain"}


async def test_pre_launch_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env=, the launch environment is a copy of os.environ."""
    monkeypatch.setenv("KN_TEST_VAR", "v")
    kw = await Minimal(kernel_spec=KernelSpec(argv=["k"], env={"X": "$KN_TEST_VAR"})).pre_launch()
    assert kw["env"]["X"] == "v"
    assert kw["env"] is not os.environ


def test_wait_times_default_parent_and_recommended() -> None:
    """The recommended value wins, then the parent's setting, then the default."""
    alone = Minimal()
    assert alone.get_shutdown_wait_time() == DEFAULT_SHUTDOWN_WAIT_TIME
    assert alone.get_stable_start_time() == DEFAULT_STABLE_START_TIME
    owned = Minimal(parent=Manager())
    assert owned.get_shutdown_wait_time() == 1.5
    assert owned.get_stable_start_time() == 2.5
    assert owned.get_shutdown_wait_time(recommended=9) == 9.0
    assert owned.get_stable_start_time(recommended=8) == 8.0


async def test_provisioner_info_round_trip() -> None:
    """get_provisioner_info is JSON and load_provisioner_info restores it."""
    info: dict[str, Any] = {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": "k",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "x",
    }
    a = Minimal(kernel_id="abc")
    a.connection_info = info
    saved = json.loads(json.dumps(await a.get_provisioner_info()))
    b = Minimal()
    await b.load_provisioner_info(saved)
    assert (b.kernel_id, b.connection_info) == ("abc", info)


async def test_load_rejects_bad_connection_info() -> None:
    """Saved info with broken connection info is a ConnectionFileError."""
    with pytest.raises(ConnectionFileError, match="shell_port"):
        await Minimal().load_provisioner_info(
            {"kernel_id": "k", "connection_info": {"ip": "1.2.3.4"}}
        )


async def test_optional_hooks_do_nothing() -> None:
    """shutdown_requested and post_launch are optional no-ops."""
    p = Minimal()
    await p.shutdown_requested(restart=True)
    await p.post_launch(cmd=["x"])
    async with p:  # nothing to stop, cleanup is called
        pass


def test_progress_reaches_the_callback_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """report_progress hands a LaunchProgress to progress_callback; with none set it does
    nothing, and a callback that raises is logged, not raised."""
    p = Minimal(kernel_id="k1")
    p.report_progress("PENDING", detail="nobody listens")
    seen: list[LaunchProgress] = []
    p.progress_callback = seen.append
    p.report_progress("RUNNING", node="n1", detail="job 1 runs")
    assert seen == [LaunchProgress(state="RUNNING", node="n1", detail="job 1 runs")]

    def hostile(progress: LaunchProgress) -> None:
        raise RuntimeError("hostile listener")

    p.progress_callback = hostile
    p.report_progress("PENDING")
    assert "progress callback failed" in caplog.text and "hostile listener" in caplog.text
    assert Minimal().progress_callback is None  # each instance starts without one


def test_an_async_progress_callback_is_refused_and_its_coroutine_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An async function given as progress_callback cannot run (report_progress never awaits):
    the error is logged, naming the mistake, and its coroutine is closed (no 'never awaited'
    warning, no silently lost progress)."""
    import gc
    import warnings

    p = Minimal(kernel_id="k1")
    seen: list[LaunchProgress] = []

    async def listener(progress: LaunchProgress) -> None:
        seen.append(progress)

    p.progress_callback = listener  # type: ignore[assignment]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p.report_progress("PENDING")
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert not seen
    assert "progress callback" in caplog.text and "awaitable" in caplog.text
