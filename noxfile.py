"""Sessions: tests (default), lint, typecheck, quickstart, slow, gpu, browser, bench.

Uses nox's default virtualenv backend: pip takes this machine's local torch wheels, uv would download ~3 GB.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "virtualenv"

PYTHON = None  # the interpreter nox runs on (3.11 here)
ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


def _install(session: nox.Session, extras: str = "all,dev") -> None:
    session.install("--upgrade", "pip")
    session.install("-e", f".[{extras}]")


def _apt(session: nox.Session, *packages: str) -> None:
    """Debian packages some sessions need (wrk, chromium, the Fashion-MNIST files); needs root."""
    missing = [p for p in packages if shutil.which(p) is None and not os.path.exists(f"/usr/share/doc/{p}")]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        session.error(f"install {' '.join(missing)} with your system's package manager")
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", *missing, external=True, env={"DEBIAN_FRONTEND": "noninteractive"})


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit + integration tests: no network, no GPU, no browser (pass pytest args after --)."""
    _install(session)
    args = session.posargs or ["-m", "not slow and not gpu and not browser", "-q", "--timeout=600"]
    session.run("pytest", *args, env=ENV)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """The longer checks (marker `slow`)."""
    _install(session)
    session.run("pytest", "-m", "slow and not gpu", "-q", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """CUDA tests; on a machine with a GPU."""
    _install(session)
    session.run("pytest", "-m", "gpu", "-q", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def browser(session: nox.Session) -> None:
    """The web page in Debian's Chromium, driven by Playwright."""
    _apt(session, "chromium")
    _install(session)
    session.run("pytest", "-m", "browser", "-q", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on imgcls/."""
    _install(session)
    session.run("mypy", "imgcls")


@nox.session(python=PYTHON)
def quickstart(session: nox.Session) -> None:
    """The main job: the whole lifecycle on the embedded digits data, artifacts under runs/quickstart/."""
    _install(session)
    session.run("python", "scripts/quickstart.py", *session.posargs, env=ENV)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The benchmarks behind docs/benchmarks.md (pass a benchmark name after --)."""
    _apt(session, "wrk", "hyperfine", "dataset-fashion-mnist")
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs, env=ENV)
