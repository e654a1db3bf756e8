"""The Cloud Run contract at the CLI edge: `PORT=N imgcls serve --model B` listens on N (on 127.0.0.1 outside a
container), and the image's HEALTHCHECK probe (`python -m imgcls.serve.probe`) reads the same $PORT."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _ports import free_port


def _probe(port: int) -> int:
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(
        [sys.executable, "-m", "imgcls.serve.probe"], env=env, capture_output=True, timeout=30
    ).returncode


def test_port_env_sets_the_port_and_the_probe_follows_it(exported_digits_bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    assert _probe(port) == 1  # nothing listens yet
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--log-predictions", "off"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PORT": str(port)})
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert f"at http://127.0.0.1:{port}" in log.read_text()  # the default bind stays local
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
