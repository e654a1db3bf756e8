"""Reading the window of a prediction log for `imgcls drift report` and the server's drift monitor: only the
window's rows are read (a log of months costs what the window costs), at most MAX_WINDOW_ROWS of them, the other
models counted over the window's span."""

from __future__ import annotations

import gzip
import json
import logging
import time
from dataclasses import astuple
from pathlib import Path

import pytest

from imgcls.drift import logs
from imgcls.drift.monitor import window_rows
from imgcls.errors import UsageError
from imgcls.serve.logexport import segment_name, segment_span
from imgcls.serve.predlog import COLUMNS, TABLE, PredictionRecord, connect, row

MINE, OTHER = "a" * 64, "b" * 64
STATS = {"brightness": 0.3, "contrast": 0.2, "saturation": 0.0, "entropy": 3.0, "sharpness": 0.1}


def write_log(path: Path, rows: list[tuple[str, float]]) -> None:
    """A server log of one row per (model sha256, timestamp), in that order."""
    conn = connect(path)
    values = []
    for i, (sha, t) in enumerate(rows):
        rec = PredictionRecord(
            timestamp=t, request_id=str(i), model_name="m", model_version="1" if sha == MINE else "2",
            model_sha256=sha, width=16, height=16, format="PNG", bytes=100, class_id=i % 10, label=f"c{i % 10}",
            confidence=0.9, top_k=[{"label": "c0", "class_id": 0, "probability": 0.9}], latency_ms=1.0,
            margin=0.8, pred_entropy=0.3, embedding=[0.1, 0.2],
        )  # fmt: skip
        values.append(row(astuple(rec)[:-1], STATS))
    with conn:
        names = ", ".join(c for c, _, _ in COLUMNS)
        conn.executemany(f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' for _ in COLUMNS)})", values)
    conn.close()


def damage(path: Path, request_ids: list[str]) -> None:
    conn = connect(path)
    with conn:
        conn.executemany(f"UPDATE {TABLE} SET confidence = 7.0 WHERE request_id = ?", [(r,) for r in request_ids])
    conn.close()


def test_last_reads_the_newest_rows_and_never_the_rest_of_the_log(tmp_path: Path) -> None:
    """The whole log was read and checked for a window of its newest rows: a damaged row from months ago
    refused today's report, and a long log took memory and time in proportion to all it held."""
    log = tmp_path / "p.sqlite"
    now = time.time()
    # a row every 10 s, the newest 5 s old: --since's bound falls between rows, however long the test takes
    write_log(log, [(MINE, now - 29995 + 10 * i) for i in range(3000)])
    damage(log, ["0", "1500"])  # old rows, outside the windows below
    window = logs.read_log(log, model_sha256=MINE, last=200)
    assert window.rows == 200
    assert window.first == pytest.approx(now - 1995, abs=1e-3) and window.last == pytest.approx(now - 5, abs=1e-3)
    window = logs.read_log(log, model_sha256=MINE, since="10m")
    assert window.rows == 60 and window.first == pytest.approx(now - 595, abs=1e-3)
    with pytest.raises(UsageError, match=r"row 1501: confidence 7\.0 is not a number from 0 to 1"):
        logs.read_log(log, model_sha256=MINE, last=1600)  # a damaged row inside the window is still refused


def test_a_window_over_the_cap_compares_the_newest_rows_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(logs, "MAX_WINDOW_ROWS", 50)
    log = tmp_path / "p.sqlite"
    write_log(log, [(MINE, 1_000_000.0 + i) for i in range(120)])
    with caplog.at_level(logging.WARNING):
        window = logs.read_log(log, model_sha256=MINE)
    assert window.rows == 50 and window.first == 1_000_070.0 and window.last == 1_000_119.0
    assert "more than 50 rows of this model: the newest 50 are compared" in caplog.text
    assert "choose the window with --since or --last" in caplog.text
    with pytest.raises(UsageError, match="--last 51: a report compares at most 50 rows"):
        logs.read_log(log, model_sha256=MINE, last=51)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert logs.read_log(log, model_sha256=MINE, last=50).rows == 50
    assert "newest" not in caplog.text  # the window asked for: nothing to say


def test_the_cap_holds_across_the_files_of_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_WINDOW_ROWS", 40)
    for k in range(4):  # four replicas' logs, their rows interleaved in time
        write_log(tmp_path / "logs" / f"r{k}.sqlite", [(MINE, 1_000_000.0 + 4 * i + k) for i in range(30)])
    window = logs.read_log(tmp_path / "logs", model_sha256=MINE)
    assert window.rows == 40 and window.first == 1_000_080.0 and window.last == 1_000_119.0
    window = logs.read_log(tmp_path / "logs", model_sha256=MINE, last=7)
    assert window.rows == 7 and window.first == 1_000_113.0


def test_other_models_are_counted_over_the_windows_span(tmp_path: Path) -> None:
    log = tmp_path / "p.sqlite"
    now = time.time()
    old = [(OTHER, now - 5000 + i) for i in range(50)]  # long before the window: a canary long gone
    mine = [(MINE, now - 600 + 2 * i) for i in range(300)]
    new = [(OTHER, now - 300 + i) for i in range(10)]  # a canary during this model's newest 150 rows
    write_log(log, old + mine + new)
    every, canary = {f"m 2 {OTHER[:12]}": 60}, {f"m 2 {OTHER[:12]}": 10}
    assert logs.read_log(log, model_sha256=MINE).other_models == every  # the whole log
    assert logs.read_log(log, model_sha256=MINE, last=100).other_models == {}
    assert logs.read_log(log, model_sha256=MINE, last=200).other_models == canary
    assert logs.read_log(log, model_sha256=MINE, last=700).other_models == every  # all this model's rows
    assert logs.read_log(log, model_sha256=MINE, since="15m").other_models == canary
    assert logs.read_log(log, model_sha256=MINE, since="2h").other_models == every
    rows, others = window_rows(log, MINE, now - 450)  # the server's drift monitor: the same window
    assert len(rows) == 225 and others == canary


def test_a_since_window_the_cap_cut_counts_other_models_from_its_first_compared_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "MAX_WINDOW_ROWS", 100)
    log = tmp_path / "p.sqlite"
    now = time.time()
    mine = [(MINE, now - 600 + 2 * i) for i in range(300)]  # --since 15m holds 300: the newest 100 are compared
    early = [(OTHER, now - 550 + i) for i in range(7)]  # a canary before the first compared row (now - 200)
    late = [(OTHER, now - 100 + i) for i in range(4)]  # and one during the compared rows
    write_log(log, mine + early + late)
    window = logs.read_log(log, model_sha256=MINE, since="15m")
    assert window.rows == 100 and window.other_models == {f"m 2 {OTHER[:12]}": 4}
    rows, others = window_rows(log, MINE, now - 900)  # the server's drift monitor counts the same span
    assert len(rows) == 100 and rows[0]["timestamp"] == window.first and others == window.other_models
    monkeypatch.setattr(logs, "MAX_WINDOW_ROWS", 300)  # exactly full, not cut: the count starts at the cutoff
    assert window_rows(log, MINE, now - 900)[1] == {f"m 2 {OTHER[:12]}": 11}
    assert logs.read_log(log, model_sha256=MINE, since="15m").other_models == {f"m 2 {OTHER[:12]}": 11}


def test_a_model_served_from_a_folder_is_named_by_its_id_once(tmp_path: Path) -> None:
    # no store version: the server logs sha256[:12] as the version, and the report said the id twice
    log = tmp_path / "p.sqlite"
    write_log(log, [(MINE, 1_000_000.0 + i) for i in range(5)] + [(OTHER, 1_000_010.0)])
    with connect(log) as conn:
        conn.execute(f"UPDATE {TABLE} SET model_version = ? WHERE model_sha256 = ?", (OTHER[:12], OTHER))
    assert logs.read_log(log, model_sha256=MINE).other_models == {f"m {OTHER[:12]}": 1}


@pytest.mark.parametrize("since", ["", "  ", "0h", "soon"])
def test_a_since_that_is_no_duration_is_refused_not_read_as_the_whole_log(tmp_path: Path, since: str) -> None:
    # --since '' (an unset shell variable) was taken as no --since at all: the whole log, without a word
    log = tmp_path / "p.sqlite"
    write_log(log, [(MINE, time.time() - 60 + i) for i in range(5)])
    with pytest.raises(UsageError, match=r"is not a duration"):
        logs.read_log(log, model_sha256=MINE, since=since)


def test_an_empty_window_says_why(tmp_path: Path) -> None:
    log = tmp_path / "p.sqlite"
    write_log(log, [(OTHER, 1_000_000.0 + i) for i in range(5)])
    with pytest.raises(UsageError, match=r"none of its 5 rows is from this model \(sha256 aaaaaaaaaaaa…\); it holds "
                       r"5 of m 2 bbbbbbbbbbbb"):  # fmt: skip
        logs.read_log(log, model_sha256=MINE)
    write_log(log, [(MINE, 1_000_100.0)])
    with pytest.raises(UsageError, match=r"--since 1h selects nothing: the newest of this model's 1 rows is from "
                       r"1970-01-12T13:48:20\+00:00"):  # fmt: skip
        logs.read_log(log, model_sha256=MINE, since="1h")
    connect(tmp_path / "empty.sqlite").close()
    with pytest.raises(UsageError, match="holds no predictions yet"):
        logs.read_log(tmp_path / "empty.sqlite", model_sha256=MINE)


@pytest.mark.parametrize("name", ["p?mode=rw.sqlite", "p#1.sqlite", "50%.sqlite"])
def test_a_log_whose_name_looks_like_a_uri_query_is_read(tmp_path: Path, name: str) -> None:
    """The log was opened as the URI file:PATH?mode=ro: a '?' or '#' in its name cut the path short (SQLite opened
    another file, or none)."""
    write_log(tmp_path / "p", [(OTHER, 1.0)])  # what a cut-short name would open instead
    write_log(tmp_path / name, [(MINE, 1_000_000.0 + i) for i in range(3)])
    assert logs.read_log(tmp_path / name, model_sha256=MINE).rows == 3


def write_segment(folder: Path, name: str, rows: list[tuple[str, float]], damaged: float | None = None) -> None:
    """An exported segment (gzip JSON lines) of one row per (model sha256, timestamp); the row at ``damaged`` has a
    confidence no model gives."""
    lines = []
    for i, (sha, t) in enumerate(rows):
        r = {"timestamp": t, "model_name": "m", "model_version": "1" if sha == MINE else "2", "model_sha256": sha,
             **STATS, "class_id": i % 10, "confidence": 7.0 if t == damaged else 0.9,
             "top_k": [{"label": "c0", "class_id": 0, "probability": 0.9}], "margin": 0.8, "pred_entropy": 0.3,
             "embedding": [0.1, 0.2]}  # fmt: skip
        lines.append(json.dumps(r))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(gzip.compress("\n".join(lines).encode()))


def test_last_over_segments_reads_the_newest_segments_and_not_the_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every segment of a prefix was read and checked for a --last window: a report over a fleet's months of
    segments cost all of them, and one damaged segment from long ago refused today's report."""
    t0, out = 1_764_000_000.0, tmp_path / "segments"
    for k in range(12):  # two replicas' segments of 100 s each, their rows interleaved in time
        for replica in (0, 1):
            ts = [t0 + 100 * k + 2 * i + replica for i in range(50)]
            rows = [(OTHER if k == 11 and i < 5 else MINE, t) for i, t in enumerate(ts)]  # a canary, newest segment
            name = segment_name(ts[0], ts[-1], f"host-{replica}", 0, k)
            write_segment(out, name, rows, damaged=ts[0] if k == 0 else None)  # the oldest: damaged
    newest = t0 + 1199
    window = logs.read_log(out, model_sha256=MINE, last=150)
    assert (window.rows, window.first, window.last) == (150, newest - 159, newest)
    assert window.other_models == {f"m 2 {OTHER[:12]}": 10}
    window = logs.read_log(out, model_sha256=MINE, last=1000)  # ten segments' worth: the oldest is still unread
    assert (window.rows, window.first) == (1000, newest - 1009)
    with pytest.raises(UsageError, match=r"line 1: confidence 7\.0 is not a number from 0 to 1"):
        logs.read_log(out, model_sha256=MINE, last=1190)  # a window that reaches the damaged segment
    monkeypatch.setattr(logs, "MAX_WINDOW_ROWS", 300)  # no window given: the cap's newest rows, the same way
    window = logs.read_log(out, model_sha256=MINE)
    assert (window.rows, window.first, window.last) == (300, newest - 309, newest)
    # a segment whose name gives no span is read whatever its age (its rows may be the newest)
    write_segment(out, "by-hand.jsonl.gz", [(MINE, newest + 1 + i) for i in range(3)])
    window = logs.read_log(out, model_sha256=MINE, last=150)
    assert (window.rows, window.first, window.last) == (150, newest - 156, newest + 3)


def test_the_census_counts_the_rows_of_the_windows_snapshot_not_those_appended_after(tmp_path: Path) -> None:
    """The other models were counted in a second read: rows a server appended after the window was read were
    counted beside a window that did not hold them."""
    log = tmp_path / "p.sqlite"
    write_log(log, [(MINE, 1_000_000.0 + i) for i in range(10)] + [(OTHER, 1_000_010.0 + i) for i in range(3)])
    read = logs.sqlite_window(log, MINE, cutoff=None, limit=100)
    write_log(log, [(OTHER, 1_000_020.0 + i) for i in range(5)] + [(MINE, 1_000_030.0)])  # the server goes on
    other = f"m 2 {OTHER[:12]}"
    assert read.census(None) == {"": (10, 1_000_009.0), other: (3, 1_000_012.0)}
    assert read.census(1_000_005.0) == {"": (5, 1_000_009.0), other: (3, 1_000_012.0)}
    connect(tmp_path / "empty.sqlite").close()
    assert logs.sqlite_window(tmp_path / "empty.sqlite", MINE, cutoff=None, limit=10).census(None) == {}


def test_since_over_segments_skips_the_segments_that_ended_before_it(tmp_path: Path) -> None:
    now, out = time.time(), tmp_path / "segments"
    old = [now - 7200 + i for i in range(50)]  # two hours ago, damaged
    new = [now - 600 + 2 * i for i in range(100)]  # the last ten minutes
    write_segment(out, segment_name(old[0], old[-1], "host-0", 0, 0), [(MINE, t) for t in old], damaged=old[3])
    write_segment(out, segment_name(new[0], new[-1], "host-0", 0, 1), [(MINE, t) for t in new])
    window = logs.read_log(out, model_sha256=MINE, since="30m")
    assert window.rows == 100 and window.first == pytest.approx(new[0], abs=1e-3)
    with pytest.raises(UsageError, match=r"line 4: confidence 7\.0 is not a number from 0 to 1"):
        logs.read_log(out, model_sha256=MINE, since="3h")
    with pytest.raises(UsageError, match=r"--since 5m selects nothing: every segment of --log .* ended earlier"):
        logs.read_log(out, model_sha256=MINE, since="5m")  # the newest ended 6.7 minutes ago


def test_a_segment_name_whose_times_are_no_dates_is_read_as_a_segment_without_a_span(tmp_path: Path) -> None:
    # it matched the name's pattern, and its parse raised a ValueError out of the report (a traceback, exit 1)
    now, out = time.time(), tmp_path / "segments"
    name = "20261340T000000Z-20261399T999999Z_host-0_0-000000.jsonl.gz"
    assert segment_span(name) is None
    write_segment(out, name, [(MINE, now - 60 + i) for i in range(5)])
    assert logs.read_log(out, model_sha256=MINE, since="1h").rows == 5
    assert logs.read_log(out, model_sha256=MINE, last=3).rows == 3


def test_json_nested_deeper_than_the_parser_goes_is_a_damaged_row_not_an_unexpected_error(tmp_path: Path) -> None:
    # '[[[[…' a hundred thousand deep: json raised RecursionError, and the report said "unexpected RecursionError"
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "s.jsonl").write_text(deep + "\n")
    with pytest.raises(UsageError, match=r"line 1 is not JSON; this is not a prediction-log segment"):
        logs.read_log(tmp_path / "segments", model_sha256=MINE, last=5)
    log = tmp_path / "p.sqlite"
    write_log(log, [(MINE, 1_000_000.0 + i) for i in range(3)])
    conn = connect(log)
    with conn:
        conn.execute(f"UPDATE {TABLE} SET top_k = ? WHERE request_id = '1'", (deep,))
    conn.close()
    with pytest.raises(UsageError, match=r"row 2: top_k '\[\[\[.*is not a list of \{label, class_id, probability\}"):
        logs.read_log(log, model_sha256=MINE, last=5)
