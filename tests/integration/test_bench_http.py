"""`imgcls bench --url` against a real `imgcls serve` (uvicorn) on 127.0.0.1, and the serving profile in use."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgcls.bench.http import run_http_bench
from imgcls.runtime.profile import ServingProfile, write_serving_profile

TOKEN = "bench-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def profiled_bundle(exported_digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profiled") / "bundle"
    shutil.copytree(exported_digits_bundle, out)
    write_serving_profile(out, ServingProfile(engine="openvino", precision="int8", threads=1, max_batch=4))
    return out


@pytest.fixture(scope="module")
def digit_png(exported_digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        array = d["images"][0].squeeze()
    path = tmp_path_factory.mktemp("png") / "digit.png"
    Image.fromarray(array).save(path)
    return path


@contextlib.contextmanager
def serve(bundle: Path, tmp_path: Path, *args: str) -> Iterator[str]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(bundle), "--port", str(port),
           "--log-predictions", "off", "--no-access-log", *args]  # fmt: skip
    with open(log, "wb") as err:
        env = {**os.environ, "IMGCLS_ADMIN_TOKEN": TOKEN}
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"the server did not become ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_uses_the_profile_and_bench_url_loads_it(profiled_bundle: Path, digit_png: Path, tmp_path: Path) -> None:
    with serve(profiled_bundle, tmp_path) as url:
        public = httpx.get(url + "/v1/model").json()  # names the engine to anyone
        assert (public["engine"], public["precision"]) == ("openvino", "int8")
        assert public["provider"].startswith("OpenVINO:CPU")
        info = httpx.get(url + "/v1/model", headers=ADMIN).json()
        assert (info["max_batch"], info["threads"]) == (4, 1) and info["engine_choice"].startswith("serving profile")

        report = run_http_bench(url + "/v1/predict", digit_png, concurrency=[2], rates=[20.0], duration_s=1.5,
                                warmup_s=0.3, client="python", processes=1)  # fmt: skip
        closed, open_ = report["results"]
        assert closed["concurrency"] == 2 and closed["rate"] is None and closed["client"].startswith("python")
        assert closed["req_per_s"] > 0 and closed["errors"] == 0 and closed["p50_ms"] <= closed["p99_ms"]
        assert open_["rate"] == 20.0 and open_["concurrency"] is None and open_["errors"] == 0
        assert open_["requests"] > 0  # Poisson arrivals at 20/s for 1.5 s

        missing = run_http_bench(url + "/v1/nothing-here", digit_png, concurrency=[1], duration_s=0.5,
                                 warmup_s=0.1, client="python", processes=1)["results"][0]  # fmt: skip
        assert missing["req_per_s"] == 0 and missing["errors"] > 0 and set(missing["errors_by_status"]) == {"404"}

        if shutil.which("wrk"):  # `apt-get install -y wrk`: the closed loop then runs in C
            by_wrk = run_http_bench(url + "/v1/predict", digit_png, concurrency=[2], duration_s=1.0, client="wrk")
            row = by_wrk["results"][0]
            assert row["client"].startswith("wrk") and row["req_per_s"] > 0 and row["errors"] == 0

        from typer.testing import CliRunner

        from imgcls.cli import app

        out = tmp_path / "http.json"
        result = CliRunner().invoke(app, ["bench", "--url", url + "/v1/predict", "--image", str(digit_png),
                                          "--concurrency", "1", "--duration-s", "0.5", "--client", "python",
                                          "--processes", "1", "--json", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())["results"]
        assert {"concurrency", "rate", "req_per_s", "p50_ms", "p99_ms", "errors"} <= set(rows[0])

    with serve(profiled_bundle, tmp_path, "--engine", "onnxruntime", "--max-batch", "2") as url:
        info = httpx.get(url + "/v1/model", headers=ADMIN).json()  # flags override the profile
        assert (info["engine"], info["precision"], info["max_batch"]) == ("onnxruntime", "fp32", 2)
