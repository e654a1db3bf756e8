"""The dynamic batcher, over a plain numpy "model": batching, admission, deadlines, failures, closing."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from imgcls.serve.batcher import Batcher, BatcherClosed, InferenceTimeout, QueueFull


class Recorder:
    """infer(): one-hot of the image's first pixel, so each answer shows which image it belongs to."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.threads: set[str] = set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.threads.add(threading.current_thread().name)
        self.sizes.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model exploded")
        out = np.zeros((len(batch), 10), dtype=np.float32)
        out[np.arange(len(batch)), batch[:, 0, 0, 0] % 10] = 1.0
        return out


def image(value: int) -> np.ndarray:
    return np.full((4, 4, 1), value, dtype=np.uint8)


def deadline(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_concurrent_images_are_batched_and_each_gets_its_own_row() -> None:
    infer = Recorder()
    batcher = Batcher(infer, max_batch=8, max_delay_s=0.2, max_queue=64)

    async def main() -> list[int]:
        futures = [batcher.submit(image(i), deadline=deadline()) for i in range(20)]
        rows = await asyncio.gather(*(Batcher.wait(f, deadline()) for f in futures))
        return [int(np.argmax(r)) for r in rows]

    assert asyncio.run(main()) == [i % 10 for i in range(20)]
    batcher.close(wait=True, timeout=5)
    assert sum(infer.sizes) == 20
    assert max(infer.sizes) == 8  # full batches as soon as 8 are queued
    assert infer.threads == {"imgcls-batcher"}  # inference never runs on the event loop's thread


class VirtualTime:
    """A clock for the batcher module that moves only when the batcher waits with a timeout, by that timeout.

    The batcher then runs at full speed, and the time it *would* have waited is exact: a test of its delay
    logic does not depend on the machine's speed (or on a loaded machine's scheduling).
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic

    def condition(self) -> threading.Condition:
        clock = self

        class VirtualCondition(threading.Condition):
            def wait(self, timeout: float | None = None) -> bool:
                if timeout is None:  # nothing queued: a real wait for the next image
                    return super().wait()
                clock.waits.append(timeout)
                clock.now += timeout
                return False

        return VirtualCondition()


@pytest.fixture
def virtual_time(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    """The batcher module's ``time`` and ``threading.Condition`` replaced by :class:`VirtualTime`."""
    import types

    from imgcls.serve import batcher as batcher_module

    clock = VirtualTime()
    shim = types.ModuleType("threading")
    shim.__dict__.update(threading.__dict__)
    shim.Condition = clock.condition  # type: ignore[attr-defined]
    monkeypatch.setattr(batcher_module, "time", clock)
    monkeypatch.setattr(batcher_module, "threading", shim)
    return clock


def test_a_lone_image_waits_exactly_max_delay(virtual_time: VirtualTime) -> None:
    infer = Recorder()
    released_at: list[float] = []
    batcher = Batcher(
        infer, max_batch=32, max_delay_s=0.05, max_queue=8, on_batch=lambda n, s: released_at.append(virtual_time.now)
    )

    async def main() -> None:
        submitted = virtual_time.now
        await Batcher.wait(batcher.submit(image(3), deadline=submitted + 5), submitted + 5)
        assert released_at == [pytest.approx(submitted + 0.05, abs=1e-9)]  # not a moment longer, nor shorter

    asyncio.run(main())
    batcher.close(wait=True, timeout=5)
    assert infer.sizes == [1]


def test_a_full_batch_goes_at_once_however_long_max_delay_is() -> None:
    # with an hour of max_delay, only the size rule can release the batch before the deadline (real clock)
    infer = Recorder()
    batcher = Batcher(infer, max_batch=4, max_delay_s=3600.0, max_queue=16)

    async def main() -> list[int]:
        futures = [batcher.submit(image(i), deadline=deadline(60)) for i in range(4)]
        rows = await asyncio.gather(*(Batcher.wait(f, deadline(60)) for f in futures))
        return [int(np.argmax(r)) for r in rows]

    assert asyncio.run(main()) == [0, 1, 2, 3]
    batcher.close(wait=True, timeout=5)
    assert infer.sizes == [4]


def test_jobs_run_in_decoding_threads_and_their_errors_reach_the_caller() -> None:
    infer = Recorder()
    batcher = Batcher(infer, max_batch=4, max_delay_s=0.01, max_queue=8, decode_threads=2, name="t")
    job_threads: set[str] = set()

    def job(value: int):
        def run():
            job_threads.add(threading.current_thread().name)
            if value < 0:
                raise ValueError("cannot decode")
            return image(value), f"extra-{value}"

        return run

    async def main():
        ok = batcher.submit_job(job(7), deadline=deadline())
        bad = batcher.submit_job(job(-1), deadline=deadline())
        extra, row = await Batcher.wait(ok, deadline())
        with pytest.raises(ValueError, match="cannot decode"):
            await Batcher.wait(bad, deadline())
        return extra, int(np.argmax(row))

    assert asyncio.run(main()) == ("extra-7", 7)
    batcher.close(wait=True, timeout=5)
    assert job_threads <= {"t-decode-0", "t-decode-1"}
    assert infer.sizes == [1]


def test_admission_is_bounded_and_refuses_at_once() -> None:
    batcher = Batcher(Recorder(), max_queue=3)
    batcher.admit(2)
    batcher.admit(1)
    with pytest.raises(QueueFull):
        batcher.admit(1)
    batcher.release(2)
    batcher.admit(2)
    assert batcher.admitted == 3
    batcher.close(wait=True, timeout=5)
    with pytest.raises(BatcherClosed):
        batcher.admit(1)


def test_a_passed_deadline_raises_inference_timeout_and_skips_the_image() -> None:
    infer = Recorder(delay_s=0.3)
    batcher = Batcher(infer, max_batch=1, max_delay_s=0.0, max_queue=8)

    async def main():
        first = batcher.submit(image(1), deadline=deadline())
        second = batcher.submit(image(2), deadline=deadline(0.05))  # waits behind a 0.3 s batch
        with pytest.raises(InferenceTimeout):
            await Batcher.wait(second, deadline(0.05))
        return await Batcher.wait(first, deadline())

    assert int(np.argmax(asyncio.run(main()))) == 1
    batcher.close(wait=True, timeout=5)
    assert infer.sizes == [1]  # the expired image never reached the model


def test_a_failing_model_fails_its_batch_and_keeps_serving() -> None:
    infer = Recorder(fail=True)
    batcher = Batcher(infer, max_batch=4, max_delay_s=0.01, max_queue=8)

    async def main():
        futures = [batcher.submit(image(i), deadline=deadline()) for i in range(3)]
        for f in futures:
            with pytest.raises(RuntimeError, match="model exploded"):
                await Batcher.wait(f, deadline())
        infer.fail = False
        return await Batcher.wait(batcher.submit(image(4), deadline=deadline()), deadline())

    assert int(np.argmax(asyncio.run(main()))) == 4
    batcher.close(wait=True, timeout=5)


def test_close_finishes_what_is_queued_then_refuses() -> None:
    infer = Recorder(delay_s=0.05)
    batcher = Batcher(infer, max_batch=2, max_delay_s=0.0, max_queue=8)

    async def main():
        futures = [batcher.submit(image(i), deadline=deadline()) for i in range(5)]
        batcher.close()
        with pytest.raises(BatcherClosed):
            batcher.submit(image(9), deadline=deadline())
        return [int(np.argmax(await Batcher.wait(f, deadline()))) for f in futures]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
    batcher.close(wait=True, timeout=5)
    assert sum(infer.sizes) == 5
