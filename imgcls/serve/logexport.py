"""``imgcls serve --log-export URI``: the prediction log as closed segments in a folder or ``gs://bucket/prefix/``.

Several replicas (``--workers N``, several hosts, Cloud Run instances) each write their own segments under one
prefix, so ``imgcls drift report --log URI`` reads the whole fleet. A segment is one replica's predictions of
one interval (``--log-export-every``, default 300 s), gzip-compressed JSON lines (one object per prediction,
the columns of :data:`imgcls.serve.predlog.COLUMNS`, ``top_k`` and ``embedding`` as lists). Its name is

    ``<first>-<last>_<replica>_<generation>-<sequence>.jsonl.gz``, e.g.
    ``20261202T051500Z-20261202T052000Z_host-4711-3fa2_0-000012.jsonl.gz``

(UTC times of its first and last prediction, rounded down and up to the second; the replica id; the writer's
generation, i.e. its restarts; a sequence number). Names are create-only and a segment is never rewritten: a
folder gets it written to a hidden temporary file and hard-linked into place (``os.link`` fails on an existing
name), GCS gets it with ``if_generation_match=0``; a taken name (which only a clash of replica ids could make)
moves on to the next sequence number. So a reader never sees a half-written segment.

Loss window: the writer process appends each committed batch to a local spool file (flushed, not fsynced)
before acknowledging it, and closes a segment every interval and when the server stops. A writer killed
(``kill -9``) leaves its spool; the writer started in its place publishes it first. A server killed together
with its writer leaves a spool too: the next replica started on the same host (same temporary folder) adopts and
publishes it. What is lost: the spool's unflushed tail when the machine itself dies, and a spool whose folder
does not survive (a container's temporary storage). A segment that cannot be uploaded stays in the spool and is
retried at the next interval (and logged).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl.gz"
DEFAULT_EVERY_S = 300.0
_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)_([A-Za-z0-9.-]+)_(\d+)-(\d+)\.jsonl\.gz$")
_STAMP = "%Y%m%dT%H%M%SZ"


def is_gcs(uri: str) -> bool:
    return str(uri).startswith("gs://")


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b/")`` (the prefix ends with a slash, or is empty)."""
    rest = str(uri)[len("gs://") :]
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/" if prefix else "")


def _stamp(t: float, up: bool = False) -> str:
    t = math.ceil(t) if up else math.floor(t)
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime(_STAMP)


def segment_name(first: float, last: float, replica: str, generation: int, seq: int) -> str:
    return f"{_stamp(first)}-{_stamp(last, up=True)}_{replica}_{generation}-{seq:06d}{SEGMENT_SUFFIX}"


def segment_span(name: str) -> tuple[float, float] | None:
    """The (first, last) times a segment's name promises (None: not a segment name, or one whose times are not
    dates, such as a 13th month: no span is promised, and the segment is read like any other file)."""
    m = _NAME.match(name.rsplit("/", 1)[-1])
    if not m:
        return None

    def parse(s: str) -> float:
        return _dt.datetime.strptime(s, _STAMP).replace(tzinfo=_dt.timezone.utc).timestamp()

    try:
        return parse(m.group(1)), parse(m.group(2))
    except ValueError:  # matches the pattern, but is no date
        return None


def check_export_uri(uri: str) -> None:
    """Refuse at start-up what would fail in the writer: an unwritable folder, a missing bucket.

    Raises:
        UsageError / StoreError: with a hint naming the fix.
    """
    from imgcls.errors import UsageError

    if is_gcs(uri):
        from imgcls.store.gcs import make_client

        bucket, _ = split_gcs(uri)
        if not bucket:
            raise UsageError(f"--log-export {uri}: no bucket", hint="use gs://BUCKET/PREFIX/")
        client = make_client()
        try:
            exists = client.bucket(bucket).exists()
        except Exception as exc:  # network or permission: the message of the client, not a traceback
            raise UsageError(f"--log-export {uri}: cannot reach the bucket ({type(exc).__name__}: {exc})") from None
        if not exists:
            raise UsageError(
                f"--log-export {uri}: bucket gs://{bucket} does not exist or is not visible to these credentials",
                hint=f"create it (`gcloud storage buckets create gs://{bucket}`) or fix the URI",
            )
        return
    folder = Path(uri).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".imgcls-probe-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"--log-export {uri}: cannot write segments there ({exc.strerror or exc})",
            hint="pass a writable folder or gs://BUCKET/PREFIX/",
        ) from None


@dataclass
class _Spool:
    path: Path
    seq: int
    first: float
    last: float
    rows: int
    opened: float


class SegmentExporter:
    """Runs in the log's writer process: ``add`` committed rows, segments close every ``every_s`` (a timer
    thread publishes them, so an upload never delays the SQLite commits) and on :meth:`close`."""

    def __init__(
        self,
        uri: str,
        *,
        replica: str,
        generation: int = 0,
        every_s: float = DEFAULT_EVERY_S,
        spool: Path | None = None,
    ) -> None:
        self.uri = uri
        self.replica = replica
        self.generation = generation
        self.every_s = every_s
        self.spool_dir = spool or Path(tempfile.gettempdir()) / "imgcls-log-export" / replica
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.published: list[str] = []
        self._seq = 0
        self._current: _Spool | None = None
        self._file: Any = None
        self._lock = threading.Lock()  # the spool being appended
        self._publish_lock = threading.Lock()
        self._closing = threading.Event()
        self._client: Any = None
        self._recover()
        self._timer = threading.Thread(target=self._tick, name="imgcls-log-export", daemon=True)
        self._timer.start()

    # -- the writer side --------------------------------------------------------------------------------

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Append rows (dicts of the log's columns) to the open segment, flushed to the OS before returning."""
        if not rows:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
        with self._lock:
            if self._current is None:
                path = self.spool_dir / f"{self.generation}-{self._seq:06d}.part"
                self._file = path.open("ab")
                self._current = _Spool(path, self._seq, rows[0]["timestamp"], rows[0]["timestamp"], 0, time.time())
                self._seq += 1
            self._file.write(data)
            self._file.flush()
            cur = self._current
            cur.first = min(cur.first, min(r["timestamp"] for r in rows))
            cur.last = max(cur.last, max(r["timestamp"] for r in rows))
            cur.rows += len(rows)

    def close(self) -> None:
        """Close and publish the open segment (and retry any left in the spool)."""
        self._closing.set()
        self._timer.join(30)
        self._rotate()
        self._publish_spooled()

    # -- closing and publishing ---------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._closing.wait(min(1.0, self.every_s)):
            with self._lock:
                due = self._current is not None and time.time() - self._current.opened >= self.every_s
            if due:
                self._rotate()
                self._publish_spooled()

    def _rotate(self) -> None:
        with self._lock:
            if self._current is None:
                return
            self._file.close()
            done = self._current
            self._current = self._file = None
        done.path.rename(done.path.with_suffix(".closed"))

    def _recover(self) -> None:
        """A killed predecessor's spool: its open segment (torn last line dropped) becomes a closed one."""
        for part in sorted(self.spool_dir.glob("*.part")):
            try:
                _drop_torn_tail(part)
                part.rename(part.with_suffix(".closed"))
                logger.warning("log export: recovered a segment a stopped writer left in its spool")
            except OSError as exc:
                logger.error("log export: cannot recover a spooled segment (%s)", exc)
        self._adopt_orphans()
        self._publish_spooled()

    def _adopt_orphans(self) -> None:
        """Spools of replicas of this host whose server process is gone (a container or server killed together
        with its writer): claimed by an atomic rename (one adopter wins) and published under their own names."""
        host = self.replica.rsplit("-", 2)[0]
        root = self.spool_dir.parent
        for d in sorted(root.iterdir()):
            parts = d.name.rsplit("-", 2)
            if d == self.spool_dir or not d.is_dir() or len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
                continue
            if _pid_alive(int(parts[1])):
                continue
            claimed = root / f".adopted-by-{self.replica}-{d.name}"
            try:
                d.rename(claimed)
            except OSError:  # another replica claimed it first
                continue
            for f in sorted([*claimed.glob("*.part"), *claimed.glob("*.closed")]):
                with contextlib.suppress(OSError):
                    _drop_torn_tail(f)
                    f.rename(self.spool_dir / f"{d.name}~{f.stem}.closed")
            with contextlib.suppress(OSError):
                for leftover in claimed.iterdir():  # a half-made .gz: its .closed was adopted
                    leftover.unlink()
                claimed.rmdir()
            logger.warning("log export: publishing the spool of stopped replica %s", d.name)

    def _publish_spooled(self) -> None:
        with self._publish_lock:
            for closed in sorted(self.spool_dir.glob("*.closed")):
                try:
                    self._publish(closed)
                except Exception as exc:  # kept in the spool; retried at the next interval
                    logger.error("log export to %s failed (%s: %s); will retry", self.uri, type(exc).__name__, exc)
                    return

    def _publish(self, closed: Path) -> None:
        rows = [json.loads(line) for line in closed.read_bytes().splitlines() if line.strip()]
        if not rows:
            closed.unlink()
            return
        first = min(r["timestamp"] for r in rows)
        last = max(r["timestamp"] for r in rows)
        replica, stem = self.replica, closed.stem
        if "~" in stem:  # adopted from a stopped replica: published under its name
            replica, stem = stem.split("~", 1)
        gen, _, seq = stem.partition("-")
        generation, number = int(gen), int(seq)
        gz = closed.with_suffix(".gz")
        with closed.open("rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        for _ in range(1000):  # a taken name moves on to the next sequence number
            name = segment_name(first, last, replica, generation, number)
            if self._create(gz, name):
                break
            number += 1
        else:
            raise FileExistsError(f"no free segment name for {closed.name}")
        self.published.append(name)
        gz.unlink()
        closed.unlink()

    def _create(self, gz: Path, name: str) -> bool:
        """Create ``name`` from the file ``gz``; False when the name is taken (never overwrites)."""
        if is_gcs(self.uri):
            from google.api_core.exceptions import PreconditionFailed

            from imgcls.store.gcs import make_client

            if self._client is None:
                self._client = make_client()
            bucket, prefix = split_gcs(self.uri)
            blob = self._client.bucket(bucket).blob(prefix + name)
            try:
                blob.upload_from_filename(str(gz), content_type="application/gzip", if_generation_match=0)
            except PreconditionFailed:
                return False
            return True
        folder = Path(self.uri).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(gz, tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, folder / name)  # atomic and create-only: fails if the name exists
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with path.open("r+b") as f:
            f.truncate(keep)


# --- reading (``imgcls drift report --log``) ------------------------------------------------------------


# How long before its end a segment's first row can be: a segment closes --log-export-every (at most 86,400 s)
# after it opened, and its rows reach the writer within its restart back-off of being answered. Twice the longest
# interval, so that a listing of the names from (a window's start - this) misses no segment that ends inside it.
MAX_SEGMENT_SPAN_S = 2 * 86_400.0


def list_segments(
    uri: str, *, began_from: float | None = None, began_before: float | None = None, first: bool = False
) -> list[tuple[str, str]]:
    """``(name, location)`` of the segments under a folder or ``gs://`` prefix, by name.

    ``began_from`` / ``began_before``: on GCS, only the names from the one stamped ``began_from`` (second, rounded
    down) and before the one stamped ``began_before`` (names begin with their first row's time): a day's window over
    a prefix of a year's segments lists days of them, not the year (~1,000 objects a page); two listings split at
    one time list each segment once. A folder is listed whole (a local listing is cheap).
    ``first``: stop at the first segment found on GCS (whether the span holds any).
    """
    out: list[tuple[str, str]] = []
    if is_gcs(uri):
        from imgcls.store.gcs import make_client

        bucket, prefix = split_gcs(uri)
        offsets = {}
        if began_from is not None and began_from > 0:
            offsets["start_offset"] = prefix + _stamp(began_from)
        if began_before is not None:
            offsets["end_offset"] = prefix + _stamp(max(began_before, 0.0))
        low, high = offsets.get("start_offset", ""), offsets.get("end_offset")
        for blob in make_client().list_blobs(bucket, prefix=prefix, **offsets):
            name = blob.name[len(prefix) :]
            if blob.name < low or (high is not None and blob.name >= high):
                continue  # a store that ignores the offsets (an emulator) lists it all: the span is kept here too
            if name.endswith(SEGMENT_SUFFIX) and "/" not in name:
                out.append((name, f"gs://{bucket}/{blob.name}"))
                if first:
                    break
    else:
        folder = Path(uri).expanduser()
        out = [(p.name, str(p)) for p in sorted(folder.rglob("*" + SEGMENT_SUFFIX)) if not p.name.startswith(".")]
    return sorted(out)


def read_segment_bytes(location: str, limit: int | None = None) -> bytes:
    """The uncompressed bytes of one segment (a path or ``gs://`` object).

    Raises:
        ValueError: more than ``limit`` bytes uncompressed, found before more than that is held (a file of a few
            kilobytes can decompress to gigabytes: ``gzip.decompress`` would have allocated them all).
    """
    if is_gcs(location):
        from imgcls.store.gcs import make_client

        bucket, _, key = location[len("gs://") :].partition("/")
        blob = make_client().bucket(bucket).blob(key)
        # at most one byte more than the limit is fetched, whatever the object has grown to
        data = blob.download_as_bytes() if limit is None else blob.download_as_bytes(start=0, end=limit)
        if limit is not None and len(data) > limit:
            raise ValueError(f"more than the {limit:,} bytes a segment may hold")
    else:
        path = Path(location)
        if limit is not None and path.stat().st_size > limit:
            raise ValueError(f"{path.stat().st_size:,} bytes, more than the {limit:,} a segment may hold")
        data = path.read_bytes()
    if data[:2] != b"\x1f\x8b":
        if limit is not None and len(data) > limit:
            raise ValueError(f"{len(data):,} bytes, more than the {limit:,} a segment may hold")
        return data
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        out = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(out) > limit:
        raise ValueError(f"it decompresses to more than the {limit:,} bytes a segment may hold")
    return out
