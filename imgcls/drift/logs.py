"""The traffic a drift report compares: the window of a model's rows in its prediction logs.

A log is an SQLite file a server writes (``imgcls serve --log-predictions``) or a folder / ``gs://`` prefix of
JSON-lines segments (``--log-export``), a fleet's replicas side by side. :func:`read_log` gives the window, newest
``--last`` rows or those of the last ``--since``, at most :data:`MAX_WINDOW_ROWS`; every row in it is checked
(:func:`check_record`: a damaged or forged row is refused by name, never scored), and the other models' rows over
the window's span are counted. Only the window is read: an SQLite log through its timestamp index, newest first; of
the segments, those whose names say they end inside the window.

Example:
    window = read_log("~/.cache/imgcls/serve/predictions.sqlite", model_sha256=bundle_sha, since="24h")
    print(window.rows, window.first, window.other_models)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from imgcls.data.stats import STAT_NAMES
from imgcls.drift import columns as C
from imgcls.errors import ImgclsError, UsageError

logger = logging.getLogger(__name__)

LOG_SUFFIXES = (".sqlite", ".sqlite3", ".db")
SEGMENT_SUFFIXES = (".jsonl", ".jsonl.gz")
_LOG_COLUMNS = (
    "timestamp", "model_name", "model_version", "model_sha256", *STAT_NAMES, "class_id", "confidence", "top_k",
    "margin", "pred_entropy", "embedding",
)  # fmt: skip
# A segment is one replica's interval (300 s by default): ~600 bytes a row, 256 MiB is ~440,000 rows (1,500 a
# second). More is a file that would take the report's memory (a gzip bomb: kilobytes on disk), not an export.
MAX_SEGMENT_BYTES = 256 << 20
# The most rows a report compares: the newest of a longer window, so its memory and time stay bounded on a log of
# months. More would not make it surer: a threshold c·sqrt(1/n + 1/N) against a reference of N <= 5,000 images
# (reference.MAX_IMAGES) is at n = 200,000 within 1.3 % of its limit.
MAX_WINDOW_ROWS = 200_000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` -> seconds.

    Raises:
        UsageError: another form.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--since {text!r} is not a duration", hint="use a number and a unit: 90s, 30m, 24h, 7d, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class Window:
    """The current window: its columns (NaN where a row lacks a value) and where it came from."""

    data: dict[str, np.ndarray]
    rows: int
    source: str
    other_models: dict[str, int] = field(default_factory=dict)  # "name version sha256[:12]" -> rows skipped
    first: float | None = None  # timestamps of the first and last row
    last: float | None = None
    calibrated_confidence: np.ndarray | None = None


def iso_time(t: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC, to the second (None stays None)."""
    return None if t is None else _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


# --- reading the traffic ----------------------------------------------------------------------------------


def _is_segment(name: str) -> bool:
    return not name.startswith(".") and name.endswith(SEGMENT_SUFFIXES)


def _is_log(p: Path) -> bool:
    return p.is_file() and (p.suffix in LOG_SUFFIXES or _is_segment(p.name))


def _log_files(location: Path) -> list[str]:
    if location.is_dir():
        logs = [p for p in sorted(location.rglob("*")) if _is_log(p)]
        if not logs:
            raise UsageError(
                f"--log {location}: no prediction logs in this folder (*.sqlite or *.jsonl[.gz] segments)",
                hint="point --log at the file `imgcls serve --log-predictions` writes, or at a --log-export folder",
            )
        return [str(p) for p in logs]
    if not location.exists():
        raise UsageError(
            f"--log {location} does not exist",
            hint="the server writes ~/.cache/imgcls/serve/predictions.sqlite unless given --log-predictions",
        )
    if not location.is_file():  # a FIFO or a device: sqlite would wait on it for ever
        raise UsageError(
            f"--log {location} is not a regular file",
            hint="point --log at the SQLite file `imgcls serve --log-predictions` writes, or at a folder of logs",
        )
    return [str(location)]


class _GcsListing:
    """The segments under a ``gs://`` prefix, listed newest names first, a span of names at a time: the last day,
    then spans twice as long further back, as far as the window needs. A ``--last 1000`` over a prefix of a year of
    segments lists the days that hold them, not the year (~1,000 objects a listing page); a window that is not full
    yet lists on, back to the prefix's oldest segment. A ``--since`` window lists from its start at once."""

    FIRST_SPAN_S = 86_400.0

    def __init__(self, uri: str, cutoff: float | None) -> None:
        from imgcls.serve.logexport import MAX_SEGMENT_SPAN_S, split_gcs

        bucket, _ = split_gcs(uri)
        if not bucket:
            raise UsageError(f"--log {uri}: no bucket", hint="use gs://BUCKET/PREFIX/ (the serve --log-export URI)")
        self.uri = uri
        self.span = MAX_SEGMENT_SPAN_S
        # a segment whose name begins before this ended before --since: it cannot hold a row of the window
        self.bottom = -math.inf if cutoff is None else cutoff - MAX_SEGMENT_SPAN_S
        self.lower = math.inf  # every name from this time on is listed
        self.step = self.FIRST_SPAN_S
        self.listed: set[str] = set()

    def older(self, floor: float | None) -> list[str] | None:
        """The next segments, older by name than those listed so far; None once no unlisted segment can hold a row of
        the window. ``floor``: the oldest row a full window still takes (None: not full yet)."""
        need = self.bottom if floor is None else max(self.bottom, floor - self.span)
        while self.lower > need:
            if floor is not None or self.bottom > -math.inf:  # full, or --since: the names back to (the oldest row
                start = need  # it can take - a segment's span) are all it can hold, listed at once
            else:
                start = max((time.time() if self.lower == math.inf else self.lower) - self.step, need)
            if start <= 0:  # no stamp is older than 1970: the rest of the prefix's names (odd ones) in one listing
                start = -math.inf
            found = [f for f in self._list(start, self.lower) if f not in self.listed]  # each once, whatever the
            self.listed.update(found)  # store does with the offsets
            self.lower, self.step = start, self.step * 2
            if found:
                return found
            if floor is None and start > need and not self._list(-math.inf, start, first=True):
                return None  # nothing older under the prefix at all
        return None

    def holds_any(self) -> bool:
        return bool(self._list(-math.inf, math.inf, first=True))

    def _list(self, start: float, before: float, first: bool = False) -> list[str]:
        from imgcls.serve.logexport import list_segments

        try:
            found = list_segments(
                self.uri,
                began_from=None if start == -math.inf else start,
                began_before=None if before == math.inf else before,
                first=first,
            )
        except ImgclsError:
            raise
        except Exception as exc:  # the client's own error (a missing bucket, credentials), in one line
            raise UsageError(f"--log {self.uri}: cannot list the segments ({type(exc).__name__}: {exc})") from None
        return [loc for _, loc in found]


# What a log's value may be: the server writes these ranges (imgcls.data.stats, probabilities); a value outside
# them, of another type or not finite is a damaged or forged row, and would have been a NaN/inf score, an
# 'Infinity' in drift.json or an unexpected error deep in the comparison.
_RANGES = {
    "brightness": (0.0, 1.0), "contrast": (0.0, 0.5), "saturation": (0.0, 1.0), "entropy": (0.0, 8.0),
    "sharpness": (0.0, 16.0), "confidence": (0.0, 1.0), "margin": (0.0, 1.0), "pred_entropy": (0.0, math.inf),
}  # fmt: skip
_SLACK = 1e-4  # float32 rounding at the ends of a range
MAX_EMBEDDING = 64  # `imgcls drift reference -k` allows at most 64 components
_MAX_TIMESTAMP = 253402300800.0  # year 10000: datetime cannot show a later time


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _json_list(v: Any) -> Any:
    """A log's JSON text parsed (a segment's value as it is); text that is not JSON: the text, refused after."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except (ValueError, RecursionError):  # RecursionError: '[[[[…' nested deeper than json's parser goes
            return v
    return v


def check_record(r: dict[str, Any], where: str, fix: str) -> None:
    """Refuse a prediction record whose values the server cannot have written; ``top_k`` and ``embedding`` are
    parsed in place (a log keeps them as JSON text).

    Raises:
        UsageError: naming ``where`` (the file and line or row), the field and what it holds, with ``fix``.
    """

    def bad(name: str, why: str) -> UsageError:
        shown = repr(r.get(name))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return UsageError(
            f"--log {where}: {name} {shown} {why}; this row is damaged or was not written by `imgcls serve`",
            hint=fix,
        )

    t = r.get("timestamp")
    if not _number(t) or not 0 <= t < _MAX_TIMESTAMP:
        raise bad("timestamp", "is not a Unix time")
    if not isinstance(r.get("model_sha256"), str):
        raise bad("model_sha256", "is not a digest")
    c = r.get("class_id")
    if not isinstance(c, int) or isinstance(c, bool) or c < 0:
        raise bad("class_id", "is not a class index")
    for name, (low, high) in _RANGES.items():
        v = r.get(name)
        if v is None and name != "confidence":
            continue
        if not _number(v) or not low - _SLACK <= v <= high + _SLACK:
            raise bad(name, f"is not a number from {low:g} to {high:g}")
    top = _json_list(r.get("top_k"))
    if top is None:
        top = []
    if not isinstance(top, list) or not all(
        isinstance(e, dict) and _number(e.get("probability")) and -_SLACK <= e["probability"] <= 1 + _SLACK for e in top
    ):
        raise bad("top_k", "is not a list of {label, class_id, probability}")
    r["top_k"] = top
    emb = _json_list(r.get("embedding"))
    if emb is not None and (not isinstance(emb, list) or len(emb) > MAX_EMBEDDING or not all(_number(x) for x in emb)):
        raise bad("embedding", f"is not a list of at most {MAX_EMBEDDING} numbers")
    r["embedding"] = emb


def sqlite_row_fix(path: Path, rowid: int) -> str:
    """The hint for a damaged row of an SQLite log: that row deleted, not the whole log (its other rows are good)."""
    return (
        f"delete that row, keeping the others: sqlite3 {path} 'DELETE FROM predictions WHERE rowid = {rowid}' "
        "(or point --log at the server's own log)"
    )


def _sqlite_error(path: Path, exc: sqlite3.Error) -> ImgclsError:
    """What SQLite's error means for a --log: a file that is something else, a damaged database, one another
    program holds locked; each said as such (a locked or damaged log read as "not an SQLite database")."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return UsageError(
            f"--log {path} is not a prediction log (not an SQLite database)",
            hint="point --log at the file `imgcls serve --log-predictions` writes",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return ImgclsError(
            f"--log {path} is locked by another program that is writing it ({exc})",
            hint="run the report again once it is done (the server's own log, in WAL mode, never locks readers out)",
        )
    if name.startswith("SQLITE_CORRUPT"):
        return UsageError(
            f"--log {path} is a damaged SQLite database ({exc}): truncated, or overwritten in part",
            hint=f"recover what it holds with `sqlite3 {path} .recover | sqlite3 recovered.sqlite` and report on that",
        )
    return UsageError(f"--log {path} cannot be read ({exc})")


def _model_key(name: Any, version: Any, sha256: Any) -> str:
    """``name version sha256[:12]``; a model served from a folder has no store version, and the server gives its
    sha256[:12] as the version: said once ('digits-resnet8 11ebb0dca226', not the id twice)."""
    short = str(sha256)[:12]
    return f"{name} {short}" if str(version) == short else f"{name} {version} {short}"


@dataclass
class _LogRead:
    """What one log file gave: this model's rows (oldest first) and a census of every model's rows in it."""

    mine: list[dict[str, Any]]
    census: Callable[[float | None], dict[str, tuple[int, float]]]  # since -> {model key: (rows, newest)}


@contextlib.contextmanager
def _sqlite_snapshot(path: Path, timeout: float = 5.0) -> Iterator[tuple[sqlite3.Connection, set[str]]]:
    """A read-only connection holding one read transaction (a WAL snapshot: the rows a server appends meanwhile are
    not seen half-way) and the columns of its ``predictions`` table, its errors said as what they mean for a
    --log."""
    try:  # as a URI (so a '?' or '#' in the name is not a query), read-only
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise UsageError(f"--log {path} cannot be opened ({exc})") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")
        have = {r[1] for r in conn.execute("PRAGMA table_info(predictions)")}
        if not {"timestamp", "model_sha256", "class_id", "confidence"} <= have:
            raise UsageError(
                f"--log {path} is not a prediction log (no predictions table written by `imgcls serve`)",
                hint="point --log at the file `imgcls serve --log-predictions` writes",
            )
        yield conn, have
    except sqlite3.Error as exc:  # anywhere in the file: the header, the schema, a page of rows
        raise _sqlite_error(path, exc) from None
    finally:
        conn.close()


def sqlite_window(path: Path, model_sha256: str, *, cutoff: float | None, limit: int, timeout: float = 5.0) -> _LogRead:
    """The newest ``limit`` rows of ``model_sha256`` at or after ``cutoff`` in an SQLite log, oldest first, each
    checked (:func:`check_record`), and the census of the file's rows (see :class:`_LogRead`).

    The rows are read newest first through the log's timestamp index and the read stops at ``limit``: a log of
    months of traffic costs what the window costs, not what the whole file holds.
    """
    with _sqlite_snapshot(path, timeout) as (conn, have):
        cols = ", ".join(c if c in have else f"NULL AS {c}" for c in _LOG_COLUMNS)
        where, args = "model_sha256 = ?", list[Any]([model_sha256])
        if cutoff is not None:
            where += " AND timestamp >= ?"
            args.append(cutoff)
        sql = f"SELECT rowid AS _rowid, {cols} FROM predictions WHERE {where} ORDER BY timestamp DESC LIMIT ?"
        rows = []
        for r in conn.execute(sql, (*args, limit)):
            record = dict(r)
            rowid = record.pop("_rowid")
            check_record(record, f"{path}: row {rowid}", sqlite_row_fix(path, rowid))
            rows.append(record)
        # the census runs later, in a read of its own: it counts the rows this snapshot held (a server appends rows
        # with higher rowids), not those appended meanwhile
        (top,) = conn.execute("SELECT MAX(rowid) FROM predictions").fetchone()
    rows.reverse()

    def census(since: float | None) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        if top is None:
            return out
        with _sqlite_snapshot(path, timeout) as (conn, _):
            sql = (
                "SELECT model_name, model_version, model_sha256, COUNT(*), MAX(timestamp) FROM predictions"
                + " WHERE rowid <= ?"
                + (" AND timestamp >= ?" if since is not None else "")
                + " GROUP BY model_name, model_version, model_sha256"
            )
            for name, version, sha, n, newest in conn.execute(sql, (top,) if since is None else (top, since)):
                key = _model_key(name, version, sha) if sha != model_sha256 else ""
                count, latest = out.get(key, (0, -math.inf))
                out[key] = (count + n, max(latest, newest if _number(newest) else -math.inf))
            return out

    return _LogRead(rows, census)


def _segment_read(location: str, model_sha256: str, cutoff: float | None) -> _LogRead:
    """A segment's rows, every one checked; this model's kept (those at or after ``cutoff``), the others counted."""
    import zlib
    from array import array

    from imgcls.serve.logexport import read_segment_bytes

    try:
        data = read_segment_bytes(location, limit=MAX_SEGMENT_BYTES)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; damaged deflate data is not
        raise UsageError(f"--log {location}: not a prediction-log segment (cannot read it: {exc})") from None
    except ValueError as exc:  # over the limit
        raise UsageError(
            f"--log {location}: not a prediction-log segment ({exc})",
            hint="a server writes one segment per --log-export-every interval, far smaller; remove this file",
        ) from None
    mine: list[dict[str, Any]] = []
    times: dict[str, array[float]] = {}  # model key ("" for this model) -> its rows' timestamps
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: '[[[[…' nested deeper than json's parser goes
            raise UsageError(f"--log {location}: line {n} is not JSON; this is not a prediction-log segment") from None
        if not isinstance(r, dict) or not {"timestamp", "model_sha256", "class_id", "confidence"} <= set(r):
            raise UsageError(
                f"--log {location}: line {n} is not a prediction record",
                hint="--log reads every *.sqlite and *.jsonl[.gz] file of a folder: point it at the server's log "
                "or its --log-export folder alone",
            )
        check_record(
            r,
            f"{location}: line {n}",
            "point --log at the server's own --log-export folder, or move this segment out of it (the other "
            "segments keep their rows)",
        )
        key = "" if r["model_sha256"] == model_sha256 else _model_key(r.get("model_name"), r.get("model_version"),
                                                                       r["model_sha256"])  # fmt: skip
        times.setdefault(key, array("d")).append(r["timestamp"])
        if not key and (cutoff is None or r["timestamp"] >= cutoff):
            mine.append({c: r.get(c) for c in _LOG_COLUMNS})
    del data
    mine.sort(key=lambda r: r["timestamp"])

    def census(since: float | None) -> dict[str, tuple[int, float]]:
        out = {}
        for key, ts in times.items():
            t = np.frombuffer(ts, dtype=np.float64)
            t = t if since is None else t[t >= since]
            if len(t):
                out[key] = (len(t), float(t.max()))
        return out

    return _LogRead(mine, census)


def _newest(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    rows.sort(key=lambda r: r["timestamp"])
    return rows[-n:] if len(rows) > n else rows


def read_log(location: str | Path, *, model_sha256: str, since: str | None = None, last: int | None = None) -> Window:
    """The rows of the model ``model_sha256`` in a prediction log, a folder of logs/segments; newest ``last``
    rows or those of the last ``since``, at most :data:`MAX_WINDOW_ROWS` (the newest, said in a warning). Rows of
    other models in the window's span are counted, not compared.

    An SQLite log is read through its timestamp index, newest first, and only the window's rows are read and
    checked (:func:`sqlite_window`); a segment whose name says it ended before ``since``, or before the oldest of
    the newest ``last`` rows already read from newer segments, is not read at all.

    Raises:
        UsageError: missing, empty or foreign log; a window that selects nothing; a damaged row in the window.
    """
    from imgcls.serve.logexport import segment_span

    if last is not None and last < 1:
        raise UsageError(f"--last {last}: give a positive number of rows")
    if last is not None and last > MAX_WINDOW_ROWS:
        raise UsageError(
            f"--last {last:,}: a report compares at most {MAX_WINDOW_ROWS:,} rows",
            hint=f"use --last {MAX_WINDOW_ROWS:,} or fewer (a drift score is as sure at that size as at any larger)",
        )
    cutoff = time.time() - parse_since(since) if since is not None else None  # "" is a typo, not all
    path: Path | str
    listing: _GcsListing | None = None
    if str(location).startswith("gs://"):
        path = str(location)
        listing = _GcsListing(path, cutoff)
        files = listing.older(None) or []
    else:
        path = Path(str(location)).expanduser()
        files = _log_files(path)
    limit = last if last is not None else MAX_WINDOW_ROWS + 1  # one more: to know that the cap cut the window
    mine: list[dict[str, Any]] = []
    censuses = []
    # Newest first: SQLite logs (no span in their names) and segments by the end their names give. Once `limit` rows
    # are held, a segment that ended before the oldest of them cannot enter the window, nor can any after it: a
    # --last 1000 over a prefix of months reads the newest segments, not all of them.
    floor: float | None = None  # the limit-th newest timestamp held (once stale, a lower bound: it only rises)
    read_any = False
    while files:
        spans = {f: segment_span(f) if _is_segment(f.rsplit("/", 1)[-1]) else None for f in files}
        ends = {f: span[1] for f, span in spans.items() if span is not None}
        if cutoff is not None:  # a segment whose name says it ended before --since is not read at all
            files = [f for f in files if ends.get(f, math.inf) >= cutoff]
        for f in sorted(files, key=lambda f: -ends.get(f, math.inf)):
            if f in ends and floor is not None and ends[f] < floor:
                break
            read_any = True
            if _is_segment(f.rsplit("/", 1)[-1]):
                read = _segment_read(f, model_sha256, cutoff)
            else:
                read = sqlite_window(Path(f), model_sha256, cutoff=cutoff, limit=limit)
            mine.extend(read.mine)
            censuses.append(read.census)
            if len(mine) > 2 * limit or (floor is None and len(mine) >= limit):
                mine = _newest(mine, limit)  # memory bounded by the window, not by the files
                floor = mine[0]["timestamp"]
        files = (listing.older(floor) or []) if listing is not None else []
    if not read_any:
        if listing is not None and not listing.holds_any():
            raise UsageError(
                f"--log {path}: no prediction-log segments under this prefix",
                hint="point --log at the URI given to `imgcls serve --log-export` (segments appear every interval)",
            )
        raise UsageError(
            f"--since {since} selects nothing: every segment of --log {path} ended earlier",
            hint="widen --since, or use --last N",
        )
    mine = _newest(mine, limit)
    if not mine:
        _refuse_an_empty_window(path, model_sha256, since, [c(None) for c in censuses])
    capped = last is None and len(mine) > MAX_WINDOW_ROWS
    if capped:
        mine = mine[-MAX_WINDOW_ROWS:]
        logger.warning(
            "the window holds more than %s rows of this model: the newest %s are compared (from %s); choose the "
            "window with --since or --last",
            f"{MAX_WINDOW_ROWS:,}",
            f"{MAX_WINDOW_ROWS:,}",
            iso_time(mine[0]["timestamp"]),
        )
    start = span_start(mine, cut=capped or len(mine) == last, cutoff=cutoff)
    others: dict[str, int] = {}
    for census in censuses:
        for key, (n, _) in census(start).items():
            if key:
                others[key] = others.get(key, 0) + n
    return window_of_rows(mine, str(path), others)


def span_start(rows: list[dict[str, Any]], *, cut: bool, cutoff: float | None) -> float | None:
    """Where the other models' count of a window begins: at its first row when ``--last`` or the cap cut it (with
    or without ``--since``: the rows before it were not compared, so neither are theirs counted), at ``cutoff``
    (``--since``) otherwise, and nowhere (the whole log) when neither bounds it. The report and the server's drift
    monitor both count this way."""
    return rows[0]["timestamp"] if cut and rows else cutoff


def _refuse_an_empty_window(
    path: Path | str, model_sha256: str, since: str | None, censuses: list[dict[str, tuple[int, float]]]
) -> None:
    """Say why no row of this model is in the window: an empty log, a log of other models, or a --since that ends
    before this model's newest row."""
    every: dict[str, tuple[int, float]] = {}
    for census in censuses:
        for key, (n, newest) in census.items():
            count, latest = every.get(key, (0, -math.inf))
            every[key] = (count + n, max(latest, newest))
    total = sum(n for n, _ in every.values())
    if not total:
        raise UsageError(f"--log {path} holds no predictions yet", hint="send the server some traffic first")
    if "" not in every:
        raise UsageError(
            f"--log {path}: none of its {total} rows is from this model (sha256 {model_sha256[:12]}…); "
            f"it holds {', '.join(f'{n} of {k}' for k, (n, _) in every.items())}",
            hint="pass the --model that served this traffic",
        )
    n, newest = every[""]
    raise UsageError(
        f"--since {since} selects nothing: the newest of this model's {n} rows is from {iso_time(newest)}",
        hint="widen --since, or use --last N",
    )


def window_of_rows(rows: list[dict[str, Any]], source: str, others: dict[str, int]) -> Window:
    n = len(rows)
    data: dict[str, np.ndarray] = {}
    for name in STAT_NAMES:
        data[name] = np.array([np.nan if r.get(name) is None else r[name] for r in rows], dtype=np.float64)
    data[C.CLASS_COLUMN] = np.array([r["class_id"] for r in rows], dtype=np.int64)
    data["pred_confidence"] = np.array([r["confidence"] for r in rows], dtype=np.float64)
    tops = [json.loads(r["top_k"]) if isinstance(r["top_k"], str) else (r["top_k"] or []) for r in rows]
    margins = []
    for r, top in zip(rows, tops, strict=True):
        if r.get("margin") is not None:
            margins.append(r["margin"])
        else:  # an older log: the top-k list has the two best probabilities
            margins.append(top[0]["probability"] - top[1]["probability"] if len(top) > 1 else np.nan)
    data["pred_margin"] = np.array(margins, dtype=np.float64)
    data["pred_entropy"] = np.array([np.nan if r.get("pred_entropy") is None else r["pred_entropy"] for r in rows])
    embs = [json.loads(r["embedding"]) if isinstance(r.get("embedding"), str) else r.get("embedding") for r in rows]
    k = max((len(e) for e in embs if e), default=0)
    for i in range(k):
        data[f"emb_{i}"] = np.array([e[i] if e and len(e) > i else np.nan for e in embs], dtype=np.float64)
    window = Window(data, n, source, others, rows[0]["timestamp"], rows[-1]["timestamp"])
    window.calibrated_confidence = None
    window.data["_top_k"] = np.array([json.dumps(t) for t in tops])  # for the accuracy estimate
    return window
