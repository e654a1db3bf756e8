"""Run an imgcls image the way its platform would and check its contract; exits non-zero naming what failed.

``--target serve`` (the default; ``nox -s image``): no torch in the image, the CPU onnxruntime wheel, a non-root
user, $PORT honoured, predict over HTTP from a mounted bundle (the answer equals the bundle's own prediction with
the same onnxruntime), the HEALTHCHECK turns healthy, and a SIGTERM under load drains and exits 0 within 10 s
(Cloud Run's grace).

``--target serve-gpu`` (``nox -s image-gpu``, on a machine without a GPU): onnxruntime-gpu with
CUDAExecutionProvider listed, no torch, non-root; the CUDA + cuDNN wheels load through
``onnxruntime.preload_dlls()`` so the CUDA provider library lacks nothing but the host's driver (libcuda.so.1);
and ``docker run IMAGE --model /models/bundle`` exits non-zero within a bounded time, saying which provider and
driver are missing and how to fix it, instead of serving on the CPU.

``--target train`` (``nox -s image-gpu``): ``doctor`` says CUDA is absent with a fix line, and ``train --config
configs/digits.yaml --epochs 1`` trains on the CPU inside the image as a non-root user into a mounted directory.

    python scripts/image_check.py --image imgcls-serve:test --bundle runs/image/bundle
    python scripts/image_check.py --target serve-gpu --image imgcls-serve-gpu:test --bundle runs/image/bundle
    python scripts/image_check.py --target train --image imgcls-train:test
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NoReturn

GRACE_S = 10.0
START_FAIL_S = 120.0  # the GPU image must give up within this (vfs copies the image on every container start)
NON_ROOT_UID = "10001"


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [os.environ.get("DOCKER", "docker"), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        sys.exit(f"image check: docker {' '.join(args[:3])} … failed: {proc.stderr.strip()[-600:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def png_for(bundle: Path) -> bytes:
    import numpy as np
    from PIL import Image

    spec = json.loads((bundle / "bundle.json").read_text())["input"]
    h, w = spec["size"]
    shape = (h, w) if spec["channels"] == 1 else (h, w, 3)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def post(url: str, png: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def fail(why: str) -> NoReturn:
    sys.exit(f"image check: {why}")


def non_root(uid: str, ok: Callable[[str], None]) -> None:
    if uid in ("", "0"):
        fail(f"the image runs as uid {uid!r}; it must not be root")
    ok(f"runs as uid {uid} (non-root)")


def check_serve(args: argparse.Namespace, ok: Callable[[str], None]) -> None:
    bundle = args.bundle.resolve()
    # one probe container (with vfs storage every container start copies the whole image)
    probe = (
        "id -u; python3 -c \"import importlib.util as u; print(u.find_spec('torch') is None, "
        "u.find_spec('onnxruntime') is not None)\"; pip list --format=json"
    )
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", args.image, "-c", probe).stdout.splitlines()
    uid, found, dists = out[0].strip(), out[1].split(), json.loads(out[2])
    if found != ["True", "True"]:
        sys.exit(f"image check: torch in the image or onnxruntime missing (probe said {found})")
    names = {d["name"].lower() for d in dists}
    if "onnxruntime-gpu" in names or "onnxruntime" not in names:
        sys.exit(f"image check: the CPU image must carry onnxruntime, not onnxruntime-gpu ({sorted(names)[:40]})")
    ok("no torch; the CPU onnxruntime wheel (not onnxruntime-gpu)")
    non_root(uid, ok)

    port = free_port()
    name = f"imgcls-image-check-{uuid.uuid4().hex[:8]}"
    # host networking: this machine's dockerd may have no bridge NAT; PORT is the only thing that says where
    docker(
        "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}",
        "-v", f"{bundle}:/models/bundle:ro", args.image,
        "--model", "/models/bundle", "--log-predictions", "off", "--no-access-log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            state = json.loads(docker("inspect", name).stdout)[0]["State"]
            if not state["Running"] or time.monotonic() > deadline:
                sys.exit(f"image check: the server never became ready on $PORT={port}:\n{docker('logs', name).stderr}")
            time.sleep(0.5)
        ok(f"listens on $PORT={port} (ready)")

        png = png_for(bundle)
        status, answer = post(f"{base}/v1/predict", png)
        if status != 200:
            sys.exit(f"image check: POST /v1/predict answered {status}")
        from imgcls.runtime import Predictor

        local = Predictor.from_bundle(bundle, device="cpu")
        want = local.predict_images([local.decode(png)])[0]
        got = answer.get("label") or (answer.get("predictions") or [{}])[0].get("label")
        if got != want.label:
            sys.exit(f"image check: the image predicted {answer}, the bundle locally {want.label}")
        model = get(f"{base}/v1/model")[1]
        ok(f"predict over HTTP from the mounted bundle: {want.label} (provider {model.get('provider')})")

        deadline = time.monotonic() + 60
        while True:
            health = json.loads(docker("inspect", name).stdout)[0]["State"].get("Health", {}).get("Status")
            if health == "healthy":
                break
            if time.monotonic() > deadline:
                sys.exit(f"image check: HEALTHCHECK status is {health!r} after 60 s")
            time.sleep(1)
        ok("HEALTHCHECK healthy")

        stop = threading.Event()
        statuses: list[int] = []

        def load() -> None:
            while not stop.is_set():
                try:
                    statuses.append(post(f"{base}/v1/predict", png)[0])
                except OSError:
                    return  # the listener closed: the drain is under way

        clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in clients:
            t.start()
        time.sleep(1.0)
        sent = time.monotonic()
        docker("kill", "--signal", "TERM", name)
        code = docker("wait", name, timeout=60).stdout.strip()
        took = time.monotonic() - sent
        stop.set()
        for t in clients:
            t.join(5)
        if code != "0" or took > GRACE_S:
            sys.exit(f"image check: after SIGTERM the server exited {code} in {took:.1f} s (want 0 within {GRACE_S} s)")
        bad = sorted({s for s in statuses if s not in (200, 503)})
        if bad:
            sys.exit(f"image check: requests during the drain got {bad}")
        ok(
            f"SIGTERM under load: drained, exit 0 in {took:.1f} s; {len(statuses)} requests, "
            f"statuses {sorted(set(statuses))}"
        )
    finally:
        docker("rm", "-f", name, check=False)


GPU_PROBE = r"""
import contextlib, ctypes, importlib.metadata as md, importlib.util as u, io, json, os
import onnxruntime as ort
out = {"torch": u.find_spec("torch") is not None, "providers": ort.get_available_providers()}
out["dists"] = sorted(d.metadata["Name"].lower() for d in md.distributions() if d.metadata["Name"])
out["ort"] = md.version("onnxruntime-gpu")
from onnxruntime.capi import build_and_package_info as info
out["built_cuda"] = getattr(info, "cuda_version", None)
with contextlib.redirect_stdout(io.StringIO()) as said:
    ort.preload_dlls()
out["preload_said"] = said.getvalue().strip()[-300:]
out["loaded"] = sorted({line.split()[-1] for line in open("/proc/self/maps") if "/nvidia/" in line})
capi = os.path.dirname(ort.capi.__file__)
try:
    ctypes.CDLL(os.path.join(capi, "libonnxruntime_providers_cuda.so"))
    out["provider_lib"] = "loads"
except OSError as exc:
    out["provider_lib"] = str(exc).replace(capi + "/", "")
print(json.dumps(out))
"""

# what onnxruntime-gpu's CUDA provider needs from the wheels (sonames without their versions)
CUDA_WHEEL_LIBS = ("libcudart.so", "libcublas.so", "libcublasLt.so", "libcufft.so", "libcurand.so", "libcudnn.so")


def check_serve_gpu(args: argparse.Namespace, ok: Callable[[str], None]) -> None:
    bundle = args.bundle.resolve()
    probe = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", args.image, "-c", 'id -u; python3 -c "$0"', GPU_PROBE
    ).stdout.splitlines()  # fmt: skip
    uid, found = probe[0].strip(), json.loads(probe[-1])
    if found["torch"]:
        fail("torch is in the GPU serving image")
    if "onnxruntime" in found["dists"]:
        fail("the GPU image carries the CPU onnxruntime wheel too (one module, two wheels: whichever wins)")
    if "CUDAExecutionProvider" not in found["providers"]:
        fail(f"onnxruntime-gpu {found['ort']} in the image lists no CUDAExecutionProvider ({found['providers']})")
    ok(f"no torch; onnxruntime-gpu {found['ort']} built for CUDA {found['built_cuda']}; lists {found['providers']}")
    non_root(uid, ok)
    loaded = [name.rsplit("/", 1)[-1] for name in found["loaded"]]
    missing = [lib for lib in CUDA_WHEEL_LIBS if not any(name.startswith(lib + ".") for name in loaded)]
    if missing:
        fail(f"onnxruntime.preload_dlls() did not load {missing} from the nvidia-* wheels (loaded {loaded}; "
             f"it said {found['preload_said']!r})")  # fmt: skip
    ok(f"preload_dlls() loads the CUDA + cuDNN wheels: {', '.join(n for n in loaded if '.so.' in n)}")
    if "libcuda.so.1" not in found["provider_lib"]:
        fail(f"the CUDA provider library should lack only the host's driver, libcuda.so.1; it says "
             f"{found['provider_lib']!r}")  # fmt: skip
    ok(f"the CUDA provider library lacks only the host's driver: {found['provider_lib']}")

    # no GPU here: start-up must fail loudly, not serve on the CPU
    try:
        run, ran, took = run_timed(
            "-v", f"{bundle}:/models/bundle:ro", args.image, "--model", "/models/bundle", "--log-predictions", "off",
            timeout=START_FAIL_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        fail(f"without a GPU the serve-gpu image was still running after {START_FAIL_S:.0f} s: it must refuse")
    said = (run.stderr + run.stdout).strip()
    if run.returncode == 0:
        fail(f"without a GPU the serve-gpu image exited 0; it said {said[-600:]!r}")
    lines = [line for line in said.splitlines() if not line.startswith("{")]  # the server's JSON log records
    wants = ("CUDAExecutionProvider", "libcuda.so.1", "--gpus all")
    shape = len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    if not shape or not all(w in said for w in wants) or "Traceback" in said:
        fail(f"the start-up failure must be one error line and one fix line naming {wants}, got:\n{said[-1500:]}")
    ok(f"without a GPU, start-up fails: exit {run.returncode} after {ran:.1f} s of the process ({took:.1f} s with "
       "the container's creation):")  # fmt: skip
    for line in lines:
        print(f"        {line}", flush=True)


def run_timed(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """`docker run --network none ARGS` to its end: the result, the seconds its process ran (docker inspect's
    StartedAt/FinishedAt) and the wall seconds including the container's creation (with vfs, a copy of the image).
    """
    name = f"imgcls-image-check-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    try:
        run = docker("run", "--name", name, "--network", "none", *args, check=False, timeout=timeout)
        if run.returncode == 125:  # docker itself failed (a full disk, a bad flag): there is no container to inspect
            sys.exit(f"image check: docker run … failed: {run.stderr.strip()[-600:]}")
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
    finally:
        docker("rm", "-f", name, check=False)

    def parse(stamp: str) -> datetime:
        head, _, frac = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")

    ran = (parse(state["FinishedAt"]) - parse(state["StartedAt"])).total_seconds()
    return run, ran, time.monotonic() - started


def check_train(args: argparse.Namespace, ok: Callable[[str], None]) -> None:
    doctor, ran, took = run_timed(args.image, "doctor", timeout=300)
    lines = doctor.stdout.splitlines()
    cuda = [i for i, line in enumerate(lines) if line.split()[1:2] == ["cuda"]]
    if doctor.returncode != 0 or not cuda:
        fail(f"`doctor` exited {doctor.returncode} without a cuda line:\n{(doctor.stdout + doctor.stderr)[-1500:]}")
    line, fix = lines[cuda[0]], lines[cuda[0] + 1] if cuda[0] + 1 < len(lines) else ""
    if not line.startswith("miss") or "CUDA absent" not in line or "fix:" not in fix:
        fail(f"`doctor` must say CUDA is absent, with a fix line; it said:\n{line}\n{fix}")
    versions = next((v for v in lines if v.split()[1:2] == ["versions"]), "")
    ok(f"doctor ({ran:.1f} s; {took:.0f} s with the container's creation): {line.strip()}")
    print(f"        {fix.strip()}", flush=True)
    print(f"        {versions.strip()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="imgcls-train-check-") as tmp:
        out = Path(tmp)
        out.chmod(0o777)  # the image's user (uid 10001) writes here
        run, ran, took = run_timed(
            "-v", f"{out}:/out", args.image, "train", "--config", "configs/digits.yaml", "--epochs", "1",
            "--out", "/out/run", timeout=900,
        )  # fmt: skip
        if run.returncode != 0:
            fail(f"`train` in the image exited {run.returncode}:\n{(run.stdout + run.stderr)[-1500:]}")
        manifest = out / "run" / "bundle.json"
        if not manifest.is_file():
            fail(f"`train` exited 0 but wrote no bundle.json ({sorted(p.name for p in (out / 'run').glob('*'))})")
        owners = {str(p.stat().st_uid) for p in (out / "run").rglob("*")}
        top1 = json.loads(manifest.read_text()).get("metrics", {}).get("test_top1")
        ok(f"train --epochs 1 on the CPU in the image: exit 0 after {ran:.0f} s ({took:.0f} s with the "
           "container's creation), "
           f"bundle {sorted(p.name for p in (out / 'run').iterdir())}, top-1 {top1}")  # fmt: skip
        if owners != {NON_ROOT_UID}:
            fail(f"the files `train` wrote belong to uid {sorted(owners)}; the image must run as {NON_ROOT_UID}")
        ok(f"runs as uid {NON_ROOT_UID} (non-root): the files it wrote are owned by {NON_ROOT_UID}")


CHECKS: dict[str, Callable[[argparse.Namespace, Callable[[str], None]], None]] = {
    "serve": check_serve,
    "serve-gpu": check_serve_gpu,
    "train": check_train,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--target", choices=sorted(CHECKS), default="serve")
    parser.add_argument("--bundle", type=Path, help="an exported bundle (serve, serve-gpu)")
    args = parser.parse_args()
    if args.target != "train" and args.bundle is None:
        parser.error(f"--target {args.target} needs --bundle")
    results: list[str] = []

    def ok(what: str) -> None:
        results.append(what)
        print(f"  ok  {what}", flush=True)

    CHECKS[args.target](args, ok)
    print(f"image check: {len(results)} checks passed ({args.target})")


if __name__ == "__main__":
    main()
