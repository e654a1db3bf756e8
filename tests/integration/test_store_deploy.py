"""Store references where models are used: `predict --model`, `serve --model`, and `serve --watch` under load."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _ports import free_port
from _store_helpers import ROOT, cli_env, flip_stored_byte, variant

from imgcls.store import Store


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "digit.png"
    img = Image.new("L", (16, 16), 0)
    for i in range(4, 12):
        img.putpixel((8, i), 255)
    img.save(path)
    return path


@pytest.fixture
def stored(exported_digits_bundle: Path, tmp_path: Path) -> tuple[str, list]:
    """A local store holding three versions of the exported digits bundle; production -> 1."""
    store_uri = str(tmp_path / "store")
    store = Store.open(store_uri)
    versions = [store.push(variant(exported_digits_bundle, tmp_path, i), name="digits").version for i in (1, 2, 3)]
    store.set_alias("digits", "production", "1")
    return store_uri, versions


def test_predict_from_a_store_reference_and_refusal_of_a_flipped_byte(
    stored: tuple[str, list], png_file: Path, tmp_path: Path, cli
) -> None:
    store_uri, versions = stored
    env = cli_env(IMGCLS_CACHE=str(tmp_path / "cache"))
    ok = cli("predict", str(png_file), "--model", f"{store_uri}/digits@production", "--format", "json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert '"label"' in ok.stdout
    flip_stored_byte(store_uri, versions[1].key, "model.onnx")
    bad = cli("predict", str(png_file), "--model", f"{store_uri}/digits:2", env=env)
    assert bad.returncode in (1, 2), bad.stdout
    assert "failed verification and was refused" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "cache" / "digits" / versions[1].id).exists()


def test_serve_refuses_a_stored_version_with_a_flipped_byte(stored: tuple[str, list], tmp_path: Path, cli) -> None:
    store_uri, versions = stored
    flip_stored_byte(store_uri, versions[0].key, "model.onnx")
    env = cli_env(IMGCLS_CACHE=str(tmp_path / "cache"))
    res = cli("serve", "--model", f"{store_uri}/digits@production", "--log-predictions", "off", env=env, timeout=120)
    assert res.returncode in (1, 2)
    assert "failed verification and was refused" in res.stderr and "Traceback" not in res.stderr


def test_serve_watch_needs_a_store_alias(exported_digits_bundle: Path, cli) -> None:
    res = cli("serve", "--model", str(exported_digits_bundle), "--watch", "5", "--log-predictions", "off")
    assert res.returncode == 2 and "--watch follows a store alias" in res.stderr


def test_watch_deploys_under_load_with_zero_failed_requests(
    stored: tuple[str, list], png_file: Path, tmp_path: Path
) -> None:
    """Promote -> swapped in; promote a corrupted version -> refused (log + metric), old keeps serving; 0 failures."""
    import httpx

    store_uri, versions = stored
    store = Store.open(store_uri)
    flip_stored_byte(store_uri, versions[2].key, "model.onnx")
    port = free_port()
    stderr_path = tmp_path / "server.err"
    env = cli_env(IMGCLS_CACHE=str(tmp_path / "cache"))
    with open(stderr_path, "wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "imgcls", "serve", "--model", f"{store_uri}/digits@production", "--watch", "0.2",
             "--port", str(port), "--log-predictions", "off", "--no-access-log", "--max-batch", "8"],
            stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    clients: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert server.poll() is None, stderr_path.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert httpx.get(f"{base}/v1/model").json()["version"] == "1"
        image = png_file.read_bytes()

        def load() -> None:
            with httpx.Client(base_url=base, timeout=30) as client:
                while not stop.is_set():
                    try:
                        r = client.post("/v1/predict", files={"file": ("d.png", io.BytesIO(image), "image/png")})
                        statuses.append(r.status_code)
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))

        clients += [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in clients:
            t.start()

        def served_version() -> str:
            return str(httpx.get(f"{base}/v1/model", timeout=5).json()["version"])

        def wait_for(cond, timeout: float = 60.0) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if cond():
                    return True
                time.sleep(0.1)
            return False

        time.sleep(0.5)
        store.set_alias("digits", "production", "2")  # promote: deployed without a restart
        assert wait_for(lambda: served_version() == "2")
        time.sleep(0.5)
        store.set_alias("digits", "production", "3")  # a corrupted version: refused
        assert wait_for(lambda: 'imgcls_model_reloads_total{result="refused"} 1.0' in httpx.get(f"{base}/metrics").text)
        time.sleep(0.5)
        assert served_version() == "2"
        # the store says production -> 3 while this server serves 2: /v1/model and a metric say so
        alias = httpx.get(f"{base}/v1/model", timeout=5).json()["alias"]
        assert alias["wanted"]["version"] == 3 and alias["served"]["version"] == 2 and alias["in_sync"] is False
        assert alias["refused"]["version"] == 3 and "verification" in alias["refused"]["error"]
        text = httpx.get(f"{base}/metrics").text
        assert 'imgcls_model_alias_in_sync{alias="production"} 0.0' in text
        assert 'imgcls_model_alias_wanted_version{alias="production"} 3.0' in text
        assert 'imgcls_model_alias_served_version{alias="production"} 2.0' in text
        store.set_alias("digits", "production", "1")  # roll back
        assert wait_for(lambda: served_version() == "1")
        assert wait_for(
            lambda: 'imgcls_model_alias_in_sync{alias="production"} 1.0' in httpx.get(f"{base}/metrics").text
        )
        assert httpx.get(f"{base}/v1/model", timeout=5).json()["alias"]["refused"] is None
        time.sleep(0.5)
    finally:
        stop.set()
        for t in clients:
            t.join(10)
        server.terminate()
        server.wait(30)
    log = stderr_path.read_text()
    assert "refused version digits:3" in log and "still serving digits:2" in log
    assert errors == [] and len(statuses) > 20
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert re.findall(r"deployed digits:\d", log) == ["deployed digits:2", "deployed digits:1"]
