"""The prediction log (SQLite WAL, background writer), the W&B mode decision and the settings' edge rules."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from imgcls.data.decode import decode_image
from imgcls.data.stats import image_stats
from imgcls.errors import UsageError
from imgcls.serve.predlog import COLUMNS, TABLE, PredictionLog, PredictionRecord, read_predictions
from imgcls.serve.settings import SETTINGS_ENV, ServeSettings, settings_from_env, settings_to_env
from imgcls.serve.wandb_logger import wandb_mode


def record(i: int, stats=None) -> PredictionRecord:
    return PredictionRecord(
        timestamp=time.time(),
        request_id=f"req-{i}",
        model_name="m",
        model_version="v1",
        model_sha256="ab" * 32,
        width=20 + i,
        height=10,
        format="PNG",
        bytes=123,
        class_id=i % 3,
        label=f"c{i % 3}",
        confidence=0.5,
        top_k=[{"label": f"c{i % 3}", "class_id": i % 3, "probability": 0.5}],
        latency_ms=1.5,
        stats=stats,
    )


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_rows_hold_the_prediction_and_the_image_statistics_of_the_one_function(tmp_path: Path) -> None:
    path = tmp_path / "log" / "predictions.sqlite"
    log = PredictionLog(path)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (10, 20 + i, 3), dtype=np.uint8)) for i in range(5)]
    images.append(Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).convert("P"))  # a palette PNG
    for i, img in enumerate(images):
        log.append(record(i), png(img))
    log.close()
    rows = read_predictions(path)
    assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(6)]
    for row, img in zip(rows, images, strict=True):
        expected = image_stats(decode_image(png(img))).as_dict()  # what the server decoded
        assert {k: row[k] for k in expected} == pytest.approx(expected)
        assert row["top_k"][0]["label"] == row["label"]
    assert (rows[0]["width"], rows[0]["height"], rows[0]["format"], rows[0]["bytes"]) == (20, 10, "PNG", 123)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
    assert names == ["id", *(name for name, _, _ in COLUMNS)]


def test_precomputed_statistics_are_kept_and_no_image_bytes_are_stored(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    stats = image_stats(Image.new("RGB", (300, 300), (10, 200, 30)))
    log.append(record(0, stats=stats), None)
    log.append(record(1), None)  # neither statistics nor an image: a row with NULL statistics
    log.close()
    first, second = read_predictions(path)
    assert first["saturation"] == pytest.approx(stats.saturation)
    assert second["saturation"] is None and second["label"] == "c1"
    assert not any(isinstance(v, bytes) for r in (first, second) for v in r.values())


def test_a_writer_that_falls_behind_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = PredictionLog(
        tmp_path / "p.sqlite", max_pending=2, max_pending_bytes=10_000, on_drop=lambda: dropped.append(1)
    )
    conn = sqlite3.connect(tmp_path / "p.sqlite", timeout=0)
    conn.execute("BEGIN EXCLUSIVE")  # the writer blocks on the lock, so the pipe and then the queue fill up
    big = b"\x00" * 6000
    for i in range(3000):
        log.append(record(i), big if i % 2 else None)
    assert log.dropped > 0
    assert len(dropped) == log.dropped
    conn.rollback()
    conn.close()
    log.close()
    assert len(read_predictions(tmp_path / "p.sqlite")) == 3000 - log.dropped


def test_the_writer_commits_what_it_received_when_the_server_dies(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    for i in range(3):
        log.append(record(i), None)
    deadline = time.monotonic() + 10
    while log.sent < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert log._writer.stdin is not None
    log._writer.stdin.close()  # what the kernel does when the server process is killed
    assert log._writer.wait(10) == 0
    assert len(read_predictions(path)) == 3


def test_an_unwritable_log_path_fails_at_startup(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises((OSError, sqlite3.Error)):
        PredictionLog(blocker / "predictions.sqlite")


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"WANDB_MODE": "offline"}, "offline"),
        ({"WANDB_MODE": "disabled"}, "disabled"),
        ({"WANDB_MODE": "online", "WANDB_API_KEY": "k" * 40}, "online"),
        ({"WANDB_API_KEY": "k" * 40}, "online"),
    ],
)
def test_wandb_mode_is_decided_at_the_edge(env: dict[str, str], mode: str, tmp_path: Path) -> None:
    assert wandb_mode({**env, "NETRC": str(tmp_path / "none")}) == mode


def test_wandb_without_key_and_not_offline_refuses_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        wandb_mode({"NETRC": str(tmp_path / "none")})
    assert "WANDB_MODE=offline" in (info.value.hint or "")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode({"NETRC": str(netrc)}) == "online"


def test_settings_travel_to_workers_without_the_admin_token() -> None:
    settings = ServeSettings(model="m", max_batch=8, admin_token=SecretStr("s3cret"))
    raw = settings_to_env(settings)
    assert "s3cret" not in raw
    back = settings_from_env({SETTINGS_ENV: raw, "IMGCLS_ADMIN_TOKEN": "other"})
    assert back.max_batch == 8
    assert back.admin_token is not None and back.admin_token.get_secret_value() == "other"
    assert settings_from_env({SETTINGS_ENV: raw}).admin_token is None
    assert ServeSettings(model="m").host == "127.0.0.1"


def test_raw_pixel_batches_and_odd_labels_round_trip_through_the_writer(tmp_path: Path) -> None:
    """Many same-sized images (statistics computed a chunk at a time), raw pixels and encoded uploads mixed, and
    labels JSON must escape: every row holds its own image's statistics and the exact prediction."""
    path = tmp_path / "predictions.sqlite"
    log = PredictionLog(path)
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(40)]
    images[7] = Image.new("RGB", (32, 32), (200, 30, 30))  # a flat one among the noisy ones
    label = 'chat "noir" \\ é 猫\n'
    for i, img in enumerate(images):
        rec = record(i)
        rec.label, rec.top_k = label, [{"label": label, "class_id": 1, "probability": 0.25 + i / 1000}]
        log.append(rec, png(img) if i % 3 == 0 else (img.mode, img.size, img.tobytes()))
    log.close()
    rows = read_predictions(path)
    assert len(rows) == len(images)
    for i, (row, img) in enumerate(zip(rows, images, strict=True)):
        assert row["label"] == label and row["top_k"][0]["label"] == label
        assert row["top_k"][0]["probability"] == 0.25 + i / 1000
        expected = image_stats(img).as_dict()
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert rows[7]["contrast"] == pytest.approx(0.0, abs=1e-6) and rows[7]["entropy"] == 0.0
    assert rows[8]["entropy"] > 7.0  # uniform noise: close to 8 bits


def test_a_batch_whose_statistics_fail_falls_back_to_one_image_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer must keep going: if the batched computation raises, each image is tried on its own and only the
    one that fails loses its statistics."""
    from imgcls.serve import predlog

    good = Image.new("RGB", (8, 8), (0, 0, 255))
    bad = Image.new("RGB", (9, 9))

    def batched(images):
        raise MemoryError("simulated")

    def single(image):  # raw RGB pixels reach the statistics as (H, W, 3) arrays
        if (image.shape[:2] if isinstance(image, np.ndarray) else image.size) == (9, 9):
            raise ValueError("simulated")
        return image_stats(image)

    monkeypatch.setattr(predlog, "images_stats", batched)
    monkeypatch.setattr(predlog, "image_stats", single)
    raw = [("RGB", img.size, img.tobytes()) for img in (good, bad)]
    batch = [((), None, raw[0]), ((), (0.1, 0.2, 0.3, 0.4, 0.5), None), ((), None, raw[1]), ((), None, None)]
    out = predlog._batch_stats(batch, 0)
    assert out[0] == image_stats(good).as_dict() and out[0]["saturation"] == pytest.approx(1.0)
    assert out[1] == {"brightness": 0.1, "contrast": 0.2, "saturation": 0.3, "entropy": 0.4, "sharpness": 0.5}
    assert out[2] is None and out[3] is None
