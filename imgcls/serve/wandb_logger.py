"""``--wandb``: predictions to Weights & Biases from a background thread, never on the request path.

Every ``flush_s`` the thread logs, in one ``wandb.log`` call:

* ``predictions``: a table (incremental) with the original width and height, a thumbnail of the preprocessed
  model input, the top class index, its probability and its label;
* ``raw_outputs``: a table (incremental) with every class probability of each prediction;
* running aggregates since start: ``mean_latency_ms``, ``mean_confidence``, ``most_frequent_class`` and
  ``predictions_seen``.

The mode is decided at the edge (:func:`wandb_mode`), never by wandb's interactive prompt: offline works
without a key or network; online needs a key; with neither the server refuses to start.
"""

from __future__ import annotations

import logging
import netrc
import os
import queue
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgcls.errors import UsageError
from imgcls.serve.queues import take_batch

logger = logging.getLogger(__name__)

_OFFLINE = ("offline", "dryrun", "disabled")


def wandb_mode(environ: dict[str, str] | None = None) -> str:
    """``offline``/``disabled`` when ``WANDB_MODE`` says so, ``online`` when a key is configured, else refuse.

    Raises:
        UsageError: no API key (``WANDB_API_KEY`` or ``wandb login``) and ``WANDB_MODE`` is not offline.
    """
    env = os.environ if environ is None else environ
    mode = (env.get("WANDB_MODE") or "").strip().lower()
    if mode in _OFFLINE:
        return "disabled" if mode == "disabled" else "offline"
    if env.get("WANDB_API_KEY") or _netrc_has_key(env):
        return "online"
    raise UsageError(
        "--wandb: no W&B API key is configured and WANDB_MODE is not offline",
        hint="run `wandb login` (or export WANDB_API_KEY=...), or export WANDB_MODE=offline to log locally",
    )


def _netrc_has_key(env: Any) -> bool:
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators((env.get("WANDB_BASE_URL") or "api.wandb.ai").split("//")[-1])
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


@dataclass
class WandbRecord:
    """One prediction for W&B."""

    request_id: str
    width: int
    height: int
    thumbnail: np.ndarray  # uint8 (H, W, C): the preprocessed model input
    class_id: int
    confidence: float
    label: str
    probabilities: np.ndarray  # float32 (K,)
    latency_ms: float


_STOP = object()


class WandbLogger:
    """Batches :class:`WandbRecord` s to a W&B run from its own thread.

    Args:
        project: W&B project.
        mode: from :func:`wandb_mode`.
        classes: class names (the raw-output table's columns).
        config: run config (model identity, server settings).
        flush_s: seconds between ``wandb.log`` calls.
        max_pending: records kept while the thread is behind; beyond, new ones are dropped.
        max_rows_per_flush: rows added to the tables per flush (the rest only count in the aggregates).
    """

    def __init__(
        self,
        *,
        project: str,
        mode: str,
        classes: list[str],
        config: dict[str, Any],
        flush_s: float = 5.0,
        max_pending: int = 10_000,
        max_rows_per_flush: int = 256,
    ) -> None:
        self.project = project
        self.mode = mode
        self.classes = list(classes)
        self.config = config
        self.flush_s = flush_s
        self.max_rows_per_flush = max_rows_per_flush
        self.logged = 0
        self.dropped = 0
        self.run: Any = None
        self.last: dict[str, Any] = {}  # the aggregates of the latest wandb.log call
        self.run_dir: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._seen = 0
        self._latency_sum = 0.0
        self._confidence_sum = 0.0
        self._counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="imgcls-wandb", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        """Start the run (in the thread) and wait until it is up; raise its error if it could not start."""
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise UsageError(f"--wandb: could not start a W&B run ({self._error})") from self._error

    def append(self, record: WandbRecord) -> None:
        """Queue one prediction (never blocks)."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 30.0) -> None:
        """Log what is queued, finish the run and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        import wandb

        try:
            mode: Any = self.mode
            self.run = wandb.init(project=self.project, job_type="serve", mode=mode, config=self.config)
            self.run_dir = getattr(self.run, "dir", None)
        except Exception as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        predictions = wandb.Table(
            columns=["request_id", "width", "height", "input", "class_id", "confidence", "label"],
            log_mode="INCREMENTAL",
        )
        raw = wandb.Table(columns=["request_id", *self.classes], log_mode="INCREMENTAL")
        stop = False
        try:
            while not stop:
                batch, stop = take_batch(self._queue, _STOP, self.flush_s, wait_first=False)
                if batch:
                    self._log(wandb, batch, predictions, raw)
        finally:
            try:
                self.run.finish()
            except Exception:
                logger.exception("finishing the W&B run failed")

    def _log(self, wandb: Any, batch: list[WandbRecord], predictions: Any, raw: Any) -> None:
        for rec in batch:
            self._seen += 1
            self._latency_sum += rec.latency_ms
            self._confidence_sum += rec.confidence
            self._counts[rec.label] += 1
        for rec in batch[: self.max_rows_per_flush]:
            thumb = rec.thumbnail[:, :, 0] if rec.thumbnail.ndim == 3 and rec.thumbnail.shape[2] == 1 else rec.thumbnail
            predictions.add_data(
                rec.request_id, rec.width, rec.height, wandb.Image(thumb), rec.class_id, rec.confidence, rec.label
            )
            raw.add_data(rec.request_id, *(float(p) for p in rec.probabilities))
        aggregates = {
            "mean_latency_ms": self._latency_sum / self._seen,
            "mean_confidence": self._confidence_sum / self._seen,
            "most_frequent_class": self._counts.most_common(1)[0][0],
            "predictions_seen": self._seen,
            "dropped": self.dropped,
        }
        try:
            self.run.log({"predictions": predictions, "raw_outputs": raw, **aggregates})
            self.logged += len(batch)
            self.last = aggregates
        except Exception:  # W&B trouble must never reach the requests
            logger.exception("logging %d predictions to W&B failed", len(batch))
