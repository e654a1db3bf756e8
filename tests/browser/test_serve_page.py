"""The web page of `imgcls serve` in Debian's Chromium, driven by Playwright (`nox -s browser`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_url(exported_digits_bundle: Path, tmp_path: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--port", str(port)]
    cmd += ["--log-predictions", str(tmp_path / "predictions.sqlite")]
    with open(tmp_path / "serve.log", "wb") as err:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(20)


def test_upload_in_the_page_shows_top_k_bars(server_url: str, exported_digits_bundle: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images, labels = d["images"][:2], d["labels"][:2]
    files = []
    for i, array in enumerate(images):
        path = tmp_path / f"digit-{i}.png"
        big = Image.fromarray(array.squeeze()).resize((128, 128), Image.Resampling.NEAREST)
        big.save(path)
        files.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    files.append(str(broken))

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            external: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith((server_url, "blob:", "data:")) else external.append(r.url),
            )
            page.goto(server_url + "/")
            sync_api.expect(page.locator("#model")).to_contain_text("digits-resnet8")
            page.set_input_files("#file", files)
            cards = page.locator(".card")
            sync_api.expect(cards).to_have_count(3, timeout=20_000)
            for i, label in enumerate(labels):
                card = cards.nth(i)
                sync_api.expect(card.locator(".bar")).to_have_count(5)
                assert card.locator(".bar.top .label span").first.inner_text() == str(int(label))
                width = card.locator(".bar.top .fill").evaluate("e => parseFloat(e.style.width)")
                assert 20 < width <= 100
            sync_api.expect(cards.nth(2).locator(".err")).to_contain_text("not a JPEG/PNG")
            sync_api.expect(page.locator("#status")).to_contain_text("3 classified")
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("IMGCLS_SCREENSHOT_DIR"):  # keep it for a human to look at
                shutil.copy(shot, Path(os.environ["IMGCLS_SCREENSHOT_DIR"]) / shot.name)
            assert shot.stat().st_size > 10_000
            assert external == []  # no CDN, nothing fetched from elsewhere
        finally:
            browser.close()
