"""take_batch: how the prediction log and W&B threads cut their queues into batches."""

from __future__ import annotations

import queue
import threading
import time

from imgcls.serve.queues import take_batch

STOP = object()


def test_a_batch_ends_at_max_items_and_the_rest_waits_for_the_next() -> None:
    q: queue.Queue[object] = queue.Queue()
    for i in range(7):
        q.put(i)
    assert take_batch(q, STOP, 5.0, max_items=3) == ([0, 1, 2], False)
    assert take_batch(q, STOP, 5.0, max_items=3) == ([3, 4, 5], False)


def test_a_batch_ends_at_the_window_and_the_stop_sentinel_is_reported_not_returned() -> None:
    q: queue.Queue[object] = queue.Queue()
    q.put("a")
    started = time.monotonic()
    assert take_batch(q, STOP, 0.05) == (["a"], False)
    assert 0.04 <= time.monotonic() - started < 2.0
    q.put("b")
    q.put(STOP)
    q.put("c")
    assert take_batch(q, STOP, 5.0) == (["b"], True)
    assert q.get_nowait() == "c"


def test_wait_first_blocks_for_the_first_item_and_without_it_an_empty_window_is_an_empty_batch() -> None:
    q: queue.Queue[object] = queue.Queue()
    assert take_batch(q, STOP, 0.02, wait_first=False) == ([], False)
    threading.Timer(0.1, q.put, args=("late",)).start()
    assert take_batch(q, STOP, 0.01) == (["late"], False)  # waited longer than the window for its first item
    q.put(STOP)
    assert take_batch(q, STOP, 5.0) == ([], True)
