"""Prometheus metrics of one server process, in their own registry (so several apps can live in one test run).

With ``--workers N`` every worker keeps its own metrics; ``/metrics`` answers for the worker that served the
scrape (scrape each worker, or run one worker per container as on Cloud Run / Kubernetes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BYTES_BUCKETS = (1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)


class Metrics:
    """The server's metrics; label children are cached so the hot path does one dict lookup per update."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("imgcls_requests", "HTTP requests answered.", ["endpoint", "status"], registry=r)
        self.duration = Histogram(
            "imgcls_request_duration_seconds",
            "Time from the request's arrival to its answer.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "imgcls_inference_batch_size", "Images per onnxruntime call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "imgcls_inference_seconds", "Time of one onnxruntime batch call.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "imgcls_queue_depth", "Images admitted and not yet answered (decoding, queued or in inference).", registry=r
        )
        self.predictions = Counter("imgcls_predictions", "Predictions by top class.", ["label"], registry=r)
        self.upload_bytes = Histogram(
            "imgcls_upload_bytes", "Size of prediction request bodies.", buckets=BYTES_BUCKETS, registry=r
        )
        self.model_info = Gauge(
            "imgcls_model_info",
            "The model being served (value 1).",
            ["name", "version", "sha256", "provider"],
            registry=r,
        )
        self.aborted = Counter(
            "imgcls_connections_aborted",
            "Connections aborted with no answer possible, by reason (write_timeout: the client stopped reading).",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter("imgcls_model_reloads", "Model reloads by result.", ["result"], registry=r)
        self.log_dropped = Counter(
            "imgcls_prediction_log_dropped",
            "Prediction-log records lost: the writer fell behind, died before committing them or could not store them.",
            registry=r,
        )
        self.wandb_dropped = Counter(
            "imgcls_wandb_dropped",
            "W&B events (predictions, errors) dropped because its thread fell behind.",
            registry=r,
        )
        self.wandb_drift_checks = Counter(
            "imgcls_wandb_drift_checks",
            "Drift checks of the prediction log for W&B (--wandb-drift-every), by result.",
            ["result"],
            registry=r,
        )
        self._requests: dict[tuple[str, int], Any] = {}
        self._durations: dict[str, Any] = {}
        self._predictions: dict[str, Any] = {}
        self._model_labels: tuple[str, str, str, str] | None = None

    def _answered(self, endpoint: str, status: int) -> Any:
        """The ``imgcls_requests_total`` child of ``(endpoint, status)``, made once."""
        child = self._requests.get((endpoint, status))
        if child is None:
            child = self._requests[(endpoint, status)] = self.requests.labels(endpoint, str(status))
        return child

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self._answered(endpoint, status).inc()
        hist = self._durations.get(endpoint)
        if hist is None:
            hist = self._durations[endpoint] = self.duration.labels(endpoint)
        hist.observe(seconds)

    def observe_connection_error(self, status: int, code: str) -> None:
        """An error the connection layer handled before any route ran (a 503 beyond the connection cap, a 408 for a
        head that did not arrive, a 431, a 400 for bytes that are not HTTP): its answer is counted in
        ``imgcls_requests_total{endpoint="connection"}`` (no duration: no request was read); a connection aborted
        while its answer was being written was counted by its route already, and is counted as aborted."""
        if code == "write_timeout":
            self.aborted.labels(code).inc()
        else:
            self._answered("connection", status).inc()

    def observe_prediction(self, label: str) -> None:
        child = self._predictions.get(label)
        if child is None:
            child = self._predictions[label] = self.predictions.labels(label)
        child.inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)

    def set_model(self, name: str, version: str, sha256: str, provider: str) -> None:
        """Point ``imgcls_model_info`` at the model now served (the previous one's series is removed)."""
        labels = (name, version, sha256, provider)
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels

    def track_alias(self, alias: str, status: Callable[[], dict[str, Any]]) -> None:
        """``--watch``: export the alias's wanted version vs the served one (``status`` is the watcher's).

        Alert on ``imgcls_model_alias_in_sync == 0`` for longer than a few polls: the store says one version,
        this server serves another (it refused the new one; ``/v1/model`` says why).
        """

        def seq(key: str) -> float:
            entry = status().get(key) or {}
            value = entry.get("version")
            return float(value) if value is not None else float("nan")

        wanted = Gauge(
            "imgcls_model_alias_wanted_version",
            "The version the watched store alias points at.",
            ["alias"],
            registry=self.registry,
        )
        served = Gauge(
            "imgcls_model_alias_served_version",
            "The version this server serves (NaN when it is not a version of the store).",
            ["alias"],
            registry=self.registry,
        )
        in_sync = Gauge(
            "imgcls_model_alias_in_sync",
            "1 when the served version is the one the alias points at, 0 when it is not (e.g. refused).",
            ["alias"],
            registry=self.registry,
        )
        wanted.labels(alias).set_function(lambda: seq("wanted"))
        served.labels(alias).set_function(lambda: seq("served"))
        in_sync.labels(alias).set_function(lambda: 1.0 if status().get("in_sync") else 0.0)

    def track_prediction_log(self, writer_up: Callable[[], bool]) -> Callable[[], None]:
        """Export the prediction-log writer's liveness; returns the callback that counts a writer restart.

        Alert on ``imgcls_prediction_log_writer_up == 0`` for longer than a minute (a writer crash-looping) and on
        a rising ``imgcls_prediction_log_dropped_total``.
        """
        up = Gauge(
            "imgcls_prediction_log_writer_up",
            "1 while the prediction log's writer process runs, 0 while it is dead and being restarted.",
            registry=self.registry,
        )
        up.set_function(lambda: 1.0 if writer_up() else 0.0)
        restarts = Counter(
            "imgcls_prediction_log_writer_restarts",
            "Prediction-log writer processes restarted after dying (kill -9, OOM kill, a crash).",
            registry=self.registry,
        )
        return restarts.inc

    def render(self) -> bytes:
        return generate_latest(self.registry)
