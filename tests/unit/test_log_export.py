"""Exported prediction-log segments: closed, create-only names, and a killed writer's spool published by the next."""

from __future__ import annotations

import json
from pathlib import Path

from imgcls.serve.logexport import SegmentExporter, read_segment_bytes, segment_name, segment_span


def rows(n: int, t0: float = 1_764_650_000.0) -> list[dict]:
    return [{"timestamp": t0 + i, "request_id": f"r{i}", "model_sha256": "ab" * 32} for i in range(n)]


def published(folder: Path) -> list[dict]:
    return [
        json.loads(line) for p in sorted(folder.glob("*.jsonl.gz")) for line in read_segment_bytes(str(p)).splitlines()
    ]


def test_a_segment_is_published_on_close_under_a_name_giving_its_span(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ex = SegmentExporter(str(out), replica="host-1-abcd", every_s=3600, spool=tmp_path / "spool")
    ex.add(rows(3))
    assert not list(out.glob("*.jsonl.gz"))  # nothing visible before the segment closes
    ex.close()
    (name,) = [p.name for p in out.glob("*.jsonl.gz")]
    assert name == segment_name(1_764_650_000.0, 1_764_650_002.0, "host-1-abcd", 0, 0)
    assert segment_span(name) == (1_764_650_000.0, 1_764_650_002.0)
    assert [r["request_id"] for r in published(out)] == ["r0", "r1", "r2"]
    assert not list((tmp_path / "spool").iterdir()) and not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_taken_name_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    taken = out / segment_name(1_764_650_000.0, 1_764_650_001.0, "h-1-aaaa", 0, 0)
    taken.write_bytes(b"someone else's")
    ex = SegmentExporter(str(out), replica="h-1-aaaa", every_s=3600, spool=tmp_path / "spool")
    ex.add(rows(2))
    ex.close()
    assert taken.read_bytes() == b"someone else's"
    assert ex.published == [segment_name(1_764_650_000.0, 1_764_650_001.0, "h-1-aaaa", 0, 1)]


def test_the_spool_of_a_killed_writer_is_published_by_its_replacement(tmp_path: Path) -> None:
    out, spool = tmp_path / "out", tmp_path / "spool"
    dead = SegmentExporter(str(out), replica="h-2-bbbb", every_s=3600, spool=spool)
    dead.add(rows(4))
    dead._file.write(b'{"timestamp": 1, "request')  # killed in the middle of a line
    dead._file.flush()
    # (no close: SIGKILL) the server starts generation 1 with the same replica id and spool
    new = SegmentExporter(str(out), replica="h-2-bbbb", generation=1, every_s=3600, spool=spool)
    assert [r["request_id"] for r in published(out)] == ["r0", "r1", "r2", "r3"]  # torn line dropped
    new.add(rows(2, t0=1_764_660_000.0))
    new.close()
    assert len(published(out)) == 6 and len(list(out.glob("*_1-*.jsonl.gz"))) == 1


def test_the_spool_of_a_killed_server_is_adopted_by_the_next_replica_on_the_host(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that no longer runs: the killed server's
    root, out = tmp_path / "spools", tmp_path / "out"
    gone = f"h-{child.pid}-dead"
    dead = SegmentExporter(str(out), replica=gone, generation=2, every_s=3600, spool=root / gone)
    dead.add(rows(3))  # never closed: server and writer killed together
    alive = f"h-{os.getpid()}-live"  # this process: alive, so its spool is never adopted
    (root / alive).mkdir(parents=True)
    (root / alive / "0-000000.part").write_text(json.dumps(rows(1)[0]) + "\n")
    new = SegmentExporter(str(out), replica="h-999999999-next", every_s=3600, spool=root / "h-999999999-next")
    new.close()
    (name,) = [p.name for p in out.glob("*.jsonl.gz")]
    assert f"_{gone}_2-" in name and [r["request_id"] for r in published(out)] == ["r0", "r1", "r2"]
    assert not (root / gone).exists() and (root / alive / "0-000000.part").exists()


def test_a_segment_that_decompresses_past_the_limit_is_refused_before_it_is_held(tmp_path, monkeypatch):
    import gzip

    import pytest

    from imgcls.drift import logs
    from imgcls.errors import UsageError

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "bomb.jsonl.gz").write_bytes(gzip.compress(b"\n" * (8 << 20)))  # 8 MiB in 8 KB: a gzip bomb
    (folder / "big.jsonl").write_bytes(b"\n" * (2 << 20))
    monkeypatch.setattr(logs, "MAX_SEGMENT_BYTES", 1 << 20)  # (256 MiB in use: stays small)
    with pytest.raises(UsageError, match=r"bomb\.jsonl\.gz: not a prediction-log segment \(it decompresses to more "
                       r"than the 1,048,576 bytes a segment may hold\)"):  # fmt: skip
        logs.read_log(folder / "bomb.jsonl.gz", model_sha256="0" * 64)
    with pytest.raises(UsageError, match=r"big\.jsonl: not a prediction-log segment \(2,097,152 bytes, more than"):
        logs.read_log(folder / "big.jsonl", model_sha256="0" * 64)
    assert read_segment_bytes(str(folder / "bomb.jsonl.gz")) == b"\n" * (8 << 20)  # no limit: as before
