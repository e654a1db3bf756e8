"""``--wandb``: serving monitoring in Weights & Biases, from a background thread, never on the request path.

The request path only puts a small event on a bounded queue (``append``, ``error``): no I/O, no wandb call, no
statistics. When the queue is full the event is dropped and counted (``dropped`` in W&B and
``imgcls_wandb_dropped_total`` in ``/metrics``). Every ``every_s`` the thread logs, in one ``wandb.log`` call:

* ``predictions``: a table (incremental) with one row per prediction (at most ``max_rows_per_flush`` per
  interval; the others count in the aggregates): request id, the model's name, version and sha256 (rows
  before and after a reload differ), the original width, height, format and bytes, a thumbnail of the model
  input, the top class, its probability, margin and entropy, the per-image statistics of the prediction log
  (:func:`imgcls.data.stats.images_stats`, the same function and the same pixels as the SQLite log) and the
  request's latency;
* ``raw_outputs``: a table (incremental) with every class probability of those rows;
* the interval's figures (``window/…``): predictions, latency p50/p95/p99, mean confidence, a histogram of the
  predicted classes (``window/classes``; with ≤ 32 classes also ``window/class/<label>`` counts), predictions
  per served model version (``window/version/<v>``) and errors by status and code
  (``window/errors/<status>/<code>``);
* totals since start-up: ``predictions_seen``, ``mean_latency_ms``, ``mean_confidence``,
  ``most_frequent_class``, ``errors_total/<status>/<code>``, ``dropped``;
* the drift summary of the server's own prediction log (``drift/…``, with ``--wandb-drift-every``; see
  :mod:`imgcls.serve.wandb_drift`).

The run's config holds the served model's identity; a model from a store that ``imgcls push --wandb`` linked
to a W&B artifact is recorded as that artifact (``model/artifact``) and, online, declared as the run's input
with ``run.use_artifact`` (wandb refuses ``use_artifact`` in offline mode: an offline run records the
artifact's name, which ``wandb sync`` uploads with the run, but not the link itself).

The mode is decided at the edge (:func:`imgcls.wandb_run.resolve_mode`), never by wandb's interactive prompt:
offline works without a key or network; online needs a key; with neither the server refuses to start.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgcls.data.stats import STAT_NAMES, ImageStats
from imgcls.errors import UsageError
from imgcls.serve.queues import take_batch
from imgcls.wandb_run import quiet_settings

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = (
    "request_id", "model_name", "model_version", "model_sha256", "width", "height", "format", "bytes", "input",
    "class_id", "label", "confidence", "margin", "pred_entropy", *STAT_NAMES, "latency_ms",
)  # fmt: skip
PER_CLASS_KEYS = 32  # up to this many classes, each class's count is a chart of its own (window/class/<label>)


@dataclass
class WandbRecord:
    """One prediction for W&B (what the request path already has; statistics are computed by the thread)."""

    request_id: str
    width: int
    height: int
    thumbnail: np.ndarray | None  # uint8 (H, W, C): the preprocessed model input (None: not a table row)
    class_id: int
    confidence: float
    label: str
    probabilities: np.ndarray | None  # float32 (K,)
    latency_ms: float
    model_name: str = ""
    model_version: str = ""
    model_sha256: str = ""
    format: str | None = None
    bytes: int = 0
    margin: float | None = None
    pred_entropy: float | None = None
    stats: ImageStats | None = None
    stats_source: np.ndarray | None = None  # as for the prediction log: the thumbnail of the model input


@dataclass
class ErrorEvent:
    """An error answer (4xx/5xx), or a failed file of a batch request."""

    endpoint: str
    status: int
    code: str


@dataclass
class ModelEvent:
    """The served model changed (start-up, admin reload, ``--watch``)."""

    identity: dict[str, Any]
    link: dict[str, Any] | None = None  # from :func:`imgcls.store.lineage.served_artifact`, resolved by the thread
    bundle_dir: str | None = None


@dataclass
class DriftEvent:
    """A drift summary of the last window of the prediction log (``imgcls.drift.report.compare``)."""

    summary: dict[str, Any]


_STOP = object()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 of ``values`` (linear interpolation, numpy's default)."""
    p50, p95, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def record_stats(records: list[WandbRecord]) -> list[dict[str, float] | None]:
    """Each record's image statistics: the server's, else :func:`images_stats` of its thumbnail (as the log's
    writer computes them, so W&B and SQLite agree); None where neither is known."""
    from imgcls.data.stats import images_stats

    out: list[dict[str, float] | None] = [r.stats.as_dict() if r.stats is not None else None for r in records]
    todo = [(i, r.stats_source) for i, r in enumerate(records) if r.stats is None and r.stats_source is not None]
    if todo:
        try:
            computed = images_stats([thumb for _, thumb in todo])
        except Exception:  # an odd image costs its row the statistics, never the others
            logger.warning("image statistics for W&B failed", exc_info=True)
            return out
        for (i, _), stats in zip(todo, computed, strict=True):
            out[i] = stats.as_dict()
    return out


class WandbLogger:
    """Batches predictions, errors and drift summaries to a W&B run from its own thread.

    Args:
        project: W&B project.
        mode: from :func:`wandb_mode`.
        classes: class names (the raw-output table's columns).
        config: run config (server settings).
        model: the served model at start-up (its identity is in the config; see :class:`ModelEvent`).
        flush_s: seconds between ``wandb.log`` calls: the interval of the ``window/…`` figures.
        max_pending: events kept while the thread is behind; beyond, new ones are dropped (and counted).
        max_rows_per_flush: rows added to the tables per interval (the rest only count in the figures).
        on_drop: called for each dropped event (the ``/metrics`` counter).
        wandb_dir: where the run's files go (default: wandb's, ``./wandb`` or ``$WANDB_DIR``).
    """

    def __init__(
        self,
        *,
        project: str,
        mode: str,
        classes: list[str],
        config: dict[str, Any],
        model: ModelEvent | None = None,
        flush_s: float = 5.0,
        max_pending: int = 10_000,
        max_rows_per_flush: int = 256,
        on_drop: Callable[[], None] | None = None,
        wandb_dir: str | None = None,
    ) -> None:
        self.project = project
        self.mode = mode
        self.classes = list(classes)
        self.config = dict(config)
        self.flush_s = flush_s
        self.max_rows_per_flush = max_rows_per_flush
        self.on_drop = on_drop
        self.wandb_dir = wandb_dir
        self.logged = 0
        self.dropped = 0
        self.run: Any = None
        self.last: dict[str, Any] = {}  # the figures of the latest wandb.log call
        self.run_dir: str | None = None
        self.model_link: dict[str, Any] | None = None  # the artifact of the served model, when it has one
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._model = model
        self._seen = 0
        self._latency_sum = 0.0
        self._confidence_sum = 0.0
        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._rows_queued = 0
        self._thread = threading.Thread(target=self._run, name="imgcls-wandb", daemon=True)

    # --- called from the event loop (never blocks) ---------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the run (in the thread) and wait until it is up; raise its error if it could not start."""
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise UsageError(f"--wandb: could not start a W&B run ({self._error})") from self._error

    def append(self, record: WandbRecord) -> None:
        """Queue one prediction (never blocks).

        Only the first ``max_rows_per_flush`` records of an interval become table rows; the others keep only
        what the figures need (no thumbnail, probabilities or statistics source), so a busy server, or a
        stalled W&B thread, holds at most that many images here.
        """
        if self._rows_queued >= self.max_rows_per_flush:
            record.thumbnail = record.probabilities = record.stats_source = None
        else:
            self._rows_queued += 1  # reset by the thread at each flush (an approximate count is enough)
        self._put(record)

    def error(self, endpoint: str, status: int, code: str) -> None:
        """Count one error answer by status and code (never blocks)."""
        self._put(ErrorEvent(endpoint, status, code))

    def model_changed(self, event: ModelEvent) -> None:
        """The server now serves another model (the thread updates the run and links its artifact)."""
        self._put(event)

    def drift(self, summary: dict[str, Any]) -> None:
        """Log a drift summary with the next interval."""
        self._put(DriftEvent(summary))

    def _put(self, event: Any) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()

    def close(self, timeout: float = 30.0) -> None:
        """Log what is queued, finish the run and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    # --- the thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        import wandb

        try:
            mode: Any = self.mode
            settings = quiet_settings(wandb)
            init: dict[str, Any] = {"project": self.project, "job_type": "serve", "mode": mode, "settings": settings}
            if self.wandb_dir:
                init["dir"] = self.wandb_dir
            config = dict(self.config)
            if self._model is not None:
                self._resolve_link(self._model)
                config["model"] = self._model_config(self._model)
            self.run = wandb.init(config=config, **init)
            self.run_dir = getattr(self.run, "dir", None)
        except Exception as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        if self._model is not None:
            self._link(self._model)
        predictions = wandb.Table(columns=list(PREDICTION_COLUMNS), log_mode="INCREMENTAL")
        raw = wandb.Table(columns=["request_id", *self.classes], log_mode="INCREMENTAL")
        stop = False
        try:
            while not stop:
                batch, stop = take_batch(self._queue, _STOP, self.flush_s, wait_first=False)
                self._rows_queued = 0
                if batch:
                    self._log(wandb, batch, predictions, raw)
        finally:
            try:
                self.run.finish()
            except Exception:
                logger.exception("finishing the W&B run failed")

    def _resolve_link(self, event: ModelEvent) -> None:
        if event.link is None and event.bundle_dir is not None:
            from imgcls.store.lineage import served_artifact

            try:
                event.link = served_artifact(event.bundle_dir)
            except Exception as exc:  # a store that cannot be read now must not stop serving
                logger.warning("W&B: could not look up the served model's artifact: %s", exc)

    @staticmethod
    def _model_config(event: ModelEvent) -> dict[str, Any]:
        out = dict(event.identity)
        if event.link:
            out.update({k: v for k, v in event.link.items() if v is not None})
        return out

    def _link(self, event: ModelEvent) -> None:
        """Record the served model in the run: its artifact (``use_artifact`` online), else its identity."""
        model = self._model_config(event)
        self.model_link = event.link
        try:
            summary = {f"model/{k}": v for k, v in model.items() if not isinstance(v, dict)}
            summary.setdefault("model/artifact", None)  # a reload to a model without one clears the previous
            self.run.summary.update(summary)
            artifact = (event.link or {}).get("artifact")
            if artifact and self.mode == "online":
                self.run.use_artifact(artifact, type="model")
                logger.info("W&B: the serve run uses artifact %s", artifact)
            elif artifact:
                logger.info("W&B (offline): the run records artifact %s (use_artifact needs online mode)", artifact)
        except Exception as exc:
            logger.warning("W&B: could not link the served model's artifact: %s", exc)

    def _log(self, wandb: Any, batch: list[Any], predictions: Any, raw: Any) -> None:
        records: list[WandbRecord] = []
        window_errors: Counter[str] = Counter()
        drift: dict[str, Any] = {}
        for event in batch:
            if isinstance(event, WandbRecord):
                records.append(event)
            elif isinstance(event, ErrorEvent):
                window_errors[f"{event.status}/{event.code}"] += 1
            elif isinstance(event, DriftEvent):
                drift = drift_figures(event.summary)
            elif isinstance(event, ModelEvent):
                self._resolve_link(event)
                self._link(event)
        payload: dict[str, Any] = {}
        if records:
            payload.update(self._window(wandb, records))
            rows = [r for r in records if r.thumbnail is not None][: self.max_rows_per_flush]
            self._add_rows(wandb, rows, predictions, raw)
            payload["predictions"] = predictions
            payload["raw_outputs"] = raw
        self._errors.update(window_errors)
        payload.update({f"window/errors/{key}": n for key, n in window_errors.items()})
        payload.update({f"errors_total/{key}": n for key, n in self._errors.items()})
        payload.update(drift)
        if self._seen:
            payload.update(
                {
                    "mean_latency_ms": self._latency_sum / self._seen,
                    "mean_confidence": self._confidence_sum / self._seen,
                    "most_frequent_class": self._counts.most_common(1)[0][0],
                    "predictions_seen": self._seen,
                }
            )
        payload["dropped"] = self.dropped
        try:
            self.run.log(payload)
            self.logged += len(records)
            self.last = {k: v for k, v in payload.items() if k not in ("predictions", "raw_outputs")}
        except Exception:  # W&B trouble must never reach the requests
            logger.exception("logging %d predictions to W&B failed", len(records))

    def _window(self, wandb: Any, records: list[WandbRecord]) -> dict[str, Any]:
        latencies = [r.latency_ms for r in records]
        labels: Counter[str] = Counter(r.label for r in records)
        versions: Counter[str] = Counter(r.model_version for r in records)
        for r in records:
            self._seen += 1
            self._latency_sum += r.latency_ms
            self._confidence_sum += r.confidence
        self._counts.update(labels)
        out: dict[str, Any] = {
            "window/predictions": len(records),
            "window/mean_confidence": float(np.mean([r.confidence for r in records])),
            **{f"window/latency_{k}_ms": v for k, v in percentiles(latencies).items()},
            **{f"window/version/{v}": n for v, n in versions.items()},
        }
        n_classes = max(len(self.classes), 1 + max(r.class_id for r in records))
        counts = np.bincount([r.class_id for r in records], minlength=n_classes)
        out["window/classes"] = wandb.Histogram(np_histogram=(counts, np.arange(n_classes + 1)))
        if n_classes <= PER_CLASS_KEYS:
            out.update({f"window/class/{label}": n for label, n in labels.items()})
        return out

    def _add_rows(self, wandb: Any, records: list[WandbRecord], predictions: Any, raw: Any) -> None:
        stats = record_stats(records)
        for rec, st in zip(records, stats, strict=True):
            assert rec.thumbnail is not None and rec.probabilities is not None
            thumb = rec.thumbnail[:, :, 0] if rec.thumbnail.ndim == 3 and rec.thumbnail.shape[2] == 1 else rec.thumbnail
            predictions.add_data(
                rec.request_id, rec.model_name, rec.model_version, rec.model_sha256, rec.width, rec.height,
                rec.format, rec.bytes, wandb.Image(thumb), rec.class_id, rec.label, rec.confidence, rec.margin,
                rec.pred_entropy, *((st or {}).get(name) for name in STAT_NAMES), rec.latency_ms,
            )  # fmt: skip
            raw.add_data(rec.request_id, *(float(p) for p in rec.probabilities))


def drift_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The ``drift/…`` keys of one drift summary (``imgcls.drift.report.compare``)."""
    accuracy = summary.get("accuracy") or {}
    interval = accuracy.get("interval") or [None, None]
    columns = summary.get("columns") or []
    out: dict[str, Any] = {
        "drift/rows": (summary.get("sample_sizes") or {}).get("current"),
        "drift/other_model_rows": (summary.get("sample_sizes") or {}).get("other_models"),
        "drift/drifted_columns": len(summary.get("drifted_columns") or []),
        "drift/drifted": ", ".join(summary.get("drifted_columns") or []) or "-",
        "drift/estimated_accuracy": accuracy.get("estimated"),
        "drift/estimated_accuracy_low": interval[0],
        "drift/estimated_accuracy_high": interval[1],
        "drift/reference_accuracy": accuracy.get("reference"),
        **{f"drift/score/{c['name']}": c["score"] for c in columns},
    }
    if summary.get("drift") is not None:  # None: too few rows for a verdict (the warning says how many)
        out["drift/drift"] = int(bool(summary["drift"]))
    for c in columns:
        if c.get("drifted") and c.get("description"):
            out[f"drift/why/{c['name']}"] = c["description"]
    return {k: v for k, v in out.items() if v is not None}
