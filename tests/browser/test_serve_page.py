"""The web page of `imgcls serve` in Debian's Chromium, driven by Playwright (`nox -s browser`).

One real `imgcls serve` process (uvicorn on 127.0.0.1, the trained digits bundle, a 1 MB upload limit so that
phone-sized photos are cheap to make) serves every test; each test opens a fresh page and uses real image files.
Chromium missing is a failure here, not a skip: `nox -s browser` installs it.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _ports import free_port
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UPLOAD_LIMIT_MB = 1


@pytest.fixture(scope="module")
def server_url(exported_digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("page_server")
    port = free_port()
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--port", str(port)]
    cmd += ["--log-predictions", str(tmp / "predictions.sqlite"), "--max-upload-mb", str(UPLOAD_LIMIT_MB)]
    with open(tmp / "serve.log", "wb") as err:
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp / "serve.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(20)


@pytest.fixture(scope="module")
def sync_api() -> Any:
    assert Path(CHROMIUM).exists(), (
        f"Debian's chromium is not installed at {CHROMIUM}: apt-get install -y chromium (nox -s browser does)"
    )
    from playwright import sync_api

    return sync_api


@pytest.fixture
def page(sync_api: Any, server_url: str) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.external = []  # type: ignore[attr-defined]
            page.posts = []  # type: ignore[attr-defined]
            page.not_found = []  # type: ignore[attr-defined]
            page.on(
                "request",
                lambda r: None if r.url.startswith((server_url, "blob:", "data:")) else page.external.append(r.url),  # type: ignore[attr-defined]
            )
            page.on("request", lambda r: page.posts.append(r.url) if r.method == "POST" else None)  # type: ignore[attr-defined]
            page.on("response", lambda r: page.not_found.append(r.url) if r.status == 404 else None)  # type: ignore[attr-defined]
            page.goto(server_url + "/")
            sync_api.expect(page.locator("#model")).to_contain_text("digits-resnet8")
            yield page
            assert page.external == []  # type: ignore[attr-defined]  # no CDN, nothing fetched from elsewhere
            assert page.not_found == []  # type: ignore[attr-defined]
        finally:
            browser.close()


def png_file(path: Path, array: np.ndarray, side: int = 128) -> str:
    Image.fromarray(array.squeeze()).resize((side, side), Image.Resampling.NEAREST).save(path)
    return str(path)


@pytest.fixture(scope="module")
def digits(exported_digits_bundle: Path, server_url: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Real validation digits as PNG files, the most confident first, with their label and the server's answer."""
    tmp = tmp_path_factory.mktemp("digits")
    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images, labels = d["images"][:12], d["labels"][:12]
    out = []
    for i, (array, label) in enumerate(zip(images, labels, strict=True)):
        path = png_file(tmp / f"digit-{i}.png", array)
        with open(path, "rb") as f:
            answer = httpx.post(server_url + "/v1/predict", files={"file": (path, f, "image/png")}).json()
        out.append({"path": path, "label": str(int(label)), "answer": answer})
    out.sort(key=lambda d: -d["answer"]["confidence"])
    assert out[0]["answer"]["label"] == out[0]["label"]
    return out


def noise_jpeg(path: Path, side: int, seed: int) -> str:
    """A photo-sized JPEG (random pixels do not compress: ~0.77 byte per pixel at quality 85)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    path.write_bytes(buf.getvalue())
    return str(path)


def bars(card: Any) -> Any:
    return card.get_by_role("meter")


def test_status_counts_failures_errors_show_no_image_and_a_new_choice_replaces_the_results(
    page: Any, sync_api: Any, digits: list[dict], tmp_path: Path
) -> None:
    expect = sync_api.expect
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    page.set_input_files("#file", [digits[0]["path"], digits[1]["path"], str(broken), str(empty)])
    cards = page.locator(".card")
    expect(cards).to_have_count(4)
    expect(page.locator("#status")).to_contain_text("2 classified, 2 failed", timeout=20_000)
    for i in (0, 1):
        expect(bars(cards.nth(i))).to_have_count(5)  # min(5, 10 classes) by default
        assert cards.nth(i).locator(".bar.top .label span").first.inner_text() == digits[i]["answer"]["label"]
        width = cards.nth(i).locator(".bar.top .fill").evaluate("e => parseFloat(e.style.width)")
        assert 20 < width <= 100
    expect(cards.nth(2).locator(".err")).to_contain_text("not a JPEG/PNG")
    expect(cards.nth(3).locator(".err")).to_contain_text("empty file (0 bytes)")  # said, not silently dropped
    for i in (2, 3):  # an error card has no (empty) image box
        expect(cards.nth(i).locator("img")).to_have_count(0)
        expect(cards.nth(i).locator(".icon")).to_be_visible()
    expect(page.locator("#status")).not_to_have_class("error")  # some answers came back
    shot = tmp_path / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("IMGCLS_SCREENSHOT_DIR"):  # keep it for a human to look at
        shutil.copy(shot, Path(os.environ["IMGCLS_SCREENSHOT_DIR"]) / shot.name)
    assert shot.stat().st_size > 10_000

    # only a failure this time: it is not counted as classified, and the earlier results are gone
    page.set_input_files("#file", [str(broken)])
    expect(page.locator("#status")).to_contain_text("0 classified, 1 failed", timeout=20_000)
    expect(page.locator("#status")).to_have_class("error")
    expect(cards).to_have_count(1)
    expect(cards.nth(0).locator(".err")).to_contain_text("not a JPEG/PNG")


def test_top_k_is_chosen_classes_are_listed_and_bars_are_labelled_meters(
    page: Any, sync_api: Any, digits: list[dict], server_url: str
) -> None:
    expect = sync_api.expect
    classes = httpx.get(server_url + "/v1/model").json()["classes"]
    summary = page.locator("#classes summary")
    expect(summary).to_contain_text(f"{len(classes)} classes")
    page.locator("#classes summary").click()
    expect(page.locator("#classes li")).to_have_text(classes)
    expect(page.locator("#topk option")).to_have_count(len(classes))
    expect(page.locator("#topk")).to_have_value("5")

    page.set_input_files("#file", [digits[0]["path"], digits[1]["path"]])
    cards = page.locator(".card")
    expect(page.locator("#status")).to_contain_text("2 classified", timeout=20_000)
    page.select_option("#topk", "3")  # re-rendered from the answers already there
    for i in (0, 1):
        expect(bars(cards.nth(i))).to_have_count(3)
        top = digits[i]["answer"]["top_k"][0]
        meter = cards.nth(i).get_by_role("meter", name=top["label"], exact=True)  # what a screen reader finds
        expect(meter).to_have_attribute("aria-valuenow", f"{100 * top['probability']:.1f}")
        expect(meter).to_have_attribute("aria-valuetext", f"{100 * top['probability']:.1f}%")
        expect(meter).to_have_attribute("aria-valuemax", "100")
    page.select_option("#topk", str(len(classes)))
    expect(bars(cards.nth(0))).to_have_count(len(classes))
    assert len(page.posts) == 2  # type: ignore[attr-defined]  # choosing k sent nothing again


def test_an_answer_below_the_servers_threshold_is_marked_uncertain(
    page: Any, sync_api: Any, digits: list[dict], server_url: str, tmp_path: Path
) -> None:
    expect = sync_api.expect
    threshold = httpx.get(server_url + "/v1/model").json()["uncertain_below"]
    files = [digits[0]["path"], png_file(tmp_path / "gray.png", np.full((16, 16), 128, np.uint8))]
    files.append(noise_jpeg(tmp_path / "noise.jpg", 64, seed=1))
    page.set_input_files("#file", files)
    cards = page.locator(".card")
    expect(page.locator("#status")).to_contain_text("3 classified", timeout=20_000)
    marked = []
    for i in range(3):
        confidence = float(bars(cards.nth(i)).first.get_attribute("aria-valuenow")) / 100
        mark = cards.nth(i).locator(".uncertain")
        if confidence < threshold:
            expect(mark).to_be_visible()
            assert f"{100 * threshold:.1f}%" in (mark.get_attribute("title") or "")
            marked.append(i)
        else:
            expect(mark).to_have_count(0)
    assert 0 not in marked and marked, "the most confident digit is not marked; a flat gray or noise image is"


def test_phone_photos_are_sent_one_per_request_and_the_one_too_large_is_named(
    page: Any, sync_api: Any, tmp_path: Path
) -> None:
    expect = sync_api.expect
    limit = UPLOAD_LIMIT_MB * 1024 * 1024
    photos = [noise_jpeg(tmp_path / f"IMG_{i}.jpg", 900, seed=i) for i in range(3)]
    assert all(0.4 * limit < Path(p).stat().st_size < limit - 4096 for p in photos)
    assert sum(Path(p).stat().st_size for p in photos) > limit  # together they exceed the request limit
    big = noise_jpeg(tmp_path / "IMG_big.jpg", 1300, seed=9)
    assert Path(big).stat().st_size > limit
    page.set_input_files("#file", [*photos, big])
    cards = page.locator(".card")
    expect(page.locator("#status")).to_contain_text("3 classified, 1 failed", timeout=30_000)
    for i in range(3):
        expect(bars(cards.nth(i))).to_have_count(5)
    expect(cards.nth(3).locator(".err")).to_contain_text("IMG_big.jpg is 1.")
    expect(cards.nth(3).locator(".err")).to_contain_text("at most 1.0 MB")
    posts = page.posts  # type: ignore[attr-defined]
    assert len(posts) == 3 and all("/v1/predict?" in u for u in posts)  # one request per photo, none for the big one


def test_the_favicon_is_an_icon(page: Any) -> None:
    status, kind = page.evaluate(
        "fetch(document.querySelector('link[rel=icon]').href).then(r => [r.status, r.headers.get('content-type')])"
    )
    assert status == 200 and kind.startswith("image/svg+xml")
