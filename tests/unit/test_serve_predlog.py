"""The prediction log (SQLite WAL, background writer), the W&B mode decision and the settings' edge rules."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from imgcls.data.stats import image_stats, images_stats, stats_thumbnail
from imgcls.drift.reference import rgb
from imgcls.serve.predlog import _RECORD_FIELDS, COLUMNS, TABLE, PredictionLog, PredictionRecord, read_predictions
from imgcls.serve.settings import SETTINGS_ENV, ServeSettings, settings_from_env, settings_to_env


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


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_rows_hold_the_prediction_and_the_statistics_of_the_model_input(tmp_path: Path) -> None:
    """The server ships stats_thumbnail(model input); each row holds images_stats of that input, exactly as the
    drift reference computes it (grey, colour and larger-than-thumbnail inputs alike)."""
    path = tmp_path / "log" / "predictions.sqlite"
    log = PredictionLog(path)
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 256, (10, 20 + i, 3), dtype=np.uint8) for i in range(4)]
    inputs += [rng.integers(0, 256, (28, 28, 1), dtype=np.uint8), rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)]
    for i, a in enumerate(inputs):
        log.append(record(i), stats_thumbnail(a))
    log.close()
    rows = read_predictions(path)
    assert [r["request_id"] for r in rows] == [f"req-{i}" for i in range(6)]
    for r, a in zip(rows, inputs, strict=True):
        expected = images_stats(rgb(a[None]))[0].as_dict()  # the reference's own call
        assert {k: r[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert r["top_k"][0]["label"] == r["label"]
    assert (rows[0]["width"], rows[0]["height"], rows[0]["format"], rows[0]["bytes"]) == (20, 10, "PNG", 123)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")]
    assert names == ["id", *(name for name, _, _ in COLUMNS)]
    assert log.dropped == 0 and log.restarts == 0


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
    log = PredictionLog(tmp_path / "p.sqlite", max_pending=2, max_pending_bytes=10_000, on_drop=dropped.append)
    conn = sqlite3.connect(tmp_path / "p.sqlite", timeout=0)
    conn.execute("BEGIN EXCLUSIVE")  # the writer blocks on the lock, so the pipe and then the queue fill up
    big = np.zeros((40, 50, 3), dtype=np.uint8)  # 6,000 bytes
    for i in range(3000):
        log.append(record(i), big if i % 2 else None)
    assert log.dropped > 0
    assert sum(dropped) == log.dropped
    conn.rollback()
    conn.close()
    log.close()
    assert len(read_predictions(tmp_path / "p.sqlite")) == 3000 - log.dropped


def test_batches_are_bounded_by_bytes_as_well_as_by_count(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.sqlite", max_batch_bytes=100_000, send_s=0.5)
    conn = sqlite3.connect(tmp_path / "p.sqlite", timeout=0)
    conn.execute("BEGIN EXCLUSIVE")  # hold the writer so the records queue up and leave in full batches
    thumb = np.full((128, 128, 3), 7, dtype=np.uint8)  # 49,152 bytes: two fit in 100,000
    sizes: list[int] = []
    real = log._ship
    log._ship = lambda batch: (sizes.append(len(batch)), real(batch))  # type: ignore[method-assign]
    for i in range(9):
        log.append(record(i), thumb)
    time.sleep(0.2)
    conn.rollback()
    conn.close()
    log.close()
    assert sum(sizes) == 9 and max(sizes) == 2  # 9 records of 49 KB: never more than 100 KB in one frame
    assert len(read_predictions(tmp_path / "p.sqlite")) == 9


def test_a_killed_writer_is_restarted_and_what_it_lost_is_counted(tmp_path: Path) -> None:
    """kill -9 of the writer: the log notices, counts the records the dead writer had not committed, starts a
    new writer, and later records are logged again; records + drops add up to every record appended."""
    path = tmp_path / "p.sqlite"
    restarts: list[int] = []
    log = PredictionLog(path, on_restart=lambda: restarts.append(1))
    for i in range(5):
        log.append(record(i), None)
    wait_for(lambda: len(read_predictions(path)) == 5)
    pid = log.writer_pid
    assert pid is not None and log.writer_up
    conn = sqlite3.connect(path, timeout=0)
    conn.execute("BEGIN EXCLUSIVE")  # the writer holds the next records uncommitted when it is killed
    for i in range(5, 15):
        log.append(record(i), None)
    wait_for(lambda: log.sent == 15)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: log.restarts == 1 and log.writer_up and log.writer_pid != pid)
    conn.rollback()
    conn.close()
    assert restarts == [1]
    for i in range(15, 20):
        log.append(record(i), None)
    log.close()
    ids = [r["request_id"] for r in read_predictions(path)]
    assert ids[:5] == [f"req-{i}" for i in range(5)] and ids[-5:] == [f"req-{i}" for i in range(15, 20)]
    assert log.dropped == 10 and len(ids) == 20 - log.dropped  # the 10 the writer held, nothing else


_CTRL_C_SERVER = """
import sys, time
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)  # a foreground job's; a background one inherits SIG_IGN
from pathlib import Path
sys.path[:0] = [sys.argv[2]]
from test_serve_predlog import record
from imgcls.serve.predlog import PredictionLog
log = PredictionLog(Path(sys.argv[1]))
for i in range(6):
    log.append(record(i), None)
try:  # the parent signals once it has read the line: the print itself may still be running when it lands
    print(log.writer_pid, flush=True)  # the writer is still importing: its signal handlers are not set yet
    time.sleep(60)
except KeyboardInterrupt:
    pass
log.close()
print(log.restarts, log.dropped, flush=True)
"""


def test_ctrl_c_right_after_the_server_started_does_not_kill_the_prediction_log_writer(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group. The writer set SIG_IGN only after its
    imports, so a Ctrl-C in its first few hundred milliseconds killed it and lost what the server had sent it."""
    path = tmp_path / "p.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_SERVER, str(path), str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a shell gives a foreground job
    )
    assert proc.stdout is not None
    writer_pid = int(proc.stdout.readline())
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.split() == ["0", "0"], err  # no restart, nothing dropped
    assert "died" not in err
    assert len(read_predictions(path)) == 6
    with pytest.raises(ProcessLookupError):
        os.kill(writer_pid, 0)  # it ended with its server, after the last record


def test_a_running_writer_ignores_sigterm_and_sigint_sent_to_it(tmp_path: Path) -> None:
    """systemd's stop signals every process of the service's cgroup: the writer must outlive the signal and
    commit what the server ships while it shuts down."""
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    log.append(record(0), None)
    wait_for(lambda: len(read_predictions(path)) == 1)
    pid = log.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    for i in range(1, 4):
        log.append(record(i), None)
    log.close()
    assert log.restarts == 0 and log.dropped == 0
    assert len(read_predictions(path)) == 4


def test_the_writer_commits_what_it_received_when_the_server_dies(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    log = PredictionLog(path)
    for i in range(3):
        log.append(record(i), None)
    wait_for(lambda: log.sent >= 3)
    w = log._writer
    assert w is not None and w.proc.stdin is not None
    w.proc.stdin.close()  # what the kernel does when the server process is killed
    assert w.proc.wait(10) == 0
    assert len(read_predictions(path)) == 3


def test_a_writer_whose_server_died_commits_every_frame_it_was_sent(tmp_path: Path) -> None:
    """The server gone (its end of the acknowledgement pipe closed too), the frames already in the pipe are still
    committed: a failed acknowledgement must not stop the writer."""
    from imgcls.serve.predlog import encode_frame

    path = tmp_path / "p.sqlite"
    cmd = [sys.executable, "-m", "imgcls.serve.predlog", "--db", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdout.close()  # nobody reads the acknowledgements any more
    for i in range(3):
        values = tuple(getattr(record(i), f) for f in _RECORD_FIELDS)
        proc.stdin.write(encode_frame([(values, None, None)]))
    proc.stdin.close()
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert [r["request_id"] for r in read_predictions(path)] == ["req-0", "req-1", "req-2"]


def test_an_unwritable_log_path_fails_at_startup(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises((OSError, sqlite3.Error)):
        PredictionLog(blocker / "predictions.sqlite")


def test_settings_travel_to_workers_without_the_admin_token() -> None:
    settings = ServeSettings(model="m", max_batch=8, admin_token=SecretStr("s3cret"))
    raw = settings_to_env(settings)
    assert "s3cret" not in raw
    back = settings_from_env({SETTINGS_ENV: raw, "IMGCLS_ADMIN_TOKEN": "other"})
    assert back.max_batch == 8
    assert back.admin_token is not None and back.admin_token.get_secret_value() == "other"
    assert settings_from_env({SETTINGS_ENV: raw}).admin_token is None
    assert ServeSettings(model="m").host == "127.0.0.1"


def test_thumbnail_batches_and_odd_labels_round_trip_through_the_writer(tmp_path: Path) -> None:
    """Many same-sized thumbnails (statistics computed a chunk at a time) and labels JSON must escape: every row
    holds its own image's statistics and the exact prediction."""
    path = tmp_path / "predictions.sqlite"
    log = PredictionLog(path)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(40)]
    images[7] = np.asarray(Image.new("RGB", (32, 32), (200, 30, 30)))  # a flat one among the noisy ones
    label = 'chat "noir" \\ é 猫\n'
    for i, img in enumerate(images):
        rec = record(i)
        rec.label, rec.top_k = label, [{"label": label, "class_id": 1, "probability": 0.25 + i / 1000}]
        log.append(rec, img)
    log.close()
    rows = read_predictions(path)
    assert len(rows) == len(images)
    for i, (r, img) in enumerate(zip(rows, images, strict=True)):
        assert r["label"] == label and r["top_k"][0]["label"] == label
        assert r["top_k"][0]["probability"] == 0.25 + i / 1000
        expected = image_stats(img).as_dict()
        assert {k: r[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert rows[7]["contrast"] == pytest.approx(0.0, abs=1e-6) and rows[7]["entropy"] == 0.0
    assert rows[8]["entropy"] > 7.0  # uniform noise: close to 8 bits


def test_a_batch_whose_statistics_fail_falls_back_to_one_image_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer must keep going: if the batched computation raises, each image is tried on its own and only the
    one that fails loses its statistics."""
    from imgcls.serve import predlog

    good = np.asarray(Image.new("RGB", (8, 8), (0, 0, 255)))
    bad = np.zeros((9, 9, 3), dtype=np.uint8)

    def batched(images):
        raise MemoryError("simulated")

    def single(image):
        if image.shape[:2] == (9, 9):
            raise ValueError("simulated")
        return image_stats(image)

    monkeypatch.setattr(predlog, "images_stats", batched)
    monkeypatch.setattr(predlog, "image_stats", single)
    batch = [((), None, good), ((), (0.1, 0.2, 0.3, 0.4, 0.5), None), ((), None, bad), ((), None, None)]
    out = predlog._batch_stats(batch)
    assert out[0] == image_stats(good).as_dict() and out[0]["saturation"] == pytest.approx(1.0)
    assert out[1] == {"brightness": 0.1, "contrast": 0.2, "saturation": 0.3, "entropy": 0.4, "sharpness": 0.5}
    assert out[2] is None and out[3] is None


def test_the_records_margin_and_entropy_are_the_same_from_python_floats_and_numpy() -> None:
    from imgcls.serve.predlog import output_summary

    rng = np.random.default_rng(3)
    for row in [*rng.dirichlet(np.ones(10), 50).astype(np.float32), np.array([0.5, 0.5, 0.0], np.float32)]:
        fast, slow = output_summary(row.tolist()), output_summary(row)  # the server passes row.tolist()
        assert fast.keys() == slow.keys() == {"margin", "pred_entropy"}
        assert fast["margin"] == pytest.approx(slow["margin"], abs=1e-12)
        assert fast["pred_entropy"] == pytest.approx(slow["pred_entropy"], rel=1e-12, abs=1e-12)
    assert output_summary([0.5, 0.5, 0.0]) == {"margin": 0.0, "pred_entropy": pytest.approx(np.log(2))}
