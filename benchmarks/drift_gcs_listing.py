"""How much of a ``gs://`` prefix of log segments a drift report lists: objects listed per window, now and at --before.

A prefix of ``--days`` days of one replica's segments (``--per-day`` a day, 10 rows each) is written to the GCS
emulator, behind the test suite's proxy (``tests/integration/conftest.py``), which answers ``startOffset`` /
``endOffset`` as GCS does (the emulator ignores them) and counts the objects each listing answers. Each window is
read in a fresh process by this checkout's :func:`imgcls.drift.logs.read_log` and by the one of commit
``--before`` (a temporary ``git worktree``); the listings and the objects they held are printed side by side. These
are counts, not times: GCS bills and pages a listing by its objects (~1,000 a page).

    python -m benchmarks drift_gcs_listing                               # 30 days x 48 segments, before 5d9896c
    python -m benchmarks drift_gcs_listing -- --days 60 --per-day 48 --before 5d9896c
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = {"--last 100": {"last": 100}, "--last 5000": {"last": 5000}, "--since 1h": {"since": "1h"},
           "--since 7d": {"since": "7d"}}  # fmt: skip
_RECORD = {"model_name": "m", "model_version": "1", "model_sha256": "a" * 64, "brightness": 0.3, "contrast": 0.2,
           "saturation": 0.0, "entropy": 3.0, "sharpness": 0.1, "class_id": 1, "confidence": 0.9,
           "top_k": [{"label": "c1", "class_id": 1, "probability": 0.9}], "margin": 0.8,
           "pred_entropy": 0.3}  # fmt: skip
_READ = """
import json, sys
sys.path.insert(0, sys.argv[1])
try:
    from imgcls.drift.logs import read_log
except ImportError:  # before session 18
    from imgcls.drift.report import read_log
print(read_log(sys.argv[2], model_sha256="a" * 64, **json.loads(sys.argv[3])).rows)
"""


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks drift_gcs_listing")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=int, default=48, help="segments a day (48: one every 30 minutes)")
    ap.add_argument("--before", default="5d9896c", help="the commit to compare with (listed the whole prefix)")
    args = ap.parse_args(sys.argv[1:])
    sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "tests")]
    from conftest import running_emulator  # the test suite's emulator behind its offset-honouring proxy

    work = Path(tempfile.mkdtemp(prefix="imgcls-gcs-listing-"))
    old = work / "before"
    with running_emulator() as proxy:
        try:
            _compare(proxy, args, old)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
            shutil.rmtree(work, ignore_errors=True)


def _compare(proxy: Any, args: argparse.Namespace, old: Path) -> None:
    """Write the prefix, then list it per window with this checkout and with ``--before``'s."""
    os.environ["STORAGE_EMULATOR_HOST"] = proxy.url
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.before], cwd=ROOT, check=True)
    from imgcls.serve.logexport import segment_name
    from imgcls.store.gcs import make_client

    client = make_client()
    bucket = client.create_bucket("bench")
    now, n = time.time(), 0
    for day in range(args.days):
        for k in range(args.per_day):
            first = now - day * 86400 - k * 86400 / args.per_day - 60
            ts = [first + i for i in range(10)]
            body = gzip.compress("\n".join(json.dumps({"timestamp": t, **_RECORD}) for t in ts).encode())
            bucket.blob(f"p/{segment_name(ts[0], ts[-1], 'host-0', 0, n)}").upload_from_string(body)
            n += 1
    print(f"{n:,} segments over {args.days} days under gs://bench/p/ (the emulator, through the test proxy)")
    print(f"{'window':12s} {'code':10s} {'rows':>6s} {'listings':>9s} {'objects listed':>15s}")
    for label, window in WINDOWS.items():
        for name, tree in ((args.before, old), ("now", ROOT)):
            del proxy.requests[:]
            read = subprocess.run(
                [sys.executable, "-c", _READ, str(tree), "gs://bench/p/", json.dumps(window)],
                capture_output=True,
                text=True,
            )
            rows = read.stdout.strip() if read.returncode == 0 else f"exit {read.returncode}: {read.stderr[-200:]}"
            items = [int(q["items"]) for q in proxy.requests if "items" in q]
            print(f"{label:12s} {name:10s} {rows:>6s} {len(items):>9d} {sum(items):>15,d}", flush=True)


if __name__ == "__main__":
    main()
