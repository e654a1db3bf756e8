"""Dynamic batching: decoding threads feed a bounded queue; one thread runs the model on up to ``max_batch``.

The event loop never decodes and never runs the model. It *admits* images (:meth:`Batcher.admit`, refused at
once when ``max_queue`` images are already admitted) and hands each upload to :meth:`Batcher.submit_job`:

1. a decoding thread (``decode_threads`` of them) runs the job — decode, check, resize — and puts the
   prepared ``uint8`` array straight on the batch queue (no hop back through the event loop);
2. the inference thread takes whatever is queued — up to ``max_batch`` images, waiting at most
   ``max_delay_s`` after the first one arrived — stacks them and calls ``infer`` (onnxruntime releases the
   GIL and uses its own intra-op threads); while a batch runs the next one fills up, so under load batches
   grow by themselves and at low load an image waits at most ``max_delay_s``;
3. all the futures of a batch are resolved with ONE ``call_soon_threadsafe``.

Images whose deadline passed are skipped before inference; the awaiting side (:meth:`Batcher.wait`) raises
:class:`InferenceTimeout` at the deadline. The batcher is generic over ``infer`` (``uint8 (N, H, W, C) ->
probabilities (N, K)``), so it is tested without a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

InferFn = Callable[[np.ndarray], np.ndarray]
Job = Callable[[], tuple[np.ndarray, Any]]


class QueueFull(Exception):
    """More images are admitted than ``max_queue``: the caller answers 503 at once."""


class BatcherClosed(Exception):
    """The batcher stopped (its model was replaced or the server shuts down)."""


class InferenceTimeout(Exception):
    """The request's deadline passed before its answer."""


@dataclass(eq=False)
class _Item:
    array: np.ndarray
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    deadline: float  # time.monotonic()
    enqueued: float
    extra: Any = None
    job: bool = False


_STOP = object()


class Batcher:
    """Decoding threads, a bounded batch queue and one inference thread.

    Args:
        infer: ``uint8 (N, H, W, C)`` -> ``float32 (N, K)``; called from the inference thread only.
        max_batch: most images per call of ``infer``.
        max_delay_s: longest wait for more images after the first image of a batch arrived.
        max_queue: most images admitted at once (decoding, waiting or in inference).
        decode_threads: threads running :meth:`submit_job` jobs.
        on_batch: called from the inference thread after each batch with (batch size, seconds in ``infer``).
        name: names the threads.

    Example:
        batcher = Batcher(predictor.infer_prepared, max_batch=32, max_delay_s=0.005, max_queue=256)
        batcher.admit(1)
        try:
            future = batcher.submit_job(lambda: (predictor.prepare(predictor.decode(data)), None), deadline=d)
            _, probs = await batcher.wait(future, d)
        finally:
            batcher.release(1)
    """

    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch: int = 32,
        max_delay_s: float = 0.005,
        max_queue: int = 256,
        decode_threads: int = 2,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "imgcls-batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0 or decode_threads < 1:
            raise ValueError("max_batch, max_queue and decode_threads must be >= 1 and max_delay_s >= 0")
        self.infer = infer
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.admitted = 0  # touched on the event loop only
        self.batches = 0
        self.images = 0
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._decoders_alive = decode_threads
        self._decoders = [
            threading.Thread(target=self._decode_loop, name=f"{name}-decode-{i}", daemon=True)
            for i in range(decode_threads)
        ]
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        for t in self._decoders:
            t.start()
        self._thread.start()

    # --- event-loop side ----------------------------------------------------------------------------------

    def admit(self, n: int = 1) -> None:
        """Reserve room for ``n`` images or raise :class:`QueueFull` (never waits)."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if self.admitted + n > self.max_queue:
            raise QueueFull(f"{self.admitted} images are already admitted (limit {self.max_queue})")
        self.admitted += n

    def release(self, n: int = 1) -> None:
        """Give back what :meth:`admit` reserved, once the request is answered."""
        self.admitted -= n

    @property
    def waiting(self) -> int:
        """Images prepared and queued for the inference thread (not yet in a batch)."""
        return len(self._queue)

    def submit(self, array: np.ndarray, *, deadline: float) -> asyncio.Future[Any]:
        """Queue one prepared image; the future resolves to its probability row. Call on the event loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        self._enqueue(_Item(array, future, loop, deadline, time.monotonic()))
        return future

    def submit_job(self, job: Job, *, deadline: float) -> asyncio.Future[Any]:
        """Run ``job() -> (prepared array, extra)`` in a decoding thread, then batch the array.

        The future resolves to ``(extra, probability row)``, or raises what the job raised.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        self._jobs.put((job, future, loop, deadline))
        return future

    @staticmethod
    async def wait(future: asyncio.Future[Any], deadline: float) -> Any:
        """Await ``future`` until ``deadline`` (``time.monotonic()``); :class:`InferenceTimeout` after it."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 and not future.done():
            future.cancel()
            raise InferenceTimeout("the deadline passed")
        loop = asyncio.get_running_loop()
        timer = loop.call_later(remaining, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def close(self, *, wait: bool = False, timeout: float | None = None) -> None:
        """Stop once the jobs and images already queued have run. With ``wait``, join the threads."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        for _ in self._decoders:
            self._jobs.put(_STOP)
        if wait:
            for t in (*self._decoders, self._thread):
                t.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- worker threads -----------------------------------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        with self._cond:
            self._queue.append(item)
            n = len(self._queue)
            if n == 1 or n >= self.max_batch:
                self._cond.notify()

    def _decode_loop(self) -> None:
        try:
            while True:
                task = self._jobs.get()
                if task is _STOP:
                    return
                job, future, loop, deadline = task
                if future.done():  # timed out or cancelled while waiting
                    continue
                try:
                    array, extra = job()
                except BaseException as exc:
                    _call_soon(loop, _fail, future, exc)
                    continue
                self._enqueue(_Item(array, future, loop, deadline, time.monotonic(), extra, True))
        finally:
            with self._cond:
                self._decoders_alive -= 1
                self._cond.notify_all()

    def _take_batch(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue:
                if self._closed and self._decoders_alive == 0:
                    return None
                self._cond.wait(0.5 if self._closed else None)
            first = self._queue[0].enqueued
            while len(self._queue) < self.max_batch and not self._closed:
                remaining = first + self.max_delay_s - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = [it for it in batch if it.deadline > now and not it.future.done()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                probs = self.infer(np.stack([it.array for it in live]))
                error: BaseException | None = None
            except Exception as exc:  # a broken model must not kill the thread
                logger.exception("inference failed for a batch of %d", len(live))
                probs, error = None, exc
            seconds = time.perf_counter() - started
            self.batches += 1
            self.images += len(live)
            if self.on_batch is not None:
                try:
                    self.on_batch(len(live), seconds)
                except Exception:  # metrics must not break inference
                    logger.exception("on_batch callback failed")
            by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
            for i, it in enumerate(live):
                by_loop.setdefault(it.loop, []).append(i)
            for loop, indices in by_loop.items():
                _call_soon(loop, _resolve, [live[i] for i in indices], indices, probs, error)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(fn, *args)


def _resolve(items: list[_Item], indices: list[int], probs: np.ndarray | None, error: BaseException | None) -> None:
    for it, i in zip(items, indices, strict=True):
        if it.future.done():
            continue
        if error is not None or probs is None:
            it.future.set_exception(error or RuntimeError("inference failed"))
        else:
            it.future.set_result((it.extra, probs[i]) if it.job else probs[i])


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(InferenceTimeout("the inference deadline passed"))
