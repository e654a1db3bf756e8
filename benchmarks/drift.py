"""Drift bars on Fashion-MNIST: 500-image windows of the test split through a real `imgcls serve`, then reports.

* 20 clean random windows: how many report drift (bar: at most 1);
* one window each of brightness +0.25, Gaussian blur (radius 1), Gaussian noise (σ 0.1), inverted images and a
  class-prior shift (70 % of the window from one class): detected, naming the expected column;
* `imgcls drift report` over 10,000 log rows, end to end as a subprocess (bar: ≤ 10 s).

The shifts' sizes and the seed were fixed before the first run, not tuned to pass.

    python -m benchmarks drift                  # trains 1 epoch (≈ 0.90 test top-1) into /tmp/imgcls-drift-bench
    python -m benchmarks drift -- --epochs 4    # the config's full run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 500
SHIFTS = {  # name -> (transform of uint8 (N, 28, 28, 1), the column expected among the drifted ones)
    "brightness +0.25": "brightness",
    "blur (radius 1)": "sharpness",
    "noise (σ 0.1)": "sharpness",
    "inverted": "brightness",
    "class prior (70 % one class)": "pred_class",
}


def _shift(name: str, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    x = images.astype(np.float64)
    if name.startswith("brightness"):
        return np.clip(x + 0.25 * 255, 0, 255).astype(np.uint8)
    if name.startswith("blur"):
        return np.stack(
            [np.asarray(Image.fromarray(a[..., 0]).filter(ImageFilter.GaussianBlur(1.0)))[..., None] for a in images]
        )
    if name.startswith("noise"):
        return np.clip(x + rng.normal(0, 0.1 * 255, size=x.shape), 0, 255).astype(np.uint8)
    if name == "inverted":
        return (255 - images).astype(np.uint8)
    return images


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(log: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{log}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
    finally:
        conn.close()


def _send(client: Any, url: str, images: np.ndarray, log: Path, before: int) -> None:
    bodies = [_png(a) for a in images]

    def post(body: bytes) -> int:
        return int(client.post(url + "/v1/predict", files={"file": ("x.png", body, "image/png")}).status_code)

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, bodies))
    if set(codes) != {200}:
        raise SystemExit(f"the server answered {sorted(set(codes))}")
    deadline = time.monotonic() + 60
    while _rows(log) < before + len(images):  # the writer commits within ~50 ms
        if time.monotonic() > deadline:
            raise SystemExit("the prediction log did not catch up")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks drift")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/imgcls-drift-bench"))
    ap.add_argument("--reuse", action="store_true", help="reuse the bundle in --out if it is there")
    ap.add_argument("--seed", type=int, default=20261201)
    args = ap.parse_args(sys.argv[1:])
    import httpx

    from imgcls.bundle import load_bundle
    from imgcls.config import DataConfig, load_config
    from imgcls.data.datasets import load_dataset
    from imgcls.drift.report import drift_report

    bundle = args.out / "bundle"
    if not (args.reuse and (bundle / "model.onnx").exists()):
        from imgcls.export import export_bundle
        from imgcls.train import fit

        args.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        flags = {"out": str(bundle), "train.epochs": args.epochs}
        fit(load_config(ROOT / "configs" / "fashion-mnist.yaml", flags=flags))
        export_bundle(bundle)
        print(f"trained + exported in {time.perf_counter() - started:.0f} s", flush=True)
    b = load_bundle(bundle)
    section = b.meta.drift
    assert section is not None, "imgcls train writes a drift reference"
    print(f"bundle: test top-1 {b.metrics.test_top1:.4f}; reference {section.images} images; "
          f"column alpha {section.thresholds.column_alpha:.4f}", flush=True)  # fmt: skip
    test = load_dataset(DataConfig.model_validate({"name": "fashion-mnist", "download": False})).test
    rng = np.random.default_rng(args.seed)
    log = args.out / "predictions.sqlite"
    log.unlink(missing_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(bundle), "--port", str(port),
           "--log-predictions", str(log)]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    results: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
        windows: list[tuple[str, np.ndarray, str | None]] = []
        for i in range(20):
            windows.append((f"clean {i + 1}", test.images[rng.choice(len(test), WINDOW, replace=False)], None))
        for name, column in SHIFTS.items():
            if name.startswith("class prior"):
                cls = int(rng.integers(len(b.classes)))
                one = rng.choice(np.flatnonzero(test.labels == cls), int(0.7 * WINDOW), replace=False)
                rest = rng.choice(np.flatnonzero(test.labels != cls), WINDOW - len(one), replace=False)
                images = test.images[rng.permutation(np.concatenate([one, rest]))]
                name = f"{name}: {b.classes[cls]}"
            else:
                images = _shift(name, test.images[rng.choice(len(test), WINDOW, replace=False)], rng)
            windows.append((name, images, column))
        with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=8)) as client:
            for name, images, column in windows:
                _send(client, url, images, log, _rows(log))
                t = time.perf_counter()
                s = drift_report(bundle, log=log, last=WINDOW).summary
                seconds = time.perf_counter() - t
                words = [c["description"] for c in s["columns"] if c["drifted"]]
                results.append({
                    "window": name, "drift": s["drift"], "drifted": s["drifted_columns"], "expected": column,
                    "named": column is None or column in s["drifted_columns"], "words": words,
                    "estimated_accuracy": s["accuracy"]["estimated"], "report_s": round(seconds, 2),
                })  # fmt: skip
                print(f"{name:40s} drift={s['drift']!s:5s} est.acc {s['accuracy']['estimated']:.3f} "
                      f"{', '.join(s['drifted_columns'][:6])}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    rows = _rows(log)
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "imgcls", "drift", "report", "--model", str(bundle), "--log", str(log), "--last",
         "10000", "--out", str(args.out / "report"), "--format", "json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    cli_s = time.perf_counter() - t
    clean = [x for x in results if x["expected"] is None]
    shifted = [x for x in results if x["expected"] is not None]
    summary = {
        "clean_windows_without_drift": f"{sum(not x['drift'] for x in clean)}/{len(clean)}",
        "shifts_detected_and_named": f"{sum(bool(x['drift']) and x['named'] for x in shifted)}/{len(shifted)}",
        "cli_report_10000_rows_s": round(cli_s, 2),
        "cli_exit": r.returncode,
        "log_rows": rows,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "windows": results,
        "reference_accuracy": section.calibration.reference_accuracy,
    }
    (args.out / "drift-bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "windows"}, indent=2))
    for x in shifted:
        print(f"| {x['window']} | {x['drift']} | {'; '.join(x['words'][:3])} |")


if __name__ == "__main__":
    main()
