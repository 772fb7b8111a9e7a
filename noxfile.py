"""The project's checks. ``nox`` runs them all, as CI does; ``nox -s tests`` runs one.

Sessions use the interpreter nox itself runs on (the Python this machine has), and nox is never
allowed to download one.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")

# bench and stress are not in the default run (nor in CI's time budget): `nox -s bench`.
nox.options.sessions = ["lint", "typecheck", "tests", "docs"]
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "virtualenv"


def install_groups(session: nox.Session, *groups: str, editable: bool = True) -> None:
    """Install the project and the named dependency groups from pyproject.toml."""
    requirements = [r for g in groups for r in nox.project.dependency_groups(PYPROJECT, g)]
    session.install(*(["-e", "."] if editable else ["."]), *requirements)


#: Test workers (pytest-xdist): the suite is built to pass beside another copy of itself, and
#: its tests mostly wait on kernels starting and stopping. Two at least, so that the suite itself
#: keeps proving that; at most four, since each can start its own Slurm cluster and sshd.
WORKERS = max(2, min(4, os.cpu_count() or 1))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite on asyncio and trio, with branch coverage and its floor.

    Runs in :data:`WORKERS` processes; ``nox -s tests -- -n 0 tests/x`` runs in one.
    """
    install_groups(session, "test")
    session.run("coverage", "erase")
    workers = ["-n", str(WORKERS), "--dist", "worksteal"]
    session.run("coverage", "run", "-m", "pytest", *workers, *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


@nox.session
def stress(session: nox.Session) -> None:
    """The reliability suite's long variants (more fuzz examples, more kernels at once)."""
    install_groups(session, "test")
    session.run(
        "pytest",
        "tests/reliability",
        "tests/manager",
        *session.posargs,
        env={"KERNEL_NURSERY_STRESS": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting."""
    install_groups(session, "lint", editable=False)
    session.run("ruff", "check", "src", "tests", "docs", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "docs", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    install_groups(session, "typecheck")
    session.run("mypy", "--strict")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with Sphinx; any warning fails the build.

    Not nitpicky (-n): without intersphinx (no network where CI runs) every reference to the
    standard library or traitlets would be a warning.
    """
    install_groups(session, "docs")
    session.run(
        "sphinx-build",
        "-W",
        "--keep-going",
        "-b",
        "html",
        "docs",
        "docs/_build/html",
        *session.posargs,
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against jupyter_client, in one run; results go to docs/benchmarks/."""
    install_groups(session, "bench")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/slurm_bench.py")  # says so and stops without Slurm
    session.run("python", "benchmarks/docker_bench.py")  # says so and stops without Docker


#: jupyter_client's test modules that make the compatibility specification: its kernel
#: managers, multi-kernel managers, provisioning, restarter and clients.
JUPYTER_CLIENT_TESTS = [
    "tests/test_kernelmanager.py",
    "tests/test_manager.py",
    "tests/test_multikernelmanager.py",
    "tests/test_provisioning.py",
    "tests/test_restarter.py",
    "tests/test_client.py",
]

#: Tests of jupyter_client's suite that check that the provisioner is its own LocalProvisioner
#: (isinstance), and so cannot hold for another (docs/in-jupyter.md lists them with why).
JUPYTER_CLIENT_OWN = [
    "tests/test_provisioning.py::TestRuntime::test_existing[no_provisioner]",
    "tests/test_provisioning.py::TestRuntime::"
    "test_local_provisioner_pre_launch_generates_curve_keys_under_transport_encryption",
    "tests/test_provisioning.py::TestRuntime::"
    "test_local_provisioner_pre_launch_generates_curve_keys_over_ipc",
]


@nox.session(name="jupyter-compat")
def jupyter_compat(session: nox.Session) -> None:
    """jupyter_client's own test suite, from its sdist at the installed version, with
    kernel-nursery-local as the default provisioner (JUPYTER_DEFAULT_PROVISIONER_NAME).

    Its tests are copied apart from its sources, so that they import the installed
    jupyter_client (with our provisioner's entry point), not the sdist's copy.
    """
    install_groups(session, "jupyter-compat")
    version = session.run(
        "python", "-c", "import jupyter_client; print(jupyter_client.__version__)", silent=True
    )
    assert isinstance(version, str)
    version = version.strip()
    cache = Path(session.cache_dir) / f"jupyter_client-{version}"
    if not (cache / "tests").is_dir():
        download = Path(session.create_tmp()) / "sdist"
        session.run(
            "python", "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"jupyter_client=={version}", "-d", str(download),
        )  # fmt: skip
        [archive] = download.glob("jupyter_client-*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(download, filter="data")
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("tests", "pyproject.toml"):
            shutil.move(download / f"jupyter_client-{version}" / name, cache / name)
    deselect = [f"--deselect={test}" for test in JUPYTER_CLIENT_OWN]
    with session.chdir(cache):
        session.run(
            "pytest", "-p", "no:cacheprovider", *deselect, *JUPYTER_CLIENT_TESTS,
            *session.posargs,
            env={"JUPYTER_DEFAULT_PROVISIONER_NAME": "kernel-nursery-local"},
        )  # fmt: skip
