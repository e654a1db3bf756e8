"""`imgcls bench --url` against a real `imgcls serve` (uvicorn) on 127.0.0.1, and the serving profile in use."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from _ports import free_port
from PIL import Image

from imgcls.bench.http import run_http_bench
from imgcls.errors import UsageError
from imgcls.runtime.profile import ServingProfile, write_serving_profile

TOKEN = "bench-test-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


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

        # what would give a table of errors and exit 0 is refused after one request, before any load
        (tmp_path / "notes.txt").write_text("not an image")
        os.mkfifo(tmp_path / "pipe.png")  # reading it would block for ever
        for target, image, said in [
            (url + "/v1/nothing-here", digit_png, "the server answered 404 to one request"),
            (url + "/livez", digit_png, "the server answered 405 to one request"),
            (url + "/v1/predict", tmp_path / "notes.txt", "answered 415 to one request: upload: not a JPEG/PNG"),
            (f"http://127.0.0.1:{free_port()}/v1/predict", digit_png, "Connection refused"),
            (url + "/v1/predict", tmp_path / "pipe.png", "not a regular file"),
        ]:
            with pytest.raises(UsageError) as refused:
                run_http_bench(target, image, concurrency=[1], duration_s=0.5, client="python", processes=1)
            assert said in refused.value.message
        for load, said in [({"concurrency": [0]}, "--concurrency 0: give"), ({"rates": [0.0]}, "--rate 0: give"),
                           ({"rates": [float("nan")]}, "--rate nan: give"),
                           ({"rates": [1e9]}, "--rate 1e+09: give")]:  # fmt: skip
            with pytest.raises(UsageError) as refused:
                run_http_bench(url + "/v1/predict", digit_png, duration_s=0.5, client="python", **load)
            assert said in refused.value.message

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


def _bench_pick(bundle: Path, tmp_path: Path, *slo: str) -> subprocess.CompletedProcess[str]:
    """`imgcls bench --model B --pick --slo-p99-ms …` as a user runs it (a real process; it starts real servers)."""
    cmd = [sys.executable, "-m", "imgcls", "bench", "--model", str(bundle), "--engine", "onnxruntime",
           "--precision", "fp32", "--batch", "4", "--threads", "1", "--measure-s", "0.05", "--no-peaks",
           "--pick", "--json", str(tmp_path / "pick.json"), "--slo-seconds", "1", *slo]  # fmt: skip
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    # the sweep's upload was a /tmp/imgcls-bench-*/sample.png left behind by every run
    assert not list(tmp.glob("imgcls-*")), sorted(p.name for p in tmp.iterdir())
    return done


def test_pick_with_an_slo_stores_the_batching_that_meets_it_and_serve_uses_it(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_digits_bundle, bundle)
    # a generous SLO (a minute): every setting that answers all its requests meets it
    done = _bench_pick(bundle, tmp_path, "--slo-p99-ms", "60000", "--slo-max-batch", "2,4",
                       "--slo-max-delay-ms", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "pick.json").read_text())
    rows = report["slo"]["rows"]
    assert [(r["max_batch"], r["max_delay_ms"]) for r in rows] == [(2, 3.0), (4, 3.0)]  # the grid asked for
    assert all(r["errors"] == 0 and r["req_per_s"] > 0 and r["meets_slo"] for r in rows)
    best = report["slo"]["best"]
    assert best in rows and best["req_per_s"] == max(r["req_per_s"] for r in rows)

    from imgcls.bundle import load_bundle
    from imgcls.runtime.profile import serving_profile

    profile = serving_profile(load_bundle(bundle))  # the bundle still verifies after the edit
    assert profile is not None and (profile.engine, profile.precision, profile.threads) == ("onnxruntime", "fp32", 1)
    assert (profile.max_batch, profile.max_delay_ms) == (best["max_batch"], best["max_delay_ms"])
    assert (report["pick"]["max_batch"], report["pick"]["max_delay_ms"]) == (best["max_batch"], 3.0)

    with serve(bundle, tmp_path) as url:  # no batching flags: the profile's
        info = httpx.get(url + "/v1/model", headers=ADMIN).json()
        assert (info["max_batch"], info["max_delay_ms"]) == (best["max_batch"], 3.0)
        assert info["engine_choice"].startswith("serving profile")


def test_pick_with_an_slo_nothing_meets_leaves_the_bundle_unchanged(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_digits_bundle, bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
    done = _bench_pick(bundle, tmp_path, "--slo-p99-ms", "0.001", "--slo-max-batch", "1")  # no HTTP answer is that fast
    assert done.returncode == 1, done.stderr  # documented: 1 = no batching setting met the SLO
    message = " ".join(done.stderr.split())
    assert "no batching setting met p99 ≤ 0.001 ms" in message and "was not changed" in message
    assert "raise --slo-p99-ms" in message and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before  # no profile, not half of one
    report = json.loads((tmp_path / "pick.json").read_text())  # the report still says what was tried
    assert report["pick"] is None and report["slo"]["best"] is None
    assert [(r["max_batch"], r["meets_slo"]) for r in report["slo"]["rows"]] == [(1, False)]

    usage = _bench_pick(bundle, tmp_path, "--slo-p99-ms", "-5")
    assert usage.returncode == 2 and "--slo-p99-ms must be positive" in usage.stderr  # refused before measuring


def test_pick_into_a_bundle_it_cannot_change_is_refused_before_measuring(
    read_only_copy: Callable[[Path], Path], exported_digits_bundle: Path, tmp_path: Path
) -> None:
    """It measured every engine (minutes), then failed writing the profile into a staging folder."""
    bundle = read_only_copy(exported_digits_bundle)
    out = _bench_pick(bundle, tmp_path)
    assert out.returncode == 2, out.stderr
    assert f"imgcls bench --pick cannot change {bundle}" in out.stderr
    assert "onnxruntime" not in out.stderr.split("error:")[0]  # no engine row was measured before the refusal
    assert not (tmp_path / "pick.json").exists()
