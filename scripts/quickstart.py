"""The quick start: the whole imgcls lifecycle on the embedded digits data, as a user would run it.

train -> data describe -> export (+int8) -> predict held-out PNGs -> push to a local store -> promote to
production -> serve from the store -> predict over HTTP -> drift report on the served traffic (no drift) ->
bench the server over HTTP -> stop -> bench the engines in process -> summary. Artifacts land under runs/quickstart/
(or --runs DIR).
Run through `nox -s quickstart` (which installs everything first) or directly with an installed imgcls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "quickstart"  # the default --runs
MARKER = ".imgcls-quickstart"


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def imgcls(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "imgcls", *args]
    print("$ imgcls " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture, check=False)
    if proc.returncode != 0:
        if capture:
            print(proc.stdout, proc.stderr, sep="\n")
        sys.exit(f"quickstart: `imgcls {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc


def write_heldout_pngs(bundle: Path, images: Path) -> list[Path]:
    """The whole digits test split (held out from training) as PNG files, named by their true label."""
    from PIL import Image

    from imgcls.bundle import load_bundle
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset

    config = load_bundle(bundle).meta.lineage.config
    assert config is not None, "imgcls train records its config in the lineage"
    ds = load_dataset(
        DataConfig(**{k: v for k, v in config["data"].items() if v is not None}), seed=config["train"]["seed"]
    )
    split = ds.eval_split
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(split)):
        arr = split.images[i]
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
        p = images / f"{i:03d}-label{ds.classes[int(split.labels[i])]}.png"
        img.save(p)
        paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    sys.exit(f"quickstart: the server did not become ready at {url}")


def post_image(url: str, path: Path) -> dict:
    boundary = "imgclsquickstart"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/quickstart.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=Path,
        default=RUNS,
        help="where the artifacts go (a new or empty folder, or an earlier run's, which is emptied first)",
    )
    runs = parser.parse_args().runs.resolve()
    bundle, store, images = runs / "bundle", runs / "store", runs / "heldout-png"
    t0 = time.monotonic()
    if runs.exists() and any(runs.iterdir()):
        if runs != RUNS and not (runs / MARKER).exists():  # never empty a folder this script did not make
            sys.exit(f"quickstart: {runs} exists and is not a quickstart run; pick an empty or new --runs folder")
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / MARKER).write_text("made by scripts/quickstart.py; emptied by its next run\n")
    env_store = str(store)

    step("train a small CNN on the embedded digits data (CPU)")
    imgcls("train", "--config", "configs/digits.yaml", "--out", str(bundle))

    step("describe the dataset")
    imgcls("data", "describe", "--data", "digits", "--out", str(runs / "describe"))

    step("export to ONNX (fp32 + int8), with parity and accuracy gates")
    imgcls("export", str(bundle), "--int8")

    step("predict held-out digits written as PNG files")
    pngs = write_heldout_pngs(bundle, images)
    out = imgcls("predict", str(images), "--model", str(bundle), "--format", "json", capture=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    right = sum(1 for r in rows if "label" in r and f"-label{r['label']}." in r["path"])
    top1 = right / len(rows)
    reported = json.loads((bundle / "bundle.json").read_text())["metrics"]["test_top1"]
    print(f"{right}/{len(rows)} held-out PNGs predicted correctly: top-1 {top1:.4f} (bundle: {reported:.4f})")
    if abs(top1 - reported) > 1e-9:
        sys.exit("quickstart: predict on the test PNGs does not reproduce the bundle's test top-1")
    imgcls("predict", *map(str, pngs[:3]), "--model", str(bundle), "--format", "table")

    step("push the bundle to a local model store and promote it to production")
    imgcls("push", str(bundle), "--to", env_store, "--name", "digits", "--alias", "production")
    imgcls("models", "list", env_store)
    imgcls("pull", f"{env_store}/digits@production", "--to", str(runs / "pulled"))
    imgcls("predict", str(pngs[0]), "--model", f"{env_store}/digits@production", "--format", "json")

    step("serve digits@production from the store and predict over HTTP")
    port = free_port()
    log = runs / "serve.log"
    with open(log, "w") as fh:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imgcls",
                "serve",
                "--model",
                f"{env_store}/digits@production",
                "--port",
                str(port),
                "--log-predictions",
                str(runs / "predictions.sqlite"),
            ],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        answer = post_image(f"http://127.0.0.1:{port}/v1/predict?top_k=3", pngs[0])
        print(f"POST /v1/predict {pngs[0].name} ->")
        print(json.dumps(answer, indent=2))
        # the traffic the drift report below reads: every held-out digit once, through the server's own log
        served = sum(
            post_image(f"http://127.0.0.1:{port}/v1/predict", p)["label"] == p.stem.split("-label")[1] for p in pngs
        )
        print(f"served the {len(pngs)} held-out PNGs over HTTP: {served} correct")

        time.sleep(1.0)  # the log writer commits within ~50 ms; the report reads the live SQLite log (WAL)
        step("drift report on the traffic just served (reference made at training)")
        imgcls("drift", "report", "--model", str(bundle), "--log", str(runs / "predictions.sqlite"),
               "--out", str(runs / "drift"), "--fail-on-drift")  # fmt: skip

        step("bench the running server over HTTP (closed loop)")
        imgcls("bench", "--url", f"http://127.0.0.1:{port}/v1/predict", "--image", str(pngs[0]),
               "--concurrency", "8", "--duration-s", "3", "--json", str(runs / "bench-http.json"))  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"server stopped (exit {server.returncode}); its log is {log}")

    step("bench the engines in process (each gated against fp32 onnxruntime first)")
    imgcls("bench", "--model", str(bundle), "--batch", "1,64", "--measure-s", "0.5", "--no-peaks",
           "--json", str(runs / "bench.json"))  # fmt: skip

    step("summary")
    from imgcls.bundle import load_bundle

    meta = load_bundle(bundle).meta
    m, ex = meta.metrics, meta.export
    nan = float("nan")
    print(f"bundle:        {bundle}")
    top1, top5 = (nan if v is None else v for v in (m.test_top1, m.test_top5))
    print(f"test top-1:    {top1:.4f}   top-5: {top5:.4f}")
    if ex is not None:
        print(f"export:        {', '.join(f'{p} {e.file}' for p, e in ex.models.items())} (opset {ex.opset})")
    print(f"held-out PNGs: {right}/{len(rows)} correct")
    print(f"store:         {store}")
    drift = json.loads((runs / "drift" / "drift.json").read_text())
    print(f"drift:         {'DRIFT' if drift.get('drift') else 'none'} over the served traffic -> {runs / 'drift'}")
    rows = json.loads((runs / "bench.json").read_text())["results"]
    fastest = max((r for r in rows if r.get("img_per_s")), key=lambda r: r["img_per_s"])
    print(f"bench:         fastest gated engine {fastest['engine']} {fastest['precision']} "
          f"{fastest['img_per_s']:,.0f} img/s at batch {fastest['batch']} -> {runs / 'bench.json'}")  # fmt: skip
    http = json.loads((runs / "bench-http.json").read_text())["results"]
    print(f"bench --url:   {http[0]['req_per_s']:,.0f} req/s, p99 {http[0]['p99_ms']:.1f} ms over HTTP")
    print(f"done in {time.monotonic() - t0:.0f} s")
    if m.test_top1 is None or m.test_top1 < 0.97:
        sys.exit(f"quickstart: digits test top-1 {m.test_top1} is below the 0.97 bar")


if __name__ == "__main__":
    main()
