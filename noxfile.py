"""The project's checks. ``nox`` runs them all, as CI does; ``nox -s tests`` runs one.

The test suite runs on every CPython the project supports (:data:`PYTHONS`). Each is looked for
on this machine only, never downloaded: ``python3.X`` on ``PATH`` if it runs, else the newest
``3.X.*`` in pyenv's versions folder (``$PYENV_ROOT``, or ``~/.pyenv``). A missing one fails its
session, saying so. Other sessions use the interpreter nox itself runs on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import nox

PYPROJECT = nox.project.load_toml("pyproject.toml")
HERE = Path(__file__).parent

#: The CPython versions supported and tested (pyproject.toml's classifiers say the same).
PYTHONS = ["3.11", "3.12", "3.13"]
#: The interpreter that runs the whole suite with coverage; the others run :data:`CORE_TESTS`.
PRIMARY = "3.11"
#: What the other interpreters run by default: what touches the event loops and the interpreter
#: (processes, signals, sockets, asyncio's child watcher, which changes in 3.12, JSON). Not the
#: command line's tests (a process each: as long as these together), nor the slow SSH and Slurm
#: files, whose engines are the same whatever the local Python (docs/platforms.md).
CORE_TESTS = ["tests/manager", "tests/provisioning/local", "tests/messaging", "tests/wire"]

# Not in the default run (nor in CI's time budget): portable (about 3 minutes more; see
# docs/platforms.md), stress, and bench (`nox -s bench-3.11`).
nox.options.sessions = ["lint", "typecheck", "tests", "build", "docs"]
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "virtualenv"


def _version_of(executable: str | Path) -> str | None:
    """``"X.Y"`` of a Python executable, or ``None`` if it does not run (a pyenv shim for a
    version that is installed but not selected fails)."""
    try:
        done = subprocess.run(
            [str(executable), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _find_interpreter(version: str) -> Path | None:
    """This machine's CPython *version*: ``pythonX.Y`` on ``PATH``, else pyenv's newest."""
    on_path = shutil.which(f"python{version}")
    if on_path is not None and _version_of(on_path) == version:
        return Path(on_path)
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"

    # Releases only ("3.12.1", not "3.12.1t" or "3.12-dev"), the newest first.
    releases = {
        int(m.group(1)): folder
        for folder in root.glob(f"{version}.*")
        if (m := re.fullmatch(rf"{re.escape(version)}\.(\d+)", folder.name))
    }
    for _, folder in sorted(releases.items(), reverse=True):
        executable = folder / "bin" / f"python{version}"
        if _version_of(executable) == version:
            return executable
    return None


def _expose_interpreters() -> None:
    """Put a ``pythonX.Y`` link to each interpreter found off ``PATH`` in a folder of its own,
    first on this process's ``PATH``, where nox's discovery finds it under its usual name."""
    links = HERE / ".nox" / "_interpreters"
    for version in PYTHONS:
        if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
            continue  # nox's own interpreter: nox uses it
        found = _find_interpreter(version)
        if found is None or shutil.which(f"python{version}") == str(found):
            (links / f"python{version}").unlink(missing_ok=True)  # none, or no longer needed
        if found is None:
            print(
                f"noxfile: no CPython {version} on PATH nor in pyenv's versions folder; "
                f"its sessions will fail (nox never downloads an interpreter)",
                file=sys.stderr,
            )
            continue
        if shutil.which(f"python{version}") == str(found):
            continue
        links.mkdir(parents=True, exist_ok=True)
        link = links / f"python{version}"
        if not link.is_symlink() or link.readlink() != found:
            link.unlink(missing_ok=True)
            link.symlink_to(found)
    if links.is_dir():
        os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_expose_interpreters()


def install_groups(session: nox.Session, *groups: str, editable: bool = True) -> None:
    """Install the project and the named dependency groups from pyproject.toml."""
    requirements = [r for g in groups for r in nox.project.dependency_groups(PYPROJECT, g)]
    session.install(*(["-e", "."] if editable else ["."]), *requirements)


#: Test workers (pytest-xdist): the suite is built to pass beside another copy of itself, and
#: its tests mostly wait on kernels starting and stopping. Two at least, so that the suite itself
#: keeps proving that; at most four, since each can start its own Slurm cluster and sshd.
WORKERS = max(2, min(4, os.cpu_count() or 1))


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on asyncio and trio: on :data:`PRIMARY` all of it, with branch coverage
    and its floor; on the other Pythons :data:`CORE_TESTS`, without coverage.

    Runs in :data:`WORKERS` processes; ``nox -s tests-3.11 -- -n 0 tests/x`` runs one file in
    one, and ``nox -s tests-3.13 -- tests`` the whole suite on 3.13 (arguments replace the
    default selection).
    """
    install_groups(session, "test")
    workers = ["-n", str(WORKERS), "--dist", "worksteal"]
    if session.python != PRIMARY:
        session.run("pytest", *workers, *(session.posargs or CORE_TESTS))
        return
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *workers, *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report")


#: What ``portable`` runs: the manager (kernel manager, nursery, pool), the local provisioner,
#: the command line and the open-file accounting, whose Linux-only paths have fallbacks.
PORTABLE_TESTS = ["tests/manager", "tests/provisioning/local", "tests/cli", "tests/test_limits.py"]


@nox.session
def portable(session: nox.Session) -> None:
    """:data:`PORTABLE_TESTS` with the library's Linux-only facilities hidden (pidfds, ``/proc``,
    hence the guardian): ``KERNEL_NURSERY_PORTABLE=1`` (``src/kernel_nursery/_platform.py``), so
    that they run through the fallbacks macOS takes. Tests of what needs those facilities skip,
    saying so. Not in the default run (docs/platforms.md says why).
    """
    install_groups(session, "test")
    workers = ["-n", str(WORKERS), "--dist", "worksteal"]
    env = {"KERNEL_NURSERY_PORTABLE": "1"}
    session.run("pytest", *workers, *(session.posargs or PORTABLE_TESTS), env=env)


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


@nox.session(python=PYTHONS)
def bench(session: nox.Session) -> None:
    """Benchmarks against jupyter_client, in one run. On :data:`PRIMARY` (``nox -s bench-3.11``)
    the results go to docs/benchmarks/; on another Python to ``benchmarks/results/python-X.Y/``
    (not kept in git), for comparison: ``nox -s bench-3.13 -- --only floor,launch,ipykernel``.
    """
    install_groups(session, "bench")
    args = list(session.posargs)
    if session.python != PRIMARY and "--out" not in args:
        args += ["--out", str(HERE / "benchmarks" / "results" / f"python-{session.python}")]
    session.run("python", "benchmarks/bench.py", *args)
    # The Slurm and Docker rows go to docs/benchmarks/ too: only in a whole run of the reference
    # Python.
    partial = {"--only", "--scenarios", "--out"} & {a.split("=")[0] for a in args}
    if session.python == PRIMARY and not partial:
        session.run("python", "benchmarks/slurm_bench.py")  # says so and stops without Slurm
        session.run("python", "benchmarks/docker_bench.py")  # says so and stops without Docker


#: What the wheel must hold (besides the modules): code run in other processes, the typing
#: marker, and the licence.
WHEEL_MUST_HOLD = [
    "kernel_nursery/provisioning/_scripts/guardian.py",
    "kernel_nursery/provisioning/_scripts/ssh_remote.py",
    "kernel_nursery/provisioning/_scripts/slurm_node.py",
    "kernel_nursery/py.typed",
    "licenses/LICENSE",  # in the .dist-info folder
]
#: What no artifact may hold: byte code, caches, and (in the wheel) the tests.
NEVER_SHIPPED = re.compile(
    r"(^|/)(__pycache__|\.[a-z_]+_cache|\.nox|_build|htmlcov)(/|$)|(^|/)\.coverage|\.py[co]$"
)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel, check their metadata and contents, then install the wheel
    in a fresh virtual environment, away from the source tree, and use it there: the command
    line's ``run``, and a kernel on each backend with its guardian
    (``tests/helpers/installed_smoke.py``).

    ``nox -s build -- DIR`` keeps the artifacts in DIR (a temporary folder otherwise).
    """
    session.install("build>=1.2", "twine>=6.1")
    with tempfile.TemporaryDirectory(prefix="kn-build-") as tmp:
        dist = Path(session.posargs[0]).resolve() if session.posargs else Path(tmp) / "dist"
        session.run("python", "-m", "build", "--outdir", str(dist), str(HERE))
        wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            session.error(f"expected one wheel and one sdist in {dist}")
        session.run("twine", "check", "--strict", str(wheels[0]), str(sdists[0]))
        _check_contents(session, wheels[0], sdists[0])
        _use_installed(session, wheels[0], Path(tmp))


def _check_contents(session: nox.Session, wheel: Path, sdist: Path) -> None:
    """The wheel holds :data:`WHEEL_MUST_HOLD` and no tests; neither holds caches."""
    with zipfile.ZipFile(wheel) as z:
        in_wheel = z.namelist()
    with tarfile.open(sdist) as t:
        in_sdist = [name.split("/", 1)[-1] for name in t.getnames()]
    missing = [m for m in WHEEL_MUST_HOLD if not any(n.endswith(m) for n in in_wheel)]
    tests = [n for n in in_wheel if n.startswith(("tests/", "kernel_nursery/tests/"))]
    cached = [n for n in in_wheel + in_sdist if NEVER_SHIPPED.search(n)]
    if "LICENSE" not in in_sdist:
        missing.append("LICENSE (sdist)")
    if missing or tests or cached:
        session.error(f"artifacts: missing {missing}, tests {tests[:5]}, caches {cached[:5]}")
    session.log(f"{wheel.name}: {len(in_wheel)} files; {sdist.name}: {len(in_sdist)} entries")


def _use_installed(session: nox.Session, wheel: Path, tmp: Path) -> None:
    """Install *wheel* (with trio, and ipykernel for a kernel to run) in a new virtual
    environment and use it from *tmp*, with nothing of the source tree on the path."""
    venv = tmp / "venv"
    session.run("python", "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    session.run(*pip, f"{wheel}[trio]", "ipykernel>=7.3", external=True)
    smoke = tmp / "installed_smoke.py"
    shutil.copy(HERE / "tests" / "helpers" / "installed_smoke.py", smoke)
    # The environment a user of the venv has: its bin first, no other venv, no PYTHONPATH, and
    # Jupyter's folders of its own (no kernel spec of this machine's user is found).
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    for name in ("DATA", "CONFIG", "RUNTIME"):
        env[f"JUPYTER_{name}_DIR"] = str(tmp / "jupyter" / name.lower())
    env["JUPYTER_PATH"] = ""
    cli = [str(venv / "bin" / "kernel-nursery"), "run", "python3", "print(6*7)"]
    for argv in (cli, [python, str(smoke)]):
        session.log(" ".join(argv))
        done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, check=False)
        print(done.stdout, end="", flush=True)
        print(done.stderr, end="", file=sys.stderr, flush=True)
        if done.returncode != 0:
            session.error(f"{argv[0]} failed in the installed environment ({done.returncode})")
        if argv is cli and done.stdout.strip() != "42":
            session.error(f"kernel-nursery run printed {done.stdout!r}, not 42")


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
