"""The prediction log: every prediction appended to SQLite (WAL mode), written by a separate writer process.

The request path only puts a record on an in-memory queue (no I/O, no statistics). A sender thread ships
the records in small batches over a pipe (a JSON header and raw bytes: no pickle) to a writer process
(``python -m imgcls.serve.predlog``), which computes the per-image statistics a batch at a time with
:func:`imgcls.data.stats.images_stats` — the computation of ``image_stats``, the one the drift reference
uses — and appends the rows. The statistics need the decoded image: small decoded images travel
as raw pixels, other uploads up to ``DEFER_BYTES`` as their encoded bytes (the writer decodes them again
with the same decoder: same pixels, same statistics); larger uploads have their statistics computed by the
server's decoding thread instead. Doing the statistics in another process keeps their CPU time off the
server's GIL, which is what limits a Python server's request rate.

Durability and the loss window: the sender ships a batch at least every ``send_s`` (50 ms); the writer
commits each batch in WAL mode with ``synchronous=NORMAL``. A clean shutdown (SIGTERM, Ctrl-C) flushes
everything. A crash of the server process (SIGKILL, OOM kill) loses the records not yet shipped — at most
the last ~50 ms of predictions plus what was queued behind a slow disk; the writer notices the closed pipe,
commits what it received and exits. A power loss can also lose the last committed transactions
(``synchronous=NORMAL``), never corrupt the database. When the writer falls ``max_pending`` records (or
``max_pending_bytes``) behind, new records are dropped, counted in ``imgcls_prediction_log_dropped_total``
and logged, so a slow disk never grows the server's memory or slows its answers. No image bytes are stored.

Table ``predictions`` (one row per predicted image): see :data:`COLUMNS`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
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

from imgcls.data.stats import STAT_NAMES, ImageStats, image_stats, images_stats
from imgcls.serve.queues import take_batch

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
    ("format", "TEXT", "decoded format: JPEG or PNG"),
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
DEFER_BYTES = 256 * 1024  # uploads up to this size are decoded again by the writer for their statistics
RAW_MODES = frozenset({"L", "LA", "RGB", "RGBA"})  # decoded images in these modes travel as raw pixels ...
RAW_PIXELS = 128 * 128  # ... up to this size (image_stats works on at most 128 px a side anyway)
StatsSource = bytes | tuple[str, tuple[int, int], bytes]  # an encoded upload, or (mode, size, raw pixels)
Item = tuple[Sequence[Any], Sequence[float] | None, StatsSource | None]  # record values, statistics, source
_FRAME = struct.Struct("<I")  # frame: total length, header length, JSON header, the sources' bytes


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


def output_summary(probabilities: np.ndarray) -> dict[str, float]:
    """``margin`` (top-1 minus top-2) and ``pred_entropy`` (nats) of one probability row, for a record."""
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
        json.dumps(record["top_k"]),
        record["latency_ms"],
        record["margin"],
        record["pred_entropy"],
        None if record["embedding"] is None else json.dumps(record["embedding"]),
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


_STOP = object()


class PredictionLog:
    """Ships :class:`PredictionRecord` s to the writer process; never blocks or raises on the request path.

    Example:
        log = PredictionLog(Path("predictions.sqlite"))
        log.append(record, upload_bytes)   # statistics computed by the writer from the upload
        log.close()                        # flushes, waits for the writer
    """

    def __init__(
        self,
        path: Path,
        *,
        max_pixels: int | None = None,
        send_s: float = 0.05,
        max_pending: int = 4096,
        max_pending_bytes: int = 64 << 20,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.send_s = send_s
        self.on_drop = on_drop
        self.max_pending_bytes = max_pending_bytes
        self.sent = 0
        self.dropped = 0
        self._pending_bytes = 0
        self._bytes_lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        connect(self.path).close()  # fail at startup, not in the writer, when the path is unusable
        cmd = [sys.executable, "-m", "imgcls.serve.predlog", str(self.path), str(max_pixels or 0)]
        self._writer = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._send_loop, name="imgcls-prediction-log", daemon=True)
        self._thread.start()

    def append(
        self, record: PredictionRecord, source: bytes | tuple[str, tuple[int, int], bytes] | None = None
    ) -> None:
        """Queue one record. The writer computes its statistics (unless ``record.stats`` is set) from ``source``:
        the encoded upload (decoded again), or ``(mode, (width, height), raw pixels)`` of the decoded image.
        """
        size = _size(source)
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
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop()
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            logger.warning("prediction log %s is behind: %d records dropped so far", self.path, self.dropped)

    def close(self, timeout: float = 30.0) -> None:
        """Ship everything queued, let the writer commit it and exit."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        try:
            self._writer.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.error("the prediction log writer did not finish in %.0f s; killing it", timeout)
            self._writer.kill()

    def _send_loop(self) -> None:
        pipe = self._writer.stdin
        assert pipe is not None
        stop = False
        try:
            while not stop:
                batch, stop = take_batch(self._queue, _STOP, self.send_s, max_items=512)
                size = sum(_size(source) for _, _, source in batch)
                if size:
                    with self._bytes_lock:
                        self._pending_bytes -= size
                if batch:
                    pipe.write(encode_frame(batch))
                    pipe.flush()
                    self.sent += len(batch)
        except (BrokenPipeError, OSError) as exc:
            logger.error("the prediction log writer is gone (%s); predictions are no longer logged", exc)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()


def _size(source: Any) -> int:
    if source is None:
        return 0
    return len(source) if isinstance(source, bytes) else len(source[2])


# --- the writer process ----------------------------------------------------------------------------------


def encode_frame(batch: list[Item]) -> bytes:
    """One frame for the writer: JSON for the records (no pickle, even between our own processes), then the
    sources' bytes back to back; the header gives each source's length (and mode and size for raw pixels)."""
    head: list[Any] = []
    blobs: list[bytes] = []
    for values, stats, source in batch:
        if source is None:
            described: list[Any] | None = None
        elif isinstance(source, bytes):
            described = [len(source)]
            blobs.append(source)
        else:
            mode, size, raw = source
            described = [len(raw), mode, list(size)]
            blobs.append(raw)
        head.append([values, stats, described])
    header = json.dumps(head, separators=(",", ":")).encode()
    body_size = _FRAME.size + len(header) + sum(len(b) for b in blobs)
    return b"".join([_FRAME.pack(body_size), _FRAME.pack(len(header)), header, *blobs])


def _decode_body(body: bytes) -> list[Item]:
    (header_size,) = _FRAME.unpack_from(body)
    offset = _FRAME.size + header_size
    batch: list[Item] = []
    for values, stats, described in json.loads(body[_FRAME.size : offset]):
        source: StatsSource | None = None
        if described is not None:
            data = body[offset : offset + described[0]]
            offset += described[0]
            source = data if len(described) == 1 else (described[1], (described[2][0], described[2][1]), data)
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


def _image_of(source: StatsSource, max_pixels: int) -> Any:
    from PIL import Image

    from imgcls.data.decode import DEFAULT_MAX_PIXELS, decode_image

    try:
        if isinstance(source, bytes):
            return decode_image(source, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        mode, size, raw = source
        if mode == "RGB":  # the pixels as they are: no Pillow round trip
            return np.frombuffer(raw, dtype=np.uint8).reshape(size[1], size[0], 3)
        return Image.frombytes(mode, size, raw)
    except Exception:  # the server decoded it, so this does not happen; a row without statistics if it does
        logger.exception("statistics failed for a logged upload")
        return None


def _stats_or_none(image: Any) -> ImageStats | None:
    try:
        return image_stats(image)
    except Exception:
        logger.exception("statistics failed for a logged upload")
        return None


def _batch_stats(batch: list[Item], max_pixels: int) -> list[dict[str, float] | None]:
    """Each record's statistics: the ones the server computed, else :func:`images_stats` of its source."""
    out: list[dict[str, float] | None] = [
        dict(zip(STAT_NAMES, stats, strict=True)) if stats is not None else None for _, stats, _ in batch
    ]
    todo = [(i, _image_of(source, max_pixels)) for i, (_, stats, source) in enumerate(batch)
            if stats is None and source is not None]  # fmt: skip
    todo = [(i, image) for i, image in todo if image is not None]
    images = [image for _, image in todo]
    try:
        computed: list[ImageStats | None] = list(images_stats(images))
    except Exception:  # one odd image must not cost the others their statistics, nor stop the writer
        computed = [_stats_or_none(image) for image in images]
    for (i, _), stats in zip(todo, computed, strict=True):
        out[i] = stats.as_dict() if stats is not None else None
    return out


def writer_main(path: Path, max_pixels: int, stream: BinaryIO) -> int:
    """Append the frames arriving on ``stream`` to the log until it closes (the server stopped or died)."""
    conn = connect(path)
    placeholders = ", ".join("?" for _ in COLUMNS)
    sql = f"INSERT INTO {TABLE} ({', '.join(name for name, _, _ in COLUMNS)}) VALUES ({placeholders})"
    try:
        for batch in _read_frames(stream):
            stats = _batch_stats(batch, max_pixels)
            rows = [row(tuple(values), named) for (values, _, _), named in zip(batch, stats, strict=True)]
            for attempt in range(5):
                try:
                    with conn:
                        conn.executemany(sql, rows)
                    break
                except sqlite3.Error as exc:
                    logger.warning("prediction log write failed (%s), attempt %d", exc, attempt + 1)
                    time.sleep(0.2 * (attempt + 1))
            else:
                logger.error("prediction log: %d records lost after repeated write failures", len(rows))
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s imgcls.serve.predlog: %(message)s")
    sys.exit(writer_main(Path(sys.argv[1]), int(sys.argv[2]), sys.stdin.buffer))
