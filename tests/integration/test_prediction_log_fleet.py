"""The prediction log of a real `imgcls serve` process: a writer killed with SIGKILL is restarted and its losses are
counted in /metrics; --log-export writes closed segments to a folder and to GCS (the real client against the
emulator), and one `imgcls drift report --log URI` reads every replica's segments."""

from __future__ import annotations

import array
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from _store_helpers import BUCKET
from test_serve_process import metric, post, serve

from imgcls.bundle import load_bundle
from imgcls.errors import UsageError
from imgcls.serve.logexport import SEGMENT_SUFFIX, read_segment_bytes, segment_span
from imgcls.serve.predlog import read_predictions

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digit_pngs(exported_digits_bundle: Path) -> list[bytes]:
    import io

    from PIL import Image

    with np.load(exported_digits_bundle / "samples" / "val.npz", allow_pickle=False) as d:
        images = d["images"][:40, ..., 0]
    out = []
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def writer_pid(server_pid: int) -> int | None:
    """The pid of the server's prediction-log writer (a child running ``imgcls.serve.predlog``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == server_pid and b"imgcls.serve.predlog" in cmdline and b"\nState:\tZ" not in status.encode():
            return int(entry.name)
    return None


def pipe_bytes_waiting(pid: int) -> int:
    """Bytes sent to a process's stdin pipe that it has not read yet (FIONREAD on the same pipe, via /proc)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return buf[0]
    finally:
        os.close(fd)


def metrics(url: str) -> str:
    return httpx.get(url + "/metrics", timeout=10).text


def imgcls(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )


def test_a_killed_writer_is_restarted_its_losses_counted_and_logging_resumes(
    exported_digits_bundle: Path, tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    log = tmp_path / "predictions.sqlite"
    with serve(exported_digits_bundle, tmp_path, "--log-predictions", str(log)) as server:
        text = metrics(server.url)
        assert metric(text, "imgcls_prediction_log_writer_up") == 1
        assert metric(text, "imgcls_prediction_log_writer_restarts_total") == 0
        before = [post(server.url, png).json()["request_id"] for png in digit_pngs[:5]]
        wait_for(lambda: len(read_predictions(log)) == 5, what="the first 5 rows")

        pid = writer_pid(server.process.pid)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # it reads and commits nothing: the next 10 records wait in its pipe
        try:
            wait_for(lambda: "\nState:\tT" in Path(f"/proc/{pid}/status").read_text(), what="the writer to stop")
            lost = [post(server.url, png) for png in digit_pngs[5:15]]
            assert [r.status_code for r in lost] == [200] * 10  # predictions never wait for the log
            thumb = 16 * 16 * 3  # the digits model's 16x16 input, as the RGB thumbnail the statistics use
            wait_for(lambda: pipe_bytes_waiting(pid) >= 10 * thumb, what="the 10 records in the writer's pipe")
        finally:
            os.kill(pid, signal.SIGKILL)
        wait_for(
            lambda: metric(metrics(server.url), "imgcls_prediction_log_writer_restarts_total") == 1,
            what="the restart",
        )
        text = metrics(server.url)
        assert metric(text, "imgcls_prediction_log_writer_up") == 1
        dropped = int(metric(text, "imgcls_prediction_log_dropped_total"))
        assert dropped >= 1  # at least 10 thumbnails' bytes were in the dead writer's pipe
        new_pid = writer_pid(server.process.pid)
        assert new_pid is not None and new_pid != pid
        after = [post(server.url, png).json()["request_id"] for png in digit_pngs[15:20]]
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    assert f"died (signal 9); {dropped} record(s) it had not committed are lost" in server.stderr()
    ids = [r["request_id"] for r in read_predictions(log)]
    assert ids[:5] == before and ids[-5:] == after  # logging resumed after the restart
    assert set(ids[5:-5]) <= {r.json()["request_id"] for r in lost}  # those sent after the kill, if any
    assert len(ids) + dropped == 20  # every record is either in the log or counted as dropped


def private_spool(tmp_path: Path) -> dict[str, str]:
    """TMPDIR for a test server: its export spool (and any it would adopt from stopped replicas) is its own."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {"TMPDIR": str(tmp_path / "tmp")}


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + SEGMENT_SUFFIX))


def test_log_export_to_a_folder_closed_segments_of_each_replica_read_by_one_report(
    exported_digits_bundle: Path, tmp_path: Path, digit_pngs: list[bytes]
) -> None:
    fleet = tmp_path / "fleet"
    sent = 0
    for replica in range(2):  # two servers, one export folder: the fleet
        with serve(
            exported_digits_bundle, tmp_path, "--log-predictions", "off", "--log-export", str(fleet),
            "--log-export-every", "1", env=private_spool(tmp_path),
        ) as server:  # fmt: skip
            for png in digit_pngs[: 20 + 10 * replica]:
                assert post(server.url, png).status_code == 200
                sent += 1
            if replica == 0:  # a segment closes every interval while the server runs
                wait_for(lambda: len(segments(fleet)) >= 1, what="a closed segment")
                first = segments(fleet)[0].read_bytes()
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(30) == 0
    names = [p.name for p in segments(fleet)]
    replicas = {n.split("_")[1] for n in names}
    assert len(replicas) == 2 and all(segment_span(n) is not None for n in names)
    assert segments(fleet)[0].read_bytes() == first  # never rewritten
    assert not [p for p in fleet.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    rows = [json.loads(line) for p in segments(fleet) for line in read_segment_bytes(str(p)).splitlines()]
    assert len(rows) == sent and all(r["brightness"] is not None and isinstance(r["top_k"], list) for r in rows)
    assert rows[0]["model_sha256"] == load_bundle(exported_digits_bundle).digest

    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(fleet), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sample_sizes"]["current"] == sent  # every replica's rows in one report

    # bad input: a folder without segments, a file that is not a segment, a --since older than every segment
    (tmp_path / "empty").mkdir()
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no prediction logs in this folder" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.jsonl.gz").write_bytes(b"this is not gzip")
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(bad))
    assert r.returncode == 2 and "not a prediction-log segment" in r.stderr and "Traceback" not in r.stderr
    old = tmp_path / "old"
    old.mkdir()
    (old / "20200101T000000Z-20200101T000100Z_h-1-aaaa_0-000000.jsonl.gz").write_bytes(segments(fleet)[0].read_bytes())
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", str(old), "--since", "1h")
    assert r.returncode == 2 and "--since 1h selects nothing" in r.stderr and "Traceback" not in r.stderr


def test_log_export_to_gcs_create_only_segments_and_a_report_over_the_prefix(
    exported_digits_bundle: Path, tmp_path: Path, digit_pngs: list[bytes], gcs_emulator
) -> None:
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    uri = f"gs://{BUCKET}/{prefix}/"
    env = {"STORAGE_EMULATOR_HOST": gcs_emulator.url, **private_spool(tmp_path)}
    with serve(
        exported_digits_bundle, tmp_path, "--log-predictions", "off", "--log-export", uri, env=env
    ) as server:  # fmt: skip
        for png in digit_pngs[:30]:
            assert post(server.url, png).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0  # the last segment is published at shutdown
    uploads = [u for u in gcs_emulator.uploads(prefix + "/") if u.get("name", "").endswith(SEGMENT_SUFFIX)]
    assert uploads and all(u["precondition"] == "0" for u in uploads)  # create-only

    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", uri, "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sample_sizes"]["current"] == 30

    # a --since window lists the prefix from the segments that began two days before it: the year of segments
    # before was listed whole (~1,000 objects a page) on every report. A damaged segment of last week is not even
    # listed, nor read.
    from imgcls.serve.logexport import segment_name
    from imgcls.store.gcs import make_client

    week_ago = time.time() - 7 * 86400
    old = f"{prefix}/{segment_name(week_ago, week_ago + 300, 'host-0', 0, 0)}"
    make_client().bucket(BUCKET).blob(old).upload_from_string(b"not json\n")
    del gcs_emulator.requests[:]
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", uri, "--since", "1h",
               "--format", "json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sample_sizes"]["current"] == 30
    (listing,) = [q for q in gcs_emulator.requests if "items" in q]
    assert listing["q_startOffset"].startswith(f"{prefix}/2") and listing["q_startOffset"] < min(
        u["name"] for u in uploads
    )
    assert int(listing["items"]) == len(uploads)  # this hour's segments, not last week's
    # --last lists the prefix back from today, a span at a time, only as far as the window's rows go: the same
    # week-old segment is neither listed nor read (the whole prefix was listed on every report)
    del gcs_emulator.requests[:]
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", uri, "--last", "10",
               "--format", "json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sample_sizes"]["current"] == 10
    listings = [q for q in gcs_emulator.requests if "items" in q]
    assert all(q["q_startOffset"] > old for q in listings), listings
    assert sum(int(q["items"]) for q in listings) == len(uploads)  # each of today's segments listed once
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", uri, env=env)
    assert r.returncode == 2 and "line 1 is not JSON" in r.stderr  # the whole log: listed back to the oldest
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", uri, "--since", "30d", env=env)
    assert r.returncode == 2 and "line 1 is not JSON" in r.stderr  # a month's window lists and reads it
    stale = f"stale-{uuid.uuid4().hex[:8]}"  # a prefix of last week's segment only: nothing listed from 1h - 2 days
    make_client().bucket(BUCKET).blob(f"{stale}/{old.split('/')[-1]}").upload_from_string(b"not json\n")
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", f"gs://{BUCKET}/{stale}/",
               "--since", "1h", env=env)  # fmt: skip
    assert r.returncode == 2 and "every segment of --log" in r.stderr and "ended earlier" in r.stderr, r.stderr

    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", f"gs://{BUCKET}/nothing-here/",
               env=env)  # fmt: skip
    assert r.returncode == 2 and "no prediction-log segments under this prefix" in r.stderr
    r = imgcls("drift", "report", "--model", str(exported_digits_bundle), "--log", f"gs://{BUCKET}/nothing-here/",
               "--since", "1h", env=env)  # fmt: skip
    assert r.returncode == 2 and "no prediction-log segments under this prefix" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_gcs_object_under_the_prefix_is_fetched_no_further_than_a_segments_limit(gcs_emulator) -> None:
    """The object was downloaded whole before its size was checked: one huge object under the prefix (a
    misdirected upload, a hostile one) took the report's memory and bandwidth before it was refused."""
    from imgcls.store.gcs import make_client

    key = f"fleet-{uuid.uuid4().hex[:8]}/big.jsonl"
    make_client().bucket(BUCKET).blob(key).upload_from_string(b"\n" * (3 << 20))
    with pytest.raises(ValueError, match="more than the 1,048,576 "):
        read_segment_bytes(f"gs://{BUCKET}/{key}", limit=1 << 20)
    fetched = [r for r in list(gcs_emulator.requests) if r["path"].endswith(key.replace("/", "%2F"))]
    assert fetched and all(int(r["sent"]) <= (1 << 20) + 1 for r in fetched), fetched
    assert read_segment_bytes(f"gs://{BUCKET}/{key}") == b"\n" * (3 << 20)  # no limit: the whole object


def test_an_unusable_export_uri_refuses_to_start(exported_digits_bundle: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = imgcls("serve", "--model", str(exported_digits_bundle), "--log-export", str(blocker / "segments"))
    assert r.returncode == 2 and "--log-export" in r.stderr and "Traceback" not in r.stderr


def test_sqlite_rows_match_exported_rows(exported_digits_bundle: Path, tmp_path: Path, digit_pngs: list[bytes]) -> None:
    """With both sinks, the SQLite log and the exported segments hold the same predictions."""
    log, fleet = tmp_path / "p.sqlite", tmp_path / "fleet"
    with serve(
        exported_digits_bundle, tmp_path, "--log-predictions", str(log), "--log-export", str(fleet),
        env=private_spool(tmp_path),
    ) as server:  # fmt: skip
        for png in digit_pngs[:12]:
            assert post(server.url, png).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
    exported = [json.loads(line) for p in segments(fleet) for line in read_segment_bytes(str(p)).splitlines()]
    conn = sqlite3.connect(log)
    stored = [r[0] for r in conn.execute("SELECT request_id FROM predictions ORDER BY id")]
    conn.close()
    assert [r["request_id"] for r in exported] == stored and len(stored) == 12


def test_a_huge_upload_costs_the_writer_nothing_and_logs_the_statistics_of_the_model_input(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    """A 6000x6000 16-bit PNG (~75 KB on the wire) once pushed the writer to 937 MB by being decoded again there;
    now the server sends a thumbnail of the model input, and the row holds exactly the statistics the drift
    reference computes for that input."""
    import io

    from PIL import Image

    from imgcls.data.stats import images_stats
    from imgcls.drift.reference import rgb
    from imgcls.runtime import Predictor

    arr = np.zeros((6000, 6000), dtype=np.uint16)
    arr[::7] = 40000
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    big = buf.getvalue()
    log = tmp_path / "p.sqlite"
    with serve(exported_digits_bundle, tmp_path, "--log-predictions", str(log)) as server:
        pid = writer_pid(server.process.pid)
        assert pid is not None
        for _ in range(2):
            assert post(server.url, big, timeout=120).status_code == 200
        wait_for(lambda: len(read_predictions(log)) == 2, what="the rows")
        status = Path(f"/proc/{pid}/status").read_text()
        peak_mib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    assert peak_mib < 200, f"the writer peaked at {peak_mib:.0f} MiB"
    predictor = Predictor.from_bundle(exported_digits_bundle)
    model_input = predictor.prepare(predictor.decode(big))
    expected = images_stats(rgb(model_input[None]))[0].as_dict()  # as build_reference computes it
    row = read_predictions(log)[0]
    assert (row["width"], row["height"]) == (6000, 6000)
    assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-6, abs=1e-9)


_RECORD = {"model_name": "m", "model_version": "1", "model_sha256": "a" * 64, "brightness": 0.3, "contrast": 0.2,
           "saturation": 0.0, "entropy": 3.0, "sharpness": 0.1, "class_id": 1, "confidence": 0.9,
           "top_k": [{"label": "c1", "class_id": 1, "probability": 0.9}], "margin": 0.8,
           "pred_entropy": 0.3}  # fmt: skip


def _upload_segment(prefix: str, first: float, rows: int, seq: int, damaged: bool = False) -> None:
    """A segment of ``rows`` rows of one model, one a second from ``first``, uploaded under ``prefix``."""
    import gzip

    from imgcls.serve.logexport import segment_name
    from imgcls.store.gcs import make_client

    ts = [first + i for i in range(rows)]
    lines = [json.dumps({"timestamp": t, **_RECORD}) for t in ts]
    body = b"not json\n" if damaged else gzip.compress("\n".join(lines).encode())
    make_client().bucket(BUCKET).blob(f"{prefix}/{segment_name(ts[0], ts[-1], 'host-0', 0, seq)}").upload_from_string(
        body
    )


def test_last_over_gcs_lists_back_from_today_only_as_far_as_the_window_goes(gcs_emulator, monkeypatch) -> None:
    """--last and the cap listed every object of the prefix on every report (~300 listing pages for a year of a
    fleet's segments): it lists back from today a span at a time, twice as long each time, and stops once the
    window is full. A store that ignores the listing's offsets (the emulator itself) still reads each segment once."""
    from imgcls.drift import logs

    prefix, now = f"days-{uuid.uuid4().hex[:8]}", time.time()
    for seq, days in enumerate((40, 10, 3, 0.5)):  # 100 rows each; the one of 40 days ago is damaged
        _upload_segment(prefix, now - days * 86400, 100, seq, damaged=days == 40)
    uri = f"gs://{BUCKET}/{prefix}/"
    del gcs_emulator.requests[:]
    window = logs.read_log(uri, model_sha256="a" * 64, last=150)
    assert window.rows == 150 and window.first == pytest.approx(now - 3 * 86400 + 50, abs=0.01)
    listings = [q for q in gcs_emulator.requests if "items" in q]
    assert sum(int(q["items"]) for q in listings) == 2  # today's and three days ago: not the older ones
    window = logs.read_log(uri, model_sha256="a" * 64, last=250)  # back to ten days ago, not to forty
    assert window.rows == 250 and window.first == pytest.approx(now - 10 * 86400 + 50, abs=0.01)
    with pytest.raises(UsageError, match="line 1 is not JSON"):
        logs.read_log(uri, model_sha256="a" * 64)  # the whole log: every segment, back to the oldest
    # a segment by hand whose name sorts before every stamp: listed once, at the end of the prefix's names
    import gzip

    from imgcls.store.gcs import make_client

    hand = [json.dumps({"timestamp": now - 100 * 86400 + i, **_RECORD}) for i in range(5)]
    odd = f"odd-{uuid.uuid4().hex[:8]}"
    make_client().bucket(BUCKET).blob(f"{odd}/0-by-hand.jsonl.gz").upload_from_string(
        gzip.compress("\n".join(hand).encode())
    )
    _upload_segment(odd, now - 3600, 100, 0)
    assert logs.read_log(f"gs://{BUCKET}/{odd}/", model_sha256="a" * 64).rows == 105
    assert logs.read_log(f"gs://{BUCKET}/{odd}/", model_sha256="a" * 64, last=100).rows == 100
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{gcs_emulator.upstream_port}")  # no offsets
    window = logs.read_log(uri, model_sha256="a" * 64, last=150)
    assert window.rows == 150 and window.first == pytest.approx(now - 3 * 86400 + 50, abs=0.01)  # no row twice
