"""A real `imgcls serve` process on 127.0.0.1: batching, overload, SIGTERM drain, reload under load, CLI errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from _ports import free_port
from PIL import Image

from imgcls.bundle import edit_bundle
from imgcls.serve.predlog import read_predictions

TOKEN = "process-test-token"


@pytest.fixture(scope="module")
def digit_png(exported_digits_bundle: Path) -> bytes:
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        array = d["images"][0].squeeze()
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(
    bundle: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None, own_group: bool = False
) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(bundle), "--port", str(port), *args]
    if "--log-predictions" not in args:
        cmd += ["--log-predictions", str(tmp_path / "predictions.sqlite")]
    with open(log, "wb") as err:
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})}, start_new_session=own_group
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}:\n{server.stderr()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready:\n{server.stderr()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def post(url: str, data: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + "/v1/predict", files={"file": ("d.png", data, "image/png")}, timeout=timeout)


def concurrently(n: int, fn) -> list:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = fn(i)
        except Exception as exc:  # recorded, asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_concurrent_requests_are_batched_logged_and_answered(
    exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes
) -> None:
    with serve(exported_digits_bundle, tmp_path, "--max-batch", "8", "--max-delay-ms", "100") as server:
        responses = concurrently(16, lambda i: post(server.url, digit_png))
        assert [r.status_code for r in responses] == [200] * 16
        text = httpx.get(server.url + "/metrics").text
        batches = metric(text, "imgcls_inference_batch_size_count")
        assert metric(text, "imgcls_inference_batch_size_sum") == 16
        assert batches < 16  # several requests shared one onnxruntime call
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    access = [json.loads(line) for line in server.stderr().splitlines() if '"imgcls.serve.access"' in line]
    predicts = [a for a in access if a["path"] == "/v1/predict"]
    assert len(predicts) == 16
    assert {a["request_id"] for a in predicts} == {r.json()["request_id"] for r in responses}
    assert all(a["status"] == 200 and a["latency_ms"] > 0 for a in predicts)
    assert len(read_predictions(tmp_path / "predictions.sqlite")) == 16


def test_ctrl_c_to_the_process_group_stops_the_server_without_losing_the_log(
    exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes
) -> None:
    """A terminal's Ctrl-C (and systemd's stop) signals every process of the group: the log writer died of it
    before the server had shipped its last records, and the server logged the death and started another."""
    with serve(exported_digits_bundle, tmp_path, own_group=True) as server:
        responses = concurrently(12, lambda i: post(server.url, digit_png))
        assert [r.status_code for r in responses] == [200] * 12
        os.killpg(server.process.pid, signal.SIGINT)
        assert server.process.wait(30) == 0
    assert "died" not in server.stderr() and "restarting" not in server.stderr()
    assert len(read_predictions(tmp_path / "predictions.sqlite")) == 12


def test_a_full_queue_answers_503_at_once(exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes) -> None:
    args = ("--max-queue", "1", "--max-batch", "32", "--max-delay-ms", "300")
    with serve(exported_digits_bundle, tmp_path, *args) as server:
        responses = concurrently(8, lambda i: post(server.url, digit_png))
        statuses = sorted(r.status_code for r in responses)
        assert 200 in statuses and 503 in statuses and set(statuses) <= {200, 503}
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.json()["error"]["code"] == "queue_full" and refused.headers["retry-after"] == "1"
        assert post(server.url, digit_png).status_code == 200


def test_sigterm_drains_in_flight_requests(exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes) -> None:
    with serve(exported_digits_bundle, tmp_path, "--max-delay-ms", "3000") as server:
        results: list = []
        load = threading.Thread(target=lambda: results.extend(concurrently(6, lambda i: post(server.url, digit_png))))
        load.start()
        deadline = time.monotonic() + 30
        while metric(httpx.get(server.url + "/metrics").text, "imgcls_queue_depth") < 6:
            assert time.monotonic() < deadline, "the six requests never arrived"
            time.sleep(0.05)
        # six requests are in flight, their batch waits up to 3 s to fill
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        ready = httpx.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "draining"
        refused = post(server.url, digit_png)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert refused.headers["connection"] == "close"
        load.join(30)
        assert [r.status_code for r in results] == [200] * 6  # none dropped
        assert server.process.wait(15) == 0
    assert "drained in" in server.stderr()


def renamed_copy(bundle: Path, dest: Path, name: str) -> Path:
    shutil.copytree(bundle, dest)
    with edit_bundle(dest) as edit:
        edit.meta.name = name
    return dest


def test_reload_under_load_fails_no_request(exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes) -> None:
    a = renamed_copy(exported_digits_bundle, tmp_path / "a", "model-a")
    b = renamed_copy(exported_digits_bundle, tmp_path / "b", "model-b")
    bad = tmp_path / "bad"
    shutil.copytree(exported_digits_bundle, bad)
    (bad / "model.onnx").unlink()
    (bad / "model.onnx").write_bytes(b"not onnx")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serve(a, tmp_path, env={"IMGCLS_ADMIN_TOKEN": TOKEN}) as server:
        stop = threading.Event()
        outcomes: list[tuple[int, str]] = []

        def hammer(i: int) -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    r = client.post(server.url + "/v1/predict", files={"file": ("d.png", digit_png, "image/png")})
                    outcomes.append((r.status_code, r.json().get("model", {}).get("name", "")))

        load = threading.Thread(target=lambda: concurrently(4, hammer))
        load.start()
        reloads = []
        for target in (b, a, bad, b):
            time.sleep(0.3)
            reloads.append(
                httpx.post(server.url + "/v1/admin/reload", json={"model": str(target)}, headers=auth, timeout=60)
            )
        time.sleep(0.3)
        stop.set()
        load.join(60)
        assert [r.status_code for r in reloads] == [200, 200, 422, 200]
        assert "still serving the previous model" in reloads[2].json()["error"]["message"]
        assert outcomes and all(status == 200 for status, _ in outcomes), {s for s, _ in outcomes}
        assert {name for _, name in outcomes} == {"model-a", "model-b"}
        assert outcomes[-1][1] == "model-b"


def test_cli_refuses_to_start_with_a_clear_message(
    digits_bundle: Path, exported_digits_bundle: Path, tmp_path: Path
) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "imgcls", "serve", "--port", str(free_port()), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})

    out = run("--model", str(tmp_path / "missing"), "--log-predictions", "off")
    assert out.returncode == 2 and "no bundle at" in out.stderr and "Traceback" not in out.stderr
    out = run("--model", str(digits_bundle), "--log-predictions", "off")  # trained, not exported
    assert out.returncode == 2 and "imgcls export" in out.stderr
    env = {"WANDB_MODE": "", "WANDB_API_KEY": "", "NETRC": str(tmp_path / "none")}
    out = run("--model", str(digits_bundle), "--wandb", "--log-predictions", "off", env=env)
    assert out.returncode == 2 and "WANDB_MODE=offline" in out.stderr
    out = run("--model", str(exported_digits_bundle), "--device", "cuda", "--log-predictions", "off")
    assert out.returncode == 2 and "--device cuda" in out.stderr and "--device cpu" in out.stderr  # no GPU here
    out = run("--model", str(digits_bundle), "--max-batch", "0")
    assert out.returncode == 2 and "--max-batch" in out.stderr
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run("--model", str(digits_bundle), "--log-predictions", str(blocker / "log.sqlite"))
    assert out.returncode == 2 and "--log-predictions" in out.stderr


def test_several_workers_serve_and_stop(exported_digits_bundle: Path, tmp_path: Path, digit_png: bytes) -> None:
    with serve(exported_digits_bundle, tmp_path, "--workers", "2", env={"IMGCLS_ADMIN_TOKEN": TOKEN}) as server:
        responses = concurrently(8, lambda i: post(server.url, digit_png))
        assert [r.status_code for r in responses] == [200] * 8
        # a reload would reach one worker only and leave the others on the old version: refused, pointing at --watch
        auth = {"Authorization": f"Bearer {TOKEN}"}
        reload = httpx.post(server.url + "/v1/admin/reload", headers=auth, timeout=30)
        assert reload.status_code == 409 and reload.json()["error"]["code"] == "reload_needs_watch"
        assert "--watch" in reload.json()["error"]["hint"]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    logged = read_predictions(tmp_path / "predictions.sqlite")
    assert len(logged) == 8  # both workers write the one WAL log
    ids = [r["request_id"] for r in logged]
    assert len(set(ids)) == 8 and all(len(i) == 32 for i in ids)  # each worker draws its own request ids
    assert set(ids) == {r.headers["x-request-id"] for r in responses}
