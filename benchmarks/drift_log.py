"""Reading a drift window out of a long prediction log: time and peak memory of `read_log`, now and at --before.

The log is a week of one model's traffic (``--rows``, 1,000,000 by default, with 5 top-k entries and an 8-number
embedding a row, as a server writes them). Each window is read in a fresh process, ``--rounds`` times, by this
checkout's :func:`imgcls.drift.logs.read_log` and by the one of commit ``--before`` (in ``imgcls/drift/report.py``
before session 18) (which read and checked the
whole log for every window); the medians are printed side by side.

With ``--segments``, the same traffic is a --log-export folder instead: one gzip segment per replica per 5 minutes
(two replicas, 4,032 segments a week), as a fleet's prefix holds them.

    python -m benchmarks drift_log                          # 1,000,000 rows in /tmp/imgcls-drift-log-bench
    python -m benchmarks drift_log -- --rows 200000 --rounds 5
    python -m benchmarks drift_log -- --rows 300000 --segments --before f080bfc
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHA = "c" * 64
WINDOWS = {"--last 10000": {"last": 10_000}, "--since 1h": {"since": "1h"}, "--since 24h": {"since": "24h"}}

_READ = """
import importlib.util, json, resource, sys, time
spec = importlib.util.spec_from_file_location("report_under_test", sys.argv[1])
report = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)
started = time.perf_counter()
window = report.read_log(sys.argv[2], model_sha256=sys.argv[3], **json.loads(sys.argv[4]))
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"s": seconds, "rows": window.rows, "rss_mib": peak}))
"""


SPAN_S = 7 * 86400.0


def table_rows(rows: int, start: int, stop: int, now: float) -> list[tuple[object, ...]]:
    """Rows ``start:stop`` of the week's traffic, as the server's log table holds them."""
    import numpy as np

    from imgcls.serve.predlog import PredictionRecord, row

    rng = np.random.default_rng(start)
    out = []
    for i in range(start, stop):
        p = rng.dirichlet(np.ones(10) * 0.3)
        order = np.argsort(-p)[:5]
        rec = PredictionRecord(
            timestamp=now - SPAN_S + SPAN_S * i / rows, request_id=f"{i:08x}", model_name="fashion",
            model_version="3", model_sha256=SHA, width=28, height=28, format="PNG", bytes=700,
            class_id=int(order[0]), label=f"c{order[0]}", confidence=float(p[order[0]]),
            top_k=[{"label": f"c{c}", "class_id": int(c), "probability": float(p[c])} for c in order],
            latency_ms=2.0, margin=float(p[order[0]] - p[order[1]]), pred_entropy=1.0,
            embedding=[float(x) for x in rng.normal(size=8)],
        )  # fmt: skip
        stats = {"brightness": 0.3, "contrast": 0.2, "saturation": 0.0, "entropy": 3.0, "sharpness": 0.1}
        values = tuple(getattr(rec, f) for f in rec.__dataclass_fields__ if f != "stats")
        out.append(row(values, stats))
    return out


def build_segments(folder: Path, rows: int) -> None:
    """The week as a --log-export folder: two replicas, a segment each per 5 minutes."""
    import gzip

    from imgcls.serve.logexport import segment_name
    from imgcls.serve.predlog import export_row

    tmp = folder.with_name(folder.name + ".building")
    tmp.mkdir(parents=True, exist_ok=True)
    now = time.time()
    per = max(2, round(rows / (SPAN_S / 300)))  # rows per 5 minutes, both replicas
    for seq, start in enumerate(range(0, rows, per)):
        table = table_rows(rows, start, min(rows, start + per), now)
        for replica in (0, 1):
            mine = [export_row(r) for r in table[replica::2]]
            if mine:
                name = segment_name(mine[0]["timestamp"], mine[-1]["timestamp"], f"host-{replica}", 0, seq)
                lines = "\n".join(json.dumps(r) for r in mine).encode()
                (tmp / name).write_bytes(gzip.compress(lines, compresslevel=6))
    tmp.rename(folder)


def build_log(path: Path, rows: int) -> None:
    from imgcls.serve.predlog import COLUMNS, TABLE, connect

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    conn = connect(tmp)
    now = time.time()
    names = ", ".join(c for c, _, _ in COLUMNS)
    sql = f"INSERT INTO {TABLE} ({names}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    for start in range(0, rows, 50_000):
        with conn:
            conn.executemany(sql, table_rows(rows, start, min(rows, start + 50_000), now))
    conn.close()
    tmp.replace(path)
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks drift_log")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default="02dbd07", help="the commit to compare with (read the whole log)")
    ap.add_argument("--segments", action="store_true", help="a --log-export folder of segments, not one SQLite log")
    ap.add_argument("--out", type=Path, default=Path("/tmp/imgcls-drift-log-bench"))
    args = ap.parse_args(sys.argv[1:])
    log = args.out / (f"segments-{args.rows}" if args.segments else f"predictions-{args.rows}.sqlite")
    if not log.exists():
        started = time.perf_counter()
        (build_segments if args.segments else build_log)(log, args.rows)
        size = sum(p.stat().st_size for p in log.iterdir()) if log.is_dir() else log.stat().st_size
        print(f"built {log} ({size / 2**20:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    old = args.out / f"logs-{args.before}.py"
    for module in ("imgcls/drift/logs.py", "imgcls/drift/report.py"):  # read_log's home, then before session 18
        shown = subprocess.run(["git", "show", f"{args.before}:{module}"], cwd=ROOT, capture_output=True)
        if shown.returncode == 0:
            old.write_bytes(shown.stdout)
            break
    else:
        raise SystemExit(f"--before {args.before}: no imgcls/drift/logs.py or report.py at that commit")
    variants = {"now": ROOT / "imgcls" / "drift" / "logs.py", args.before: old}
    print(f"{'window':<14} {'rows':>11}  " + "  ".join(f"{v + ' s':>12} {v + ' MiB':>12}" for v in variants))
    for name, kwargs in WINDOWS.items():
        got = {}
        for variant, source in variants.items():
            runs = []
            for _ in range(args.rounds):
                out = subprocess.run(
                    [sys.executable, "-c", _READ, str(source), str(log), SHA, json.dumps(kwargs)],
                    cwd=ROOT, check=True, capture_output=True, text=True,
                )  # fmt: skip
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            got[variant] = runs
        counts = sorted(r["rows"] for runs in got.values() for r in runs)
        if "last" in kwargs:
            assert counts[0] == counts[-1], got  # the same window
        # a --since window slides with the clock: a row a second over the minutes this takes
        rows = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
        cells = []
        for runs in got.values():
            cells.append(f"{statistics.median(r['s'] for r in runs):>12.3f} "
                         f"{statistics.median(r['rss_mib'] for r in runs):>12.0f}")  # fmt: skip
        print(f"{name:<14} {rows:>11}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
