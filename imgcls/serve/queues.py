"""Batches off a queue, for the background threads that ship records (prediction log, W&B)."""

from __future__ import annotations

import queue
import time
from typing import Any


def take_batch(
    q: queue.Queue[Any], stop: object, window_s: float, *, max_items: int | None = None, wait_first: bool = True
) -> tuple[list[Any], bool]:
    """Take items from ``q`` until ``window_s`` has passed (counted from the first item when ``wait_first``,
    which blocks for it), ``max_items`` are taken or the ``stop`` sentinel arrives.

    Returns:
        The items, and whether ``stop`` was seen (it is not among the items).
    """
    batch: list[Any] = []
    if wait_first:
        item = q.get()
        if item is stop:
            return batch, True
        batch.append(item)
    deadline = time.monotonic() + window_s
    while max_items is None or len(batch) < max_items:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            item = q.get(timeout=remaining)
        except queue.Empty:
            break
        if item is stop:
            return batch, True
        batch.append(item)
    return batch, False
