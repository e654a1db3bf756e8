"""Run the `serve` image the way Cloud Run would and check its contract; exits non-zero naming what failed.

Checks: no torch in the image, a non-root user, $PORT honoured, predict over HTTP from a mounted bundle (the
answer equals the bundle's own prediction with the same onnxruntime), the HEALTHCHECK turns healthy, and a
SIGTERM under load drains and exits 0 within 10 s (Cloud Run's grace). Used by ``nox -s image``:

    python scripts/image_check.py --image imgcls-serve:test --bundle runs/image/bundle
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

GRACE_S = 10.0


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    results: list[str] = []

    def ok(what: str) -> None:
        results.append(what)
        print(f"  ok  {what}", flush=True)

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
    if uid in ("", "0"):
        sys.exit(f"image check: the image runs as uid {uid!r}; it must not be root")
    ok(f"runs as uid {uid} (non-root)")

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
    print(f"image check: {len(results)} checks passed")


if __name__ == "__main__":
    main()
