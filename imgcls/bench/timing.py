"""Timing a callable honestly: warm up until three windows agree within 10 %, then record every call unclipped."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

STABLE_WITHIN = 0.10  # three consecutive warm-up windows whose rates agree within 10 % = stable


@dataclass
class Timing:
    """Per-call latencies of one measurement and what they add up to."""

    calls: int
    items_per_call: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    warmup_windows: int
    stable: bool
    """False: the warm-up hit its limit before three windows agreed (a busy machine); the figures stand as measured."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles_ms(latencies_s: np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max/mean in ms of latencies in seconds (all of them: no outlier is clipped)."""
    if not len(latencies_s):
        return {
            "p50_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
            "mean_ms": float("nan"),
        }
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
    }


def measure(
    fn: Callable[[], object],
    *,
    items_per_call: int,
    window_s: float = 0.25,
    max_warmup_windows: int = 20,
    measure_s: float = 1.0,
    min_calls: int = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Warm ``fn`` up in windows of ``window_s`` until the last three windows' rates agree within 10 % (at most
    ``max_warmup_windows``), then call it for ``measure_s`` (and at least ``min_calls`` times), timing each call.
    """
    rates: list[float] = []
    stable = False
    while len(rates) < max_warmup_windows:
        start = clock()
        n = 0
        while True:
            fn()
            n += 1
            elapsed = clock() - start
            if elapsed >= window_s:
                break
        rates.append(n / elapsed)
        last = rates[-3:]
        if len(last) == 3 and max(last) <= (1 + STABLE_WITHIN) * min(last):
            stable = True
            break
    latencies: list[float] = []
    begin = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        latencies.append(t1 - t0)
        if len(latencies) >= min_calls and t1 - begin >= measure_s:
            break
    total = clock() - begin
    lat = np.asarray(latencies)
    return Timing(
        calls=len(latencies),
        items_per_call=items_per_call,
        seconds=total,
        items_per_s=items_per_call * len(latencies) / total,
        warmup_windows=len(rates),
        stable=stable,
        **percentiles_ms(lat),
    )
