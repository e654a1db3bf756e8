"""take_batch: how the prediction log and W&B threads cut their queues into batches."""

from __future__ import annotations

import queue
import threading

import pytest

from imgcls.serve.queues import take_batch

STOP = object()


def test_a_batch_ends_at_max_items_and_the_rest_waits_for_the_next() -> None:
    q: queue.Queue[object] = queue.Queue()
    for i in range(7):
        q.put(i)
    assert take_batch(q, STOP, 5.0, max_items=3) == ([0, 1, 2], False)
    assert take_batch(q, STOP, 5.0, max_items=3) == ([3, 4, 5], False)


class VirtualClockQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue whose blocking ``get(timeout=...)`` moves a virtual clock by the timeout instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 100.0
        self.timeouts: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def get(self, block: bool = True, timeout: float | None = None) -> object:
        if self.qsize() or timeout is None:
            return super().get(block, timeout)
        self.timeouts.append(timeout)
        self.now += timeout
        raise queue.Empty


def test_a_batch_ends_exactly_at_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    # virtual time: the window is checked exactly and the test does not depend on the machine's speed
    # (the real-clock overshoot is measured by `python -m benchmarks serve_queues`)
    from imgcls.serve import queues

    q = VirtualClockQueue()
    monkeypatch.setattr(queues, "time", q)
    q.put("a")
    q.put("b")
    started = q.now
    assert take_batch(q, STOP, 0.05) == (["a", "b"], False)
    assert q.now - started == pytest.approx(0.05)  # it waited out the window: no less, no more
    assert q.timeouts == [pytest.approx(0.05)]  # in one wait for the rest of the window


def test_the_stop_sentinel_is_reported_not_returned() -> None:
    q: queue.Queue[object] = queue.Queue()
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
