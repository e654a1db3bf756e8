"""The drift of a server's own traffic, for ``serve --wandb-drift-every``: the last window of its SQLite prediction
log against the served bundle's reference, with the report's own code (:func:`imgcls.drift.report.compare`).

It runs as a process of its own, ``python -m imgcls.drift.monitor BUNDLE LOG SECONDS``, started by
:mod:`imgcls.serve.wandb_drift` on an interval: neither the server's event loop nor its GIL pays for reading
the log and scoring the columns, and a crash here cannot take the server down. It prints one JSON line:
``{"status": "ok", "summary": {...drift.json...}}``, ``{"status": "no_reference"}``, ``{"status": "no_rows"}``
or ``{"status": "error", "message": ...}``; the exit status is 0 unless the process itself failed.

Only the window is read (``WHERE timestamp >= now - SECONDS``, on the log's timestamp index), not the whole log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from imgcls.drift import logs
from imgcls.drift.logs import span_start, sqlite_window, window_of_rows
from imgcls.drift.reference import REFERENCE_FILE, load_reference
from imgcls.drift.report import compare
from imgcls.errors import ImgclsError


def window_rows(log: Path, model_sha256: str, cutoff: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The log's rows of ``model_sha256`` since ``cutoff`` (Unix time), oldest first (the newest
    :data:`~imgcls.drift.logs.MAX_WINDOW_ROWS` of them), and the other models' counts over the same span."""
    cap = logs.MAX_WINDOW_ROWS
    read = sqlite_window(log, model_sha256, cutoff=cutoff, limit=cap + 1, timeout=30.0)  # one more: was it cut?
    rows = read.mine[-cap:]
    start = span_start(rows, cut=len(read.mine) > cap, cutoff=cutoff)
    return rows, {k: n for k, (n, _) in read.census(start).items() if k}


def window_summary(bundle_dir: str | Path, log: str | Path, seconds: float, now: float | None = None) -> dict[str, Any]:
    """The drift summary of the last ``seconds`` of ``log`` for the bundle (see the module docstring)."""
    from imgcls.bundle import load_bundle

    bundle = load_bundle(bundle_dir)  # verified: a corrupted reference is refused by its sha256
    if bundle.meta.drift is None or not bundle.has(REFERENCE_FILE):
        return {"status": "no_reference"}
    reference = load_reference(bundle)
    cutoff = (time.time() if now is None else now) - seconds
    rows, others = window_rows(Path(log), bundle.digest, cutoff)
    if not rows:
        return {"status": "no_rows", "other_models": others}
    return {"status": "ok", "summary": compare(reference, window_of_rows(rows, str(log), others))}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m imgcls.drift.monitor BUNDLE LOG SECONDS", file=sys.stderr)
        return 2
    with contextlib.suppress(OSError):
        os.nice(10)  # behind the server's own work
    try:
        out = window_summary(argv[0], argv[1], float(argv[2]))
    except (ImgclsError, sqlite3.Error, OSError, ValueError) as exc:
        message = exc.message if isinstance(exc, ImgclsError) else f"{type(exc).__name__}: {exc}"
        out = {"status": "error", "message": message}
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
