"""The Cloud Run contract at the CLI edge: `PORT=N imgcls serve --model B` listens on N (on 127.0.0.1 outside a
container), and the image's HEALTHCHECK probe (`python -m imgcls.serve.probe`) reads the same $PORT."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _ports import free_port


def _probe(port: int) -> int:
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "imgcls.serve.probe"], env=env, capture_output=True, timeout=30
    ).returncode


def _serve_until_ready(cmd: list[str], port: int, log: Path, **popen: Any) -> subprocess.Popen:
    """``imgcls serve`` started with its stderr in ``log``, once its /readyz answers 200 (within 90 s)."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, **popen)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text())
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)


def test_port_env_sets_the_port_and_the_probe_follows_it(exported_digits_bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    assert _probe(port) == 1  # nothing listens yet
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--log-predictions", "off"]
    proc = _serve_until_ready(cmd, port, log, env={**os.environ, "PORT": str(port)})
    try:
        assert f"at http://127.0.0.1:{port}" in log.read_text()  # the default bind stays local
        assert "on CPUExecutionProvider with fp32" in log.read_text()  # the precision resolved, not "with None"
        assert _probe(port) == 0
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_bad_port_env_is_a_usage_error() -> None:
    env = {**os.environ, "PORT": "http"}
    res = subprocess.run(
        [sys.executable, "-m", "imgcls", "serve", "--model", "nowhere"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "PORT" in res.stderr


@pytest.mark.parametrize("how", [["--port", "0"], ["--port", "65536"]])
def test_a_port_out_of_range_is_refused_before_the_model_loads(exported_digits_bundle: Path, how: list[str]) -> None:
    """--port 0 served on a port the kernel chose while the banner said 'at http://127.0.0.1:0'."""
    res = subprocess.run([sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), *how],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and "--port" in res.stderr and "Traceback" not in res.stderr
    assert "serving" not in res.stderr


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imgcls", "serve", "--log-predictions", "off", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_port_in_use_or_a_host_not_here_is_refused_before_the_model_loads(exported_digits_bundle: Path) -> None:
    import socket

    model = ["--model", str(exported_digits_bundle)]
    with socket.create_server(("127.0.0.1", 0)) as taken:  # another server listens there
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            res = _serve(*model, "--port", str(port), "--workers", workers)
            assert res.returncode == 2, res.stderr  # uvicorn: a JSON log line "address already in use", exit 3
            assert f"error: port {port} on 127.0.0.1 is in use: another server listens there" in res.stderr
            assert "choose another --port" in res.stderr and "serving" not in res.stderr  # before the model loads
    res = _serve(*model, "--host", "no-such-host.invalid", "--port", str(free_port()))
    assert res.returncode == 2 and "--host 'no-such-host.invalid' is not a name or address" in res.stderr
    res = _serve(*model, "--host", "192.0.2.1", "--port", str(free_port()))  # TEST-NET-1: no machine has it
    assert res.returncode == 2 and "--host 192.0.2.1 is not an address of this machine" in res.stderr


def _soft_open_files(pid: int) -> int:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max open files"))
    return int(line.split()[3])


@pytest.mark.parametrize(("soft", "hard"), [(256, 4096), (256, 256)])
def test_serve_raises_the_open_file_limit_its_connection_cap_needs_or_says_it_cannot(
    exported_digits_bundle: Path, tmp_path: Path, soft: int, hard: int
) -> None:
    """Under `ulimit -n 256` the server took 1,000 connections on trust: past 256 descriptors, new clients were
    reset by the kernel (no JSON 503, no log line, no metric)."""
    import resource

    port, log = free_port(), tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--log-predictions", "off",
           "--port", str(port)]  # fmt: skip
    proc = _serve_until_ready(
        cmd, port, log, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    )
    try:
        if hard >= 1064:
            assert _soft_open_files(proc.pid) == 1064  # the default cap of 1,000 connections and 64 more
            assert "open-file limit" not in log.read_text()
        else:
            assert _soft_open_files(proc.pid) == 256
            text = log.read_text()
            assert "the open-file limit (ulimit -n) is 256, too few for --max-connections 1000" in text
            assert "--max-connections 192" in text
    finally:
        proc.terminate()
        proc.wait(30)
