"""Server logging: one JSON object per line on stderr (the access log adds one line per request)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}``; ``extra={"fields": {...}}`` adds keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Send imgcls and uvicorn logs to stderr as JSON lines (called once, at the server's entry point)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("imgcls", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


class AccessLog:
    """One JSON line per request (the access log), formatted and written in batches by a background thread.

    The request path only appends a tuple to a list: no ``LogRecord``, no formatter, no write system call per
    request. Lines look like the other server logs (``{"ts", "level", "logger": "imgcls.serve.access",
    "message": "request", "request_id", "method", "path", "status", "latency_ms", "bytes_in"}``) and reach
    stderr within ``flush_s``; :meth:`close` writes the rest.
    """

    def __init__(self, stream: Any = None, flush_s: float = 0.1) -> None:
        self.stream = stream
        self.flush_s = flush_s
        self._lines: list[tuple[Any, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imgcls-access-log", daemon=True)
        self._thread.start()

    def log(self, request_id: str, method: str, path: str, status: int, latency_ms: float, bytes_in: int) -> None:
        self._lines.append((time.time(), request_id, method, path, status, latency_ms, bytes_in))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._flush()

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        out = []
        second, prefix = -1, ""
        for ts, request_id, method, path, status, latency_ms, bytes_in in lines:
            if int(ts) != second:  # one strftime per second of lines, not per line
                second = int(ts)
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
            stamp = f"{prefix}.{int(ts * 1000) % 1000:03d}Z"
            out.append(
                orjson.dumps(
                    {
                        "ts": stamp,
                        "level": "info",
                        "logger": "imgcls.serve.access",
                        "message": "request",
                        "request_id": request_id,
                        "method": method,
                        "path": path,
                        "status": status,
                        "latency_ms": latency_ms,
                        "bytes_in": bytes_in,
                    }
                ).decode()
            )
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not take the server down
            stream.write("\n".join(out) + "\n")
            stream.flush()
