"""The prediction log: every prediction appended to SQLite (WAL mode) and/or exported as segments
(``--log-export``, :mod:`imgcls.serve.logexport`), written by a separate writer process.

The request path only puts a record on an in-memory queue (no I/O). The image statistics are those of the
MODEL'S INPUT (the upload decoded and prepared by the bundle's transform, the definition the drift reference
uses; see :mod:`imgcls.data.stats`): the server's decoding thread makes its thumbnail
(:func:`~imgcls.data.stats.stats_thumbnail`, at most 128 px a side, usually the model's own size) and the record
carries those pixels. A sender thread ships the records in batches bounded by count and by bytes
(``max_batch_items``, ``max_batch_bytes``) over a pipe (a JSON header and raw bytes: no pickle) to a writer
process (this module run as ``__main__``, in a process group of its own and ignoring SIGINT and SIGTERM: the
server stops it by closing the pipe), which computes the statistics a batch at a time with
:func:`~imgcls.data.stats.images_stats` and appends the rows. The writer never decodes an upload, so its memory
is bounded by the batch (at most ``max_batch_bytes`` of thumbnails) whatever is uploaded, and the statistics'
CPU time stays off the server's GIL.

Supervision and the loss window: the writer acknowledges every batch once it is committed (and spooled for
the export). A writer that dies (``kill -9``, OOM kill, a crash) is noticed by the sender at once (its pipe
closes), the records it had been sent but had not acknowledged are counted as lost, and a new writer is
started (after 0.5 s, doubling up to 30 s while writers keep dying within 10 s of their start). While no
writer runs, records wait in the queue and are dropped, and counted, once it is full. So every record that
does not reach the log is counted in ``imgcls_prediction_log_dropped_total`` (a full queue, a dead writer,
repeated SQLite errors); ``imgcls_prediction_log_writer_up`` is 0 while no writer runs and
``imgcls_prediction_log_writer_restarts_total`` counts the restarts. The sender ships a batch at least every
``send_s`` (50 ms); the writer commits each batch in WAL mode with ``synchronous=NORMAL``. A clean shutdown
(SIGTERM, Ctrl-C) flushes everything. A crash of the server process itself loses the records not yet shipped
(at most the last ~50 ms of predictions plus what was queued behind a slow disk), uncounted since the counter
dies with it; the writer notices the closed pipe, commits what it received and exits. A power loss can also
lose the last committed transactions (``synchronous=NORMAL``), never corrupt the database. When the writer
falls ``max_pending`` records (or ``max_pending_bytes``) behind, new records are dropped and counted, so a
slow disk never grows the server's memory or slows its answers. No image bytes are stored.

Table ``predictions`` (one row per predicted image): see :data:`COLUMNS`.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import os
import queue
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import orjson

from imgcls.data.stats import STAT_NAMES, ImageStats, image_stats, images_stats
from imgcls.prediction import SMALL_ROW

logger = logging.getLogger(__name__)

TABLE = "predictions"
# name, SQLite type, meaning
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("timestamp", "REAL NOT NULL", "Unix time (seconds, UTC) of the answer"),
    ("request_id", "TEXT NOT NULL", "the request's id (X-Request-ID); a batch request shares one"),
    ("model_name", "TEXT NOT NULL", "bundle name"),
    ("model_version", "TEXT NOT NULL", "store version, else the first 12 hex digits of the bundle digest"),
    ("model_sha256", "TEXT NOT NULL", "sha256 of the bundle manifest (identifies every file)"),
    ("width", "INTEGER", "original width in pixels"),
    ("height", "INTEGER", "original height in pixels"),
    ("format", "TEXT", "decoded format: JPEG, PNG or WEBP"),
    ("bytes", "INTEGER", "size of the uploaded file"),
    ("brightness", "REAL", "mean luma 0..1 (imgcls.data.stats.image_stats)"),
    ("contrast", "REAL", "std of luma"),
    ("saturation", "REAL", "mean HSV saturation 0..1"),
    ("entropy", "REAL", "luma histogram entropy, bits"),
    ("sharpness", "REAL", "variance of the luma Laplacian"),
    ("class_id", "INTEGER NOT NULL", "predicted class index"),
    ("label", "TEXT NOT NULL", "predicted class name"),
    ("confidence", "REAL NOT NULL", "probability of the predicted class"),
    ("top_k", "TEXT NOT NULL", 'JSON list of {"label", "class_id", "probability"}'),
    ("latency_ms", "REAL NOT NULL", "time from the request's arrival to its answer"),
    ("margin", "REAL", "top-1 minus top-2 probability"),
    ("pred_entropy", "REAL", "entropy of the probabilities, nats"),
    ("embedding", "TEXT", "JSON list: the model's embedding output (PCA of the penultimate features), if any"),
)
# columns added after the first release: ``connect`` adds them to an older log (ALTER TABLE ADD COLUMN)
_ADDED_COLUMNS = ("margin", "pred_entropy", "embedding")
StatsSource = np.ndarray  # the thumbnail the statistics are computed from: uint8 (H, W, 3), <= 128 px a side
Item = tuple[Sequence[Any], Sequence[float] | None, StatsSource | None]  # record values, statistics, source
_FRAME = struct.Struct("<I")  # frame: total length, header length, JSON header, the thumbnails' bytes
_ACK = struct.Struct("<II")  # the writer's answer to each frame: records committed, records lost
RESTART_FIRST_S = 0.5  # the first restart of a dead writer waits this long; doubling while writers die young
RESTART_MAX_S = 30.0
YOUNG_S = 10.0  # a writer that dies within this of its start counts towards the backoff


@dataclass
class PredictionRecord:
    """One prediction, as the request path knows it; the writer fills in the image statistics."""

    timestamp: float
    request_id: str
    model_name: str
    model_version: str
    model_sha256: str
    width: int
    height: int
    format: str | None
    bytes: int
    class_id: int
    label: str
    confidence: float
    top_k: list[dict[str, Any]]
    latency_ms: float
    margin: float | None = None
    pred_entropy: float | None = None
    embedding: list[float] | None = None
    stats: ImageStats | None = None


def output_summary(probabilities: np.ndarray | list[float]) -> dict[str, float]:
    """``margin`` (top-1 minus top-2) and ``pred_entropy`` (nats) of one probability row, for a record.

    A small row given as Python floats (``row.tolist()``, as the server has it) is summed in Python: a handful
    of numpy calls per request cost more than the arithmetic, and each may release the event loop's GIL.
    """
    if isinstance(probabilities, list) and 1 < len(probabilities) <= SMALL_ROW:
        first, second = heapq.nlargest(2, probabilities)
        entropy = -sum(v * math.log(v) for v in probabilities if v > 0)
        return {"margin": first - second, "pred_entropy": entropy}
    p = np.asarray(probabilities, dtype=np.float64)
    top2 = np.partition(p, p.size - 2)[-2:] if p.size > 1 else np.array([0.0, p[0]])
    entropy = float(-(p * np.log(np.where(p > 0, p, 1.0))).sum())
    return {"margin": float(top2[1] - top2[0]), "pred_entropy": entropy}


_RECORD_FIELDS = [f.name for f in fields(PredictionRecord) if f.name != "stats"]


def row(values: tuple[Any, ...], stats: dict[str, float] | None) -> tuple[Any, ...]:
    """A table row from a record's field values (without ``stats``) and its statistics."""
    record = dict(zip(_RECORD_FIELDS, values, strict=True))
    return (
        *(record[name] for name in _RECORD_FIELDS[:9]),
        *((stats[name] if stats is not None else None) for name in STAT_NAMES),
        record["class_id"],
        record["label"],
        record["confidence"],
        orjson.dumps(record["top_k"]).decode(),
        record["latency_ms"],
        record["margin"],
        record["pred_entropy"],
        None if record["embedding"] is None else orjson.dumps(record["embedding"]).decode(),
    )


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) the log database in WAL mode with the ``predictions`` table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")  # several server workers may write the same file
    columns = ",\n  ".join(f"{name} {kind}" for name, kind, _ in COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (\n  id INTEGER PRIMARY KEY,\n  {columns}\n)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_timestamp ON {TABLE}(timestamp)")
    have = {r[1] for r in conn.execute(f"PRAGMA table_info({TABLE})")}
    kinds = {name: kind for name, kind, _ in COLUMNS}
    for name in _ADDED_COLUMNS:
        if name not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another worker added it first
                conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {kinds[name]}")
    conn.commit()
    return conn


def read_predictions(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of the log as dicts, oldest first (``top_k`` parsed)."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        sql = f"SELECT * FROM {TABLE} ORDER BY id" + (f" LIMIT {int(limit)}" if limit else "")
        rows = [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()
    for r in rows:
        r["top_k"] = json.loads(r["top_k"])
        if r.get("embedding"):
            r["embedding"] = json.loads(r["embedding"])
    return rows


def export_row(table_row: tuple[Any, ...]) -> dict[str, Any]:
    """A table row as the JSON object of an exported segment (``top_k`` and ``embedding`` as lists)."""
    out = dict(zip((name for name, _, _ in COLUMNS), table_row, strict=True))
    out["top_k"] = json.loads(out["top_k"])
    if out["embedding"] is not None:
        out["embedding"] = json.loads(out["embedding"])
    return out


def new_replica_id() -> str:
    """This server process's name in exported segment names: host, pid and 4 random hex digits."""
    host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{os.urandom(2).hex()}"


# The writer ignores SIGINT and SIGTERM from its first line, before its imports (numpy, sqlite3, PIL) take their
# few hundred milliseconds: a signal sent to the whole cgroup (systemd's stop) must not end it before the server
# has shipped its last records. `-m imgcls.serve.predlog` set them only after those imports.
_LAUNCH = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "import runpy; runpy.run_module('imgcls.serve.predlog', run_name='__main__', alter_sys=True)"
)

_STOP = object()
_WAKE = object()  # put on the queue by an ack reader that saw its writer die: the sender restarts it at once


class _Writer:
    """One writer process and the thread reading its acknowledgements."""

    def __init__(self, cmd: list[str], on_lost: Callable[[int], None]) -> None:
        self.started = time.monotonic()
        # Its own process group: a terminal's Ctrl-C and `kill -INT -PGID` reach the server, which then closes the
        # pipe; a signal that reached the writer while it was still importing (before _LAUNCH ignores them) killed it.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
        self.shipped = 0  # records in frames fully written to the pipe
        self.acked = 0  # records the writer answered for (committed or lost)
        self.lock = threading.Lock()
        self.on_lost = on_lost
        self.on_exit: Callable[[], None] | None = None
        self.reader = threading.Thread(target=self._read_acks, name="imgcls-prediction-log-acks", daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None and self.reader.is_alive()

    def _read_acks(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            data = out.read(_ACK.size)
            if len(data) < _ACK.size:
                break
            committed, lost = _ACK.unpack(data)
            with self.lock:
                self.acked += committed + lost
            if lost:
                self.on_lost(lost)
        if self.on_exit is not None:
            self.on_exit()

    def unanswered(self) -> int:
        """After the process ended and its acks were read: records sent to it and never committed."""
        self.reader.join(10)
        with self.lock:
            return max(0, self.shipped - self.acked)


class PredictionLog:
    """Ships :class:`PredictionRecord` s to a supervised writer process; never blocks or raises on the request path.

    Example:
        log = PredictionLog(Path("predictions.sqlite"))
        log.append(record, stats_thumbnail(model_input))   # statistics computed by the writer from the thumbnail
        log.close()                                        # flushes, waits for the writer
    """

    def __init__(
        self,
        path: Path | None,
        *,
        export: str | None = None,
        export_every_s: float = 300.0,
        replica: str | None = None,
        send_s: float = 0.05,
        max_pending: int = 4096,
        max_pending_bytes: int = 64 << 20,
        max_batch_items: int = 512,
        max_batch_bytes: int = 4 << 20,
        on_drop: Callable[[int], Any] | None = None,
        on_restart: Callable[[], Any] | None = None,
    ) -> None:
        if path is None and export is None:
            raise ValueError("a prediction log needs an SQLite path, an export URI or both")
        self.path = Path(path) if path is not None else None
        self.export = export
        self.replica = replica or new_replica_id()
        self.send_s = send_s
        self.on_drop = on_drop
        self.on_restart = on_restart
        self.max_pending_bytes = max_pending_bytes
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_batch_bytes
        self.sent = 0
        self.dropped = 0
        self.restarts = 0
        self._pending_bytes = 0
        self._bytes_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._closing = threading.Event()
        self._carry: Item | None = None  # taken off the queue past a batch's byte budget: the next batch's first
        self._quick_deaths = 0
        if self.path is not None:
            connect(self.path).close()  # fail at startup, not in the writer, when the path is unusable
        self._export_every_s = export_every_s
        self._writer: _Writer | None = self._start_writer(0)
        self._thread = threading.Thread(target=self._send_loop, name="imgcls-prediction-log", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------------------------------

    def append(self, record: PredictionRecord, source: StatsSource | None = None) -> None:
        """Queue one record. The writer computes its statistics (unless ``record.stats`` is set) from ``source``,
        the thumbnail of the model's input (:func:`imgcls.data.stats.stats_thumbnail`)."""
        size = 0 if source is None else source.nbytes
        if self._pending_bytes + size <= self.max_pending_bytes:
            stats = astuple(record.stats) if record.stats is not None else None
            values = tuple(getattr(record, name) for name in _RECORD_FIELDS)
            try:
                self._queue.put_nowait((values, stats, source))
                if size:
                    with self._bytes_lock:
                        self._pending_bytes += size
                return
            except queue.Full:
                pass
        self._drop(1, "the writer is behind")

    @property
    def writer_up(self) -> bool:
        """Whether a writer process is running now (``imgcls_prediction_log_writer_up``)."""
        w = self._writer
        return w is not None and w.alive()

    @property
    def writer_pid(self) -> int | None:
        w = self._writer
        return w.pid if w is not None and w.alive() else None

    def close(self, timeout: float = 30.0) -> None:
        """Ship everything queued, let the writer commit it and exit."""
        self._closing.set()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        w = self._writer
        if w is None:
            return
        try:
            w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error("the prediction log writer did not finish in %.0f s; killing it", timeout)
            w.proc.kill()
            w.proc.wait(10)
        lost = w.unanswered()
        if lost:
            self._drop(lost, "the writer stopped before committing them")

    # -- the sender thread --------------------------------------------------------------------------------

    def _drop(self, n: int, why: str) -> None:
        with self._drop_lock:
            before = self.dropped
            self.dropped += n
        if self.on_drop is not None:
            self.on_drop(n)
        if before == 0 or before // 1000 != self.dropped // 1000 or n > 1 or self.dropped in (10, 100):
            logger.warning("prediction log: %d record(s) dropped (%s); %d so far", n, why, self.dropped)

    def _start_writer(self, generation: int) -> _Writer:
        cmd = [sys.executable, "-c", _LAUNCH, "--db", str(self.path or "")]
        if self.export is not None:
            cmd += ["--export", self.export, "--every", str(self._export_every_s), "--replica", self.replica]
            cmd += ["--generation", str(generation)]
        w = _Writer(cmd, lambda n: self._drop(n, "the writer could not store them"))

        def wake() -> None:
            if not self._closing.is_set():
                with contextlib.suppress(queue.Full):
                    self._queue.put_nowait(_WAKE)

        w.on_exit = wake
        return w

    def _replace_dead_writer(self) -> _Writer:
        """Count what the dead writer lost, wait out the backoff, start a new one."""
        dead = self._writer
        assert dead is not None
        dead.proc.wait()
        lost = dead.unanswered()
        code = dead.proc.returncode
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        young = time.monotonic() - dead.started < YOUNG_S
        self._quick_deaths = self._quick_deaths + 1 if young else 0
        delay = min(RESTART_MAX_S, RESTART_FIRST_S * 2 ** max(0, self._quick_deaths - 1))
        logger.error(
            "the prediction log writer (pid %d) died (%s); %d record(s) it had not committed are lost; "
            "restarting it in %.1f s",
            dead.pid, how, lost, delay,
        )  # fmt: skip
        if lost:
            self._drop(lost, "the writer died")
        self._writer = None
        self._closing.wait(delay)  # a closing log restarts at once, to flush what is queued
        self.restarts += 1
        self._writer = self._start_writer(self.restarts)
        if self.on_restart is not None:
            self.on_restart()
        return self._writer

    def _take(self, block: bool = True) -> tuple[list[Item], bool]:
        """The next batch: at most ``max_batch_items`` records and ``max_batch_bytes`` of thumbnails (a single
        larger record goes alone), gathered for at most ``send_s`` after its first record; and whether the stop
        sentinel came."""
        batch: list[Item] = []
        size = 0
        if self._carry is not None:
            batch.append(self._carry)
            size = _size(self._carry[2])
            self._carry = None
        deadline = time.monotonic() + self.send_s
        while len(batch) < self.max_batch_items and size < self.max_batch_bytes:
            try:
                if not batch and block:
                    item = self._queue.get()
                    deadline = time.monotonic() + self.send_s
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Sleep, then take what came: a thread waiting on the queue is woken by every put, that is by
                # every request, and each wake-up takes the GIL from the event loop for one record.
                time.sleep(remaining)
                continue
            if item is _STOP:
                return batch, True
            if item is _WAKE:
                if not batch:
                    break  # back to the loop, which replaces the dead writer
                continue
            s = _size(item[2])
            if batch and size + s > self.max_batch_bytes:
                self._carry = item
                break
            batch.append(item)
            size += s
        return batch, False

    def _send_loop(self) -> None:
        stopping = False
        while True:
            try:
                w = self._writer
                if w is not None and not w.alive():
                    self._replace_dead_writer()
                if stopping and self._carry is None:
                    break
                batch, stop = self._take(block=not stopping)
                stopping = stopping or stop
                if batch:
                    self._ship(batch)
            except Exception:  # the sender must outlive any bug: a dead sender would log nothing, silently
                logger.exception("prediction log sender error")
                time.sleep(0.1)
        if self._writer is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self._writer.proc.stdin is not None
                self._writer.proc.stdin.close()

    def _ship(self, batch: list[Item]) -> None:
        size = sum(_size(source) for _, _, source in batch)
        if size:
            with self._bytes_lock:
                self._pending_bytes -= size
        frame = encode_frame(batch)
        for _ in range(2):  # the writer it was meant for, then (once) its replacement
            w = self._writer
            if w is None:
                break
            if not w.alive():
                w = self._replace_dead_writer()
            try:
                assert w.proc.stdin is not None
                w.proc.stdin.write(frame)
                w.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                # the writer died before reading this frame whole, so it commits none of it: ship it to the next
                try:
                    w.proc.wait(5)
                except subprocess.TimeoutExpired:  # a writer that closed its input but lives on: replace it
                    w.proc.kill()
                    w.proc.wait(5)
                continue
            with w.lock:
                w.shipped += len(batch)
            self.sent += len(batch)
            return
        self._drop(len(batch), "no writer is running")


def _size(source: Any) -> int:
    return 0 if source is None else int(source.nbytes)


# --- the writer process ----------------------------------------------------------------------------------


def encode_frame(batch: list[Item]) -> bytes:
    """One frame for the writer: JSON for the records (no pickle, even between our own processes), then the
    thumbnails' pixels back to back; the header gives each thumbnail's height and width."""
    head: list[Any] = []
    blobs: list[bytes] = []
    for values, stats, source in batch:
        described: list[int] | None = None
        if source is not None:
            thumb = np.ascontiguousarray(source, dtype=np.uint8)
            if thumb.ndim != 3 or thumb.shape[2] != 3:
                thumb = np.ascontiguousarray(_as_rgb(thumb))
            described = [int(thumb.shape[0]), int(thumb.shape[1])]
            blobs.append(thumb.tobytes())
        head.append([list(values), None if stats is None else list(stats), described])
    header = orjson.dumps(head)
    body_size = _FRAME.size + len(header) + sum(len(b) for b in blobs)
    return b"".join([_FRAME.pack(body_size), _FRAME.pack(len(header)), header, *blobs])


def _as_rgb(a: np.ndarray) -> np.ndarray:
    from imgcls.data.stats import stats_thumbnail

    return stats_thumbnail(a)


def _decode_body(body: bytes) -> list[Item]:
    (header_size,) = _FRAME.unpack_from(body)
    offset = _FRAME.size + header_size
    batch: list[Item] = []
    for values, stats, described in orjson.loads(body[_FRAME.size : offset]):
        source: StatsSource | None = None
        if described is not None:
            h, w = described
            n = h * w * 3
            source = np.frombuffer(body, dtype=np.uint8, count=n, offset=offset).reshape(h, w, 3)
            offset += n
        batch.append((values, stats, source))
    return batch


def _read_frames(stream: BinaryIO) -> Iterator[list[Item]]:
    while True:
        head = stream.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        (size,) = _FRAME.unpack(head)
        body = stream.read(size)
        if len(body) < size:
            return
        yield _decode_body(body)


def _stats_or_none(image: Any) -> ImageStats | None:
    try:
        return image_stats(image)
    except Exception:
        logger.exception("statistics failed for a logged image")
        return None


def _batch_stats(batch: list[Item]) -> list[dict[str, float] | None]:
    """Each record's statistics: the ones the server computed, else :func:`images_stats` of its thumbnail."""
    out: list[dict[str, float] | None] = [
        dict(zip(STAT_NAMES, stats, strict=True)) if stats is not None else None for _, stats, _ in batch
    ]
    todo = [(i, source) for i, (_, stats, source) in enumerate(batch) if stats is None and source is not None]
    images = [image for _, image in todo]
    try:
        computed: list[ImageStats | None] = list(images_stats(images))
    except Exception:  # one odd image must not cost the others their statistics, nor stop the writer
        computed = [_stats_or_none(image) for image in images]
    for (i, _), stats in zip(todo, computed, strict=True):
        out[i] = stats.as_dict() if stats is not None else None
    return out


def _commit(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> bool:
    for attempt in range(5):
        try:
            with conn:
                conn.executemany(sql, rows)
            return True
        except sqlite3.Error as exc:
            logger.warning("prediction log write failed (%s), attempt %d", exc, attempt + 1)
            time.sleep(0.2 * (attempt + 1))
    logger.error("prediction log: %d records lost after repeated write failures", len(rows))
    return False


def writer_main(path: Path | None, stream: BinaryIO, acks: BinaryIO | None = None, exporter: Any = None) -> int:
    """Append the frames arriving on ``stream`` to the log (and the export) until it closes (the server stopped
    or died), answering each frame on ``acks`` with the records committed and lost."""
    conn = connect(path) if path is not None else None
    placeholders = ", ".join("?" for _ in COLUMNS)
    sql = f"INSERT INTO {TABLE} ({', '.join(name for name, _, _ in COLUMNS)}) VALUES ({placeholders})"
    try:
        for batch in _read_frames(stream):
            stats = _batch_stats(batch)
            rows = [row(tuple(values), named) for (values, _, _), named in zip(batch, stats, strict=True)]
            ok = _commit(conn, sql, rows) if conn is not None else True
            if exporter is not None:
                try:
                    exporter.add([export_row(r) for r in rows])
                    ok = True if conn is None else ok
                except OSError as exc:
                    logger.error("log export spool: %d records not exported (%s)", len(rows), exc)
                    ok = ok if conn is not None else False
            if acks is not None:
                try:
                    acks.write(_ACK.pack(len(rows), 0) if ok else _ACK.pack(0, len(rows)))
                    acks.flush()
                except OSError:  # the server died: keep committing what it had sent, unacknowledged
                    acks = None
    finally:
        if conn is not None:
            conn.close()
        if exporter is not None:
            exporter.close()
    return 0


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m imgcls.serve.predlog")
    parser.add_argument("--db", default="")
    parser.add_argument("--export")
    parser.add_argument("--every", type=float, default=300.0)
    parser.add_argument("--replica", default="replica")
    parser.add_argument("--generation", type=int, default=0)
    args = parser.parse_args(argv)
    exporter = None
    if args.export:
        from imgcls.serve.logexport import SegmentExporter

        exporter = SegmentExporter(args.export, replica=args.replica, generation=args.generation, every_s=args.every)
    return writer_main(Path(args.db) if args.db else None, sys.stdin.buffer, sys.stdout.buffer, exporter)


if __name__ == "__main__":
    import signal

    # The server stops its writer by closing the pipe after the last record. A signal sent to the whole process
    # group or cgroup (Ctrl-C in a terminal, systemd's stop, `timeout`) must not end the writer first: it would
    # lose the records it had not committed, and the server would log it as a death and start another.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s imgcls.serve.predlog: %(message)s")
    sys.exit(_main(sys.argv[1:]))
