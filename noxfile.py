"""The project's checks. ``nox`` runs them all, as CI does; ``nox -s tests`` runs one.

Sessions use the interpreter nox itself runs on (the Python this machine has), and nox is never
allowed to download one.
"""

from __future__ import annotations

import os

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
