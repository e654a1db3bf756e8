"""How long take_batch (prediction log / W&B threads) really waits past its window, on the real clock.

The unit test checks the window logic on a virtual clock (tests/unit/test_serve_queues.py); this measures what a
loaded machine adds to it. Command: python -m benchmarks serve_queues [-- --rounds N --window-ms W]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time

from imgcls.serve.queues import take_batch

STOP = object()


def main() -> None:
    ap = argparse.ArgumentParser(prog="serve_queues")
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--window-ms", type=float, default=20.0)
    args = ap.parse_args(sys.argv[1:])
    window = args.window_ms / 1000
    over = []
    for _ in range(args.rounds):
        q: queue.Queue[object] = queue.Queue()
        q.put("a")
        started = time.monotonic()
        take_batch(q, STOP, window)
        over.append((time.monotonic() - started - window) * 1000)
    over.sort()
    p50 = statistics.median(over)
    p99 = over[min(len(over) - 1, round(0.99 * (len(over) - 1)))]
    print(
        f"take_batch window {args.window_ms:g} ms, {args.rounds} rounds: waited past it by "
        f"min {over[0]:.3f} / p50 {p50:.3f} / p99 {p99:.3f} / max {over[-1]:.3f} ms"
    )
    if over[0] < 0:
        print("WARNING: a batch ended before its window (a bug in take_batch)")


if __name__ == "__main__":
    main()
