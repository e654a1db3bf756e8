"""`imgcls serve` against its peers, side by side in one run, with wrk (a C load generator).

usage: python -m benchmarks serve [-- --repeats 3 --seconds 10 --connections 32 --out DIR --quick]

Bars (issue 4), each measured here:
- compute-bound (CIFAR-stem ResNet-18, 32×32 PNG, 32 connections): server img/s >= 75 % of in-process
  onnxruntime img/s at the server's batch size, and >= 3x the per-request torch endpoint
  (../shared/bench/naive_torch.py --arch cifar_resnet18); measured for `imgcls serve` (fp32) and
  `imgcls serve --int8` (the same bundle's static int8 export, each against in-process onnxruntime at its
  own precision);
- HTTP-bound (the small CPU model): >= 50 % of the echo endpoint's req/s (../shared/bench/echo_server.py), for
  the quickstart's model (resnet8, 1×16×16) and for resnet8 at 3×32×32;
- p99 <= 50 ms at half the measured maximum load (small model; wrk paced by a Lua delay());
- 0 failed requests while the model is reloaded under load, 0 dropped in-flight requests on SIGTERM under
  load, 0 responses >= 500 for malformed uploads.

Random weights: throughput depends only on the architecture and the input size. Every figure is the median
of ``--repeats`` rounds; each round runs every server in turn, so a comparison shares the machine's state.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ../shared/bench from the main checkout, ../../shared/bench from a worktree under /work/wt/NAME
SHARED_BENCH = next(
    (p / "shared" / "bench" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "bench").is_dir()),
    ROOT.parent / "shared" / "bench",
)
PYTHON = sys.executable
ADMIN_TOKEN = "bench-token"


# --- fixtures: bundles and an image ------------------------------------------------------------------------


def make_bundle(out: Path, arch: str, *, channels: int = 3, size: int = 32, int8: bool = False) -> Path:
    """A random-weight bundle (channels×size×size, 10 classes) with sample images, exported to ONNX fp32 (and
    int8). ``make_bundle(out, "resnet8", channels=1, size=16)`` is the quickstart's model (what
    `imgcls train -c configs/digits.yaml` makes: resnet8 at its default width, 1×16×16)."""
    import torch

    from imgcls.bundle import InputSpec
    from imgcls.export import export_bundle
    from imgcls.models import create_model, model_spec
    from imgcls.models.io import save_bundle

    if (out / ("model.int8.onnx" if int8 else "model.onnx")).exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_chans=channels, img_size=size).eval()
    rng = np.random.default_rng(0)
    (out / "samples").mkdir(parents=True)
    for split in ("val", "train"):
        images = rng.integers(0, 256, size=(64, size, size, channels), dtype=np.uint8)
        np.savez(out / "samples" / f"{split}.npz", images=images, labels=rng.integers(0, 10, size=64))
    save_bundle(
        out,
        model=model,
        name=f"bench-{out.name}",
        classes=[f"class_{i}" for i in range(10)],
        input_spec=InputSpec(size=(size, size), channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels),
        model_spec=model_spec(arch, num_classes=10, in_chans=channels, img_size=size, small_input_stem=None),
        lineage={"dataset": {"name": "random"}},
        extra_files=["samples/val.npz", "samples/train.npz"],
    )
    export_bundle(out, int8=int8)
    return out


def make_png(out: Path) -> Path:
    """A real photo (scikit-learn's china.jpg) resized to 32×32, as PNG."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image("china.jpg")).resize((32, 32), Image.Resampling.BILINEAR)
    img.save(out, format="PNG")
    return out


# --- processes -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]), timeout=2)
            path = "/readyz" if "/v1/" in url else "/docs"
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def process(cmd: list[str], url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})})
    try:
        wait_ready(url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def imgcls_serve(bundle: Path, port: int, work: Path, *extra: str) -> list[str]:
    return [
        PYTHON, "-m", "imgcls", "serve", "--model", str(bundle), "--port", str(port),
        "--log-predictions", str(work / f"predictions-{port}.sqlite"), *extra,
    ]  # fmt: skip


def wrk(url: str, image: Path, connections: int, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["bash", str(SHARED_BENCH / "wrkload.sh"), url, str(image), str(connections), str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def paced_wrk(url: str, image: Path, rate: float, connections: int, seconds: int) -> dict[str, Any]:
    """wrk held near ``rate`` req/s: each connection waits a random delay (mean connections/rate) between requests."""
    mean_ms = 1000.0 * connections / rate
    lua = f"""
local f = assert(io.open("{image}", "rb")); local data = f:read("*all"); f:close()
local b = "----imgclsbars7d9"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
wrk.body = "--" .. b .. "\\r\\nContent-Disposition: form-data; name=\\"file\\"; filename=\\"x.png\\"\\r\\n" ..
  "Content-Type: image/png\\r\\n\\r\\n" .. data .. "\\r\\n--" .. b .. "--\\r\\n"
function delay() return math.random({int(mean_ms * 0.5)}, {int(mean_ms * 1.5) + 1}) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{{"rps": %.1f, "p50_ms": %.1f, "p99_ms": %.1f, "requests": %d, "non2xx": %d, ' ..
    '"socket_errors": %d}}\\n', summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests, e.status, e.connect + e.read + e.write + e.timeout))
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", f.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
    finally:
        os.unlink(f.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scrape(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    values: dict[str, float] = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def in_process_img_s(bundle: Path, batch: int, seconds: float = 4.0, precision: str = "fp32") -> float:
    """onnxruntime through the same Predictor the server uses, on prepared uint8 batches (median of 5)."""
    from imgcls.runtime import Predictor

    predictor = Predictor.from_bundle(bundle, device="cpu", precision=precision)
    h, w = predictor.input.size
    x = np.random.default_rng(0).integers(0, 256, (batch, h, w, predictor.input.channels), dtype=np.uint8)
    for _ in range(3):
        predictor.infer_prepared(x)
    rates = []
    for _ in range(5):
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            predictor.infer_prepared(x)
            n += batch
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates)


# --- operations under load -----------------------------------------------------------------------------------


def multipart(data: bytes, field: str = "file", boundary: str = "imgclsbench") -> tuple[bytes, str]:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="x.png"\r\n'
    body = (head + "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def reload_under_load(bundle_a: Path, bundle_b: Path, image: Path, work: Path, seconds: int) -> dict[str, Any]:
    """wrk at full load while the model is swapped back and forth through the admin endpoint."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"IMGCLS_ADMIN_TOKEN": ADMIN_TOKEN}
    with process(imgcls_serve(bundle_a, port, work), url + "/v1/", work / "serve.log", env) as _proc:
        statuses: list[int] = []

        def reloads() -> None:
            time.sleep(1.0)
            targets = [bundle_b, bundle_a] * 20
            deadline = time.monotonic() + seconds - 2
            for target in targets:
                if time.monotonic() > deadline:
                    return
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request(
                    "POST", "/v1/admin/reload", body=json.dumps({"model": str(target)}),
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
                )  # fmt: skip
                statuses.append(conn.getresponse().status)
                time.sleep(0.5)

        thread = threading.Thread(target=reloads)
        thread.start()
        result = wrk(url + "/v1/predict", image, 32, seconds)
        thread.join()
    failed = result["non2xx"] + result["socket_errors"]
    return {"requests": result["requests"], "failed": failed, "reloads": len(statuses), "reload_statuses": statuses}


def sigterm_under_load(bundle: Path, image: Path, work: Path, clients: int = 16) -> dict[str, Any]:
    """Clients keep posting; SIGTERM lands mid-load. Every request sent before the signal must get its 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body, content_type = multipart(image.read_bytes())
    records: list[tuple[float, float, str]] = []  # (sent, finished, outcome)
    stop = threading.Event()
    with open(work / "serve.log", "ab") as err:
        proc = subprocess.Popen(imgcls_serve(bundle, port, work), stdout=subprocess.DEVNULL, stderr=err)
    wait_ready(url + "/v1/", proc)

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set():
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                outcome = str(response.status)
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except ConnectionRefusedError:
                outcome, conn = "refused", None
                time.sleep(0.01)
            except (OSError, http.client.HTTPException) as exc:
                outcome, conn = f"error:{type(exc).__name__}", None
            records.append((sent, time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    exited = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    before = [r for r in records if r[0] < signalled]
    in_flight = [r for r in before if r[1] > signalled]
    after = [r for r in records if r[0] >= signalled]

    def outcomes(rs: list[tuple[float, float, str]]) -> dict[str, int]:
        return {o: sum(r[2] == o for r in rs) for o in sorted({r[2] for r in rs})}

    # dropped: a request the client had sent that got no answer (a reset or a closed connection) or a 5xx
    # other than the explicit "503 draining" (a refusal the client can retry elsewhere)
    return {
        "exit_code": code,
        "exit_after_s": round(exited - signalled, 2),
        "sent_before_signal": len(before),
        "in_flight_at_signal": len(in_flight),
        "in_flight_outcomes": outcomes(in_flight),
        "dropped_in_flight": sum(r[2] != "200" and r[2] != "503" for r in before),
        "after_signal": outcomes(after),
    }


def malformed_uploads(bundle: Path, image: Path, work: Path) -> dict[str, Any]:
    """A catalogue of bad requests; the bar: no status >= 500, and the server still answers afterwards."""
    import zlib

    good = image.read_bytes()

    def bomb() -> bytes:
        side = 12_000
        raw = zlib.compress(b"".join(b"\x00" + b"\x00" * (side // 8) for _ in range(side)), 9)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

        ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")

    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (40, 40), (1, 2, 3)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    cases: dict[str, tuple[bytes, str, str]] = {}  # name -> (body, content type, query)
    for name, data in {
        "empty file": b"",
        "truncated png": good[: len(good) // 2],
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "png signature only": good[:8],
        "gif": b"GIF89a" + b"\x00" * 100,
        "text": b"hello world",
        "random bytes": os.urandom(5000),
        "decompression bomb": bomb(),
        "png with a corrupt crc": good[:30] + bytes([good[30] ^ 0xFF]) + good[31:],
    }.items():
        body, ct = multipart(data)
        cases[name] = (body, ct, "")
    body, ct = multipart(good, field="image")
    cases["wrong field name"] = (body, ct, "")
    cases["not multipart"] = (good, "image/png", "")
    cases["no content type"] = (good, "", "")
    cases["multipart without boundary"] = (multipart(good)[0], "multipart/form-data", "")
    cases["wrong boundary"] = (multipart(good, boundary="other")[0], "multipart/form-data; boundary=imgclsbench", "")
    cases["unterminated multipart"] = (multipart(good)[0][:-20], multipart(good)[1], "")
    cases["top_k=0"] = (*multipart(good), "?top_k=0")
    cases["top_k=abc"] = (*multipart(good), "?top_k=abc")
    cases["top_k huge"] = (*multipart(good), "?top_k=" + "9" * 50)
    cases["over the size limit"] = (*multipart(b"\x00" * (11 * 1024 * 1024)), "")
    many = b"".join(multipart(b"x", field=f"f{i}")[0][: -len(b"--imgclsbench--\r\n")] for i in range(1500))
    cases["1500 parts"] = (many + b"--imgclsbench--\r\n", multipart(b"")[1], "")
    cases["header flood"] = (b"--imgclsbench\r\n" + b"X: " + b"a" * 100_000 + b"\r\n\r\n", multipart(b"")[1], "")
    cases["boundary flood"] = (b"\r\n-" * 1_000_000, multipart(b"")[1], "")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    statuses: dict[str, int | str] = {}
    with process(imgcls_serve(bundle, port, work), url + "/v1/", work / "serve.log"):
        for name, (body, ct, query) in cases.items():
            for path in ("/v1/predict", "/v1/predict/batch"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {"Content-Type": ct} if ct else {}
                try:
                    conn.request("POST", path + query, body=body, headers=headers)
                    status: int | str = conn.getresponse().status
                except (OSError, http.client.HTTPException) as exc:  # the server may close on 413 mid-upload
                    status = f"closed ({type(exc).__name__})"
                statuses[f"{path} {name}"] = status
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body, ct = multipart(good)
        conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": ct})
        still_serving = conn.getresponse().status == 200
    fives = {k: v for k, v in statuses.items() if isinstance(v, int) and v >= 500}
    return {"cases": len(statuses), "responses_5xx": len(fives), "still_serving": still_serving, "statuses": statuses}


# --- the run ---------------------------------------------------------------------------------------------------


def renamed(bundle: Path, dest: Path, name: str) -> Path:
    from imgcls.bundle import edit_bundle

    if not dest.exists():
        shutil.copytree(bundle, dest)
        with edit_bundle(dest) as edit:
            edit.meta.name = name
    return dest


def serve_round(bundle: Path, image: Path, work: Path, conns: int, secs: int, *extra: str) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(imgcls_serve(bundle, port, work, *extra), url + "/v1/", work / "serve.log"):
        result = wrk(url + "/v1/predict", image, conns, secs)
        result["mean_batch"] = mean_batch(port)
    return result


def mean_batch(port: int) -> float:
    """The server's mean inference batch size so far, from its /metrics."""
    m = scrape(port)
    count = m.get("imgcls_inference_batch_size_count", 0.0)
    return round(m.get("imgcls_inference_batch_size_sum", 0.0) / count, 1) if count else 0.0


def peer_round(script: str, args: list[str], path: str, image: Path, work: Path, conns: int, secs: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [PYTHON, str(SHARED_BENCH / script), *args, *(["--port", str(port)] if args else [str(port)])]
    with process(cmd, url, work / "peers.log"):
        return wrk(url + path, image, conns, secs)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks serve")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgcls-bench-serve")
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke run, not figures to quote)")
    ap.add_argument("--skip-ops", action="store_true", help="skip the reload / SIGTERM / malformed checks")
    a = ap.parse_args(sys.argv[1:])
    if a.quick:
        a.repeats, a.seconds = 1, 4
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    print(f"preparing bundles in {work} ...", flush=True)
    big = make_bundle(work / "resnet18", "resnet18", int8=True)
    small = make_bundle(work / "resnet8", "resnet8")
    quickstart = make_bundle(work / "resnet8-quickstart", "resnet8", channels=1, size=16)
    image = make_png(work / "image32.png")
    conns, secs = a.connections, a.seconds
    rounds: list[dict[str, Any]] = []
    print(f"load average before: {loadavg()}", flush=True)
    for r in range(a.repeats):
        row: dict[str, Any] = {}
        row["serve_resnet18"] = serve_round(big, image, work, conns, secs)
        batch = max(1, round(row["serve_resnet18"]["mean_batch"]))
        row["ort_resnet18_at_server_batch"] = {"batch": batch, "img_s": in_process_img_s(big, batch)}
        row["ort_resnet18_b32"] = {"batch": 32, "img_s": in_process_img_s(big, 32)}
        row["serve_resnet18_int8"] = serve_round(big, image, work, conns, secs, "--int8")
        batch = max(1, round(row["serve_resnet18_int8"]["mean_batch"]))
        row["ort_resnet18_int8_at_server_batch"] = {
            "batch": batch,
            "img_s": in_process_img_s(big, batch, precision="int8"),
        }
        row["naive_torch_resnet18"] = peer_round(
            "naive_torch.py", ["--arch", "cifar_resnet18", "--classes", "10", "--size", "32"], "/predict",
            image, work, conns, secs,
        )  # fmt: skip
        row["serve_resnet8"] = serve_round(small, image, work, conns, secs)
        row["serve_resnet8_quickstart"] = serve_round(quickstart, image, work, conns, secs)
        row["echo"] = peer_round("echo_server.py", [], "/predict", image, work, conns, secs)
        row["naive_torch_small_cnn"] = peer_round(
            "naive_torch.py", ["--arch", "small_cnn", "--classes", "10", "--size", "32"], "/predict",
            image, work, conns, secs,
        )  # fmt: skip
        row["ort_resnet8_b32"] = {"batch": 32, "img_s": in_process_img_s(small, 32)}
        row["loadavg"] = loadavg()
        rounds.append(row)
        print(f"round {r + 1}: " + json.dumps(row), flush=True)

    def med(key: str, field: str = "rps") -> float:
        return statistics.median(float(row[key][field]) for row in rounds)

    summary: dict[str, Any] = {
        "serve_resnet18_rps": med("serve_resnet18"),
        "serve_resnet18_mean_batch": med("serve_resnet18", "mean_batch"),
        "ort_resnet18_img_s_at_server_batch": med("ort_resnet18_at_server_batch", "img_s"),
        "ort_resnet18_img_s_b32": med("ort_resnet18_b32", "img_s"),
        "naive_torch_resnet18_rps": med("naive_torch_resnet18"),
        "serve_resnet18_int8_rps": med("serve_resnet18_int8"),
        "ort_resnet18_int8_img_s_at_server_batch": med("ort_resnet18_int8_at_server_batch", "img_s"),
        "serve_resnet8_rps": med("serve_resnet8"),
        "serve_resnet8_quickstart_rps": med("serve_resnet8_quickstart"),
        "echo_rps": med("echo"),
        "naive_torch_small_cnn_rps": med("naive_torch_small_cnn"),
        "ort_resnet8_img_s_b32": med("ort_resnet8_b32", "img_s"),
    }
    ratios = [  # per round, then the median: each ratio compares two figures of the same round
        ("serve / in-process ORT at the server's batch (resnet18)", "serve_resnet18", "ort_resnet18_at_server_batch"),
        ("serve / per-request torch (resnet18)", "serve_resnet18", "naive_torch_resnet18"),
        (
            "serve --int8 / in-process ORT int8 at the server's batch (resnet18)",
            "serve_resnet18_int8",
            "ort_resnet18_int8_at_server_batch",
        ),
        ("serve --int8 / per-request torch (resnet18)", "serve_resnet18_int8", "naive_torch_resnet18"),
        ("serve resnet8 / echo", "serve_resnet8", "echo"),
        ("serve resnet8-quickstart / echo", "serve_resnet8_quickstart", "echo"),
        ("serve resnet8 / per-request torch small_cnn", "serve_resnet8", "naive_torch_small_cnn"),
    ]
    for label, num, den in ratios:
        values = [
            float(row[num]["rps"]) / float(row[den].get("rps", row[den].get("img_s")))
            for row in rounds
        ]  # fmt: skip
        summary[label] = round(statistics.median(values), 3)
    print(f"load average after the rounds: {loadavg()}", flush=True)
    for key, small_bundle in (("resnet8", small), ("resnet8_quickstart", quickstart)):
        rate = 0.5 * summary[f"serve_{key}_rps"]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with process(imgcls_serve(small_bundle, port, work), url + "/v1/", work / "serve.log"):
            paced = paced_wrk(url + "/v1/predict", image, rate, 16, max(secs, 10))
        summary[f"half_load_{key}"] = {"target_rps": round(rate, 1), **paced}
        print(f"half load {key}: {json.dumps(summary[f'half_load_{key}'])}", flush=True)
    if not a.skip_ops:
        summary["reload_under_load"] = reload_under_load(
            small, renamed(small, work / "resnet8-b", "bench-resnet8-b"), image, work, max(secs, 10)
        )
        print(f"reload under load: {json.dumps(summary['reload_under_load'])}", flush=True)
        summary["sigterm_under_load"] = sigterm_under_load(small, image, work)
        print(f"SIGTERM under load: {json.dumps(summary['sigterm_under_load'])}", flush=True)
        summary["malformed"] = malformed_uploads(small, image, work)
        print(
            f"malformed uploads: {summary['malformed']['cases']} cases, "
            f"{summary['malformed']['responses_5xx']} responses >= 500, "
            f"still serving: {summary['malformed']['still_serving']}",
            flush=True,
        )
    summary["loadavg_end"] = loadavg()
    (work / "results.json").write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=2))
    print("\n| figure | median |\n|---|---|")
    for key, value in summary.items():
        if not isinstance(value, dict):
            print(f"| {key} | {value} |")
    print(f"\nfull results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
