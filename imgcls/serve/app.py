"""The FastAPI application: routes, the gateway middleware, the lifespan and SIGTERM draining.

Hot path of ``POST /v1/predict`` (one event loop, no blocking call on it):

0. :class:`~imgcls.serve.protocol.GuardedProtocol` (the connection): a bounded request head (431), a head
   deadline (408), a connection cap (503);
1. :class:`~imgcls.serve.gateway.Gateway` (pure ASGI): request id, admin auth, drain refusal, the whole body
   read under ``--read-timeout-s`` (408) and ``--max-upload-mb`` (413), metrics, one log line;
2. the body is split by :func:`~imgcls.serve.upload.parse_form` (no temporary files; large bodies off the
   loop); only then is a queue slot taken (admission after the body);
3. decoding + resizing run in a thread pool (:meth:`ServedModel.decode`);
4. the prepared ``uint8`` image joins the dynamic batch (:class:`~imgcls.serve.batcher.Batcher`);
5. the answer is serialised with ``json.dumps``; the prediction log and W&B get a record on a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope, Send

from imgcls import __version__
from imgcls.errors import ConflictError, ImageError, ImgclsError
from imgcls.prediction import PREDICTION_SCHEMA, prediction_json, top_ids
from imgcls.serve.batcher import BatcherClosed, InferenceTimeout, QueueFull
from imgcls.serve.errors import ApiError, overloaded
from imgcls.serve.gateway import JSON, Gateway, send_error
from imgcls.serve.logs import AccessLog
from imgcls.serve.metrics import Metrics
from imgcls.serve.model import (
    LARGE_DECODE_PIXELS,
    Decoded,
    ModelHolder,
    PixelBudget,
    ServedModel,
    allowed_roots,
    check_ref,
    decode_pixels,
    is_allowed,
    load_served,
)
from imgcls.serve.predlog import PredictionLog, PredictionRecord, output_summary
from imgcls.serve.settings import ServeSettings
from imgcls.serve.state import ServerState
from imgcls.serve.upload import Part, parse_form

logger = logging.getLogger(__name__)

ENDPOINTS = {
    "/v1/predict": "predict",
    "/v1/predict/batch": "predict_batch",
    "/v1/model": "model",
    "/v1/admin/reload": "admin_reload",
    "/livez": "livez",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/": "page",
    "/docs": "docs",
    "/openapi.json": "openapi",
}
# parts a form may have beyond its files (a proxy or a client may add a field or two)
PART_MARGIN = 8


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj), status_code=status, media_type=JSON, headers=headers)


def _error_response(exc: ApiError) -> Response:
    return Response(exc.to_bytes(), status_code=exc.status, media_type=JSON, headers=exc.headers or None)


# --- prediction ------------------------------------------------------------------------------------------


def _top_k_param(query_string: bytes, n_classes: int) -> int:
    if not query_string or b"top_k" not in query_string:
        return min(5, n_classes)
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get("top_k") or [""]
    raw = values[-1]
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ApiError(422, "invalid_parameter", f"top_k must be a positive integer, got {raw!r}")
    return min(k, n_classes)


def _prediction(served: ServedModel, probs: np.ndarray, k: int) -> dict[str, Any]:
    return prediction_json(served.predictor.classes, probs, top_ids(probs, k))


class Predictions:
    """The prediction routes' logic, bound to one :class:`ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.budget = PixelBudget(int(state.settings.max_decode_mpixels * 1_000_000))
        self.large_lane = ThreadPoolExecutor(1, thread_name_prefix="imgcls-large-decode")

    def _acquire(self, n: int) -> ServedModel:
        holder = self.state.holder
        served = holder.acquire()
        if served is None:
            raise overloaded("no model is loaded yet", code="not_ready")
        try:
            served.batcher.admit(n)
        except QueueFull:
            holder.release(served)
            raise overloaded(
                f"the queue is full ({served.batcher.max_queue} images admitted); retry shortly", code="queue_full"
            ) from None
        except BatcherClosed:
            holder.release(served)
            raise overloaded("the model is being replaced; retry", code="not_ready") from None
        return served

    def _release(self, served: ServedModel, n: int) -> None:
        served.batcher.release(n)
        self.state.holder.release(served)

    async def _classify(self, served: ServedModel, data: bytes, deadline: float) -> tuple[Decoded, np.ndarray]:
        """Decode (decoding thread) and infer (batch thread) one upload; ApiError on any failure.

        An upload whose decode costs more than :data:`~imgcls.serve.model.LARGE_DECODE_PIXELS` is decoded in
        the large-image lane, within the server's :class:`~imgcls.serve.model.PixelBudget`: small uploads
        never queue behind it.
        """
        keep = self.state.predlog is not None
        pixels = decode_pixels(data, served.predictor.input.size)
        if pixels is not None and pixels > LARGE_DECODE_PIXELS:
            return await self._classify_large(served, data, pixels, deadline, keep)
        try:
            future = served.batcher.submit_job(functools.partial(_decode_job, served, data, keep), deadline=deadline)
            decoded, row = await served.batcher.wait(future, deadline)
            probs = served.unpack(row, decoded)
        except ImageError as exc:
            raise ApiError.from_image_error(exc) from None
        except InferenceTimeout:
            raise _timeout(self.state.settings.timeout_s) from None
        except BatcherClosed:
            raise overloaded("the model is being replaced; retry", code="not_ready") from None
        return decoded, probs

    async def _classify_large(
        self, served: ServedModel, data: bytes, pixels: int, deadline: float, keep: bool
    ) -> tuple[Decoded, np.ndarray]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, deadline - time.monotonic())):
                cost = await self.budget.acquire(pixels)
                try:
                    decoded = await loop.run_in_executor(self.large_lane, _decode_large, served, data, keep)
                finally:
                    await self.budget.release(cost)
        except ImageError as exc:
            raise ApiError.from_image_error(exc) from None
        except TimeoutError:
            raise _timeout(self.state.settings.timeout_s) from None
        try:
            row = await served.batcher.wait(served.batcher.submit(decoded.array, deadline=deadline), deadline)
            probs = served.unpack(row, decoded)
        except InferenceTimeout:
            raise _timeout(self.state.settings.timeout_s) from None
        except BatcherClosed:
            raise overloaded("the model is being replaced; retry", code="not_ready") from None
        return decoded, probs

    def _record(
        self, served: ServedModel, request_id: str, decoded: Decoded, result: dict[str, Any], probs: Any, latency: float
    ) -> None:
        st = self.state
        st.metrics.observe_prediction(result["label"])
        if st.predlog is not None:
            st.predlog.append(
                PredictionRecord(
                    timestamp=time.time(),
                    request_id=request_id,
                    model_name=served.name,
                    model_version=served.version,
                    model_sha256=served.sha256,
                    width=decoded.width,
                    height=decoded.height,
                    format=decoded.format,
                    bytes=decoded.nbytes,
                    class_id=result["class_id"],
                    label=result["label"],
                    confidence=result["confidence"],
                    top_k=result["top_k"],
                    latency_ms=latency,
                    **output_summary(probs),
                    embedding=decoded.embedding,
                    stats=decoded.stats,
                ),
                decoded.stats_source,
            )
        if st.wandb is not None:
            from imgcls.serve.wandb_logger import WandbRecord

            st.wandb.append(
                WandbRecord(
                    request_id=request_id,
                    width=decoded.width,
                    height=decoded.height,
                    thumbnail=decoded.array,
                    class_id=result["class_id"],
                    confidence=result["confidence"],
                    label=result["label"],
                    probabilities=probs,
                    latency_ms=latency,
                )
            )

    async def predict_one(self, scope: Scope, content_type: str | None, body: bytes) -> dict[str, Any]:
        """``POST /v1/predict`` with its whole body: the answer as a dict, or ApiError."""
        request_id: str = scope.get("imgcls.request_id") or os.urandom(16).hex()
        start: float = scope.get("imgcls.start") or time.perf_counter()
        parts = await parse_form(content_type, body, max_parts=1 + PART_MARGIN)
        data = _the_file(parts).data
        deadline = time.monotonic() + self.state.settings.timeout_s
        served = self._acquire(1)  # admission after the body: a slow client never holds a queue slot
        try:
            k = _top_k_param(scope.get("query_string", b""), len(served.predictor.classes))
            decoded, probs = await self._classify(served, data, deadline)
            result = _prediction(served, probs, k)
            latency = round((time.perf_counter() - start) * 1000, 3)
            result["model"] = served.identity
            result["request_id"] = request_id
            result["latency_ms"] = latency
            self._record(served, request_id, decoded, result, probs, latency)
            return result
        finally:
            self._release(served, 1)

    async def predict_asgi(self, scope: Scope, body: bytes, send: Send) -> None:
        """The hot path, straight from the gateway: no router, no Request object, no dependency solving."""
        try:
            result = await self.predict_one(scope, scope.get("imgcls.content_type"), body)
        except ApiError as exc:
            await send_error(send, exc)
            return
        body = json.dumps(result).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def predict_batch(self, request: Request) -> Response:
        """``POST /v1/predict/batch``: results (or per-file errors) in order."""
        scope = request.scope
        request_id: str = scope.get("imgcls.request_id") or os.urandom(16).hex()
        start: float = scope.get("imgcls.start") or time.perf_counter()
        limit = self.state.settings.max_files
        parts = await parse_form(
            request.headers.get("content-type"), await request.body(), max_parts=limit + PART_MARGIN
        )
        files = [p for p in parts if p.name == "files"]
        if not files:
            raise ApiError(
                422,
                "missing_field",
                "the form has no 'files' field",
                hint="send one or more images as multipart fields named 'files'",
            )
        if len(files) > limit:
            raise ApiError(413, "too_many_files", f"{len(files)} files in one request; the limit is {limit}")
        deadline = time.monotonic() + self.state.settings.timeout_s
        served = self._acquire(len(files))
        try:
            k = _top_k_param(scope.get("query_string", b""), len(served.predictor.classes))

            async def one(part: Part) -> tuple[dict[str, Any], Decoded | None, Any]:
                try:
                    decoded, probs = await self._classify(served, part.data, deadline)
                except ApiError as exc:
                    return {"filename": part.filename, "status": exc.status, **exc.body()}, None, None
                return {"filename": part.filename, "status": 200, **_prediction(served, probs, k)}, decoded, probs

            outcomes = await asyncio.gather(*(one(p) for p in files))
            latency = round((time.perf_counter() - start) * 1000, 3)
            for result, decoded, probs in outcomes:
                if decoded is not None:
                    self._record(served, request_id, decoded, result, probs, latency)
            return _json(
                {
                    "results": [r for r, _, _ in outcomes],
                    "model": served.identity,
                    "request_id": request_id,
                    "latency_ms": latency,
                }
            )
        finally:
            self._release(served, len(files))


def _decode_large(served: ServedModel, data: bytes, keep_for_stats: bool) -> Decoded:
    return served.decode(data, keep_for_stats=keep_for_stats)


def _decode_job(served: ServedModel, data: bytes, keep_for_stats: bool) -> tuple[np.ndarray, Decoded]:
    decoded = served.decode(data, keep_for_stats=keep_for_stats)
    return decoded.array, decoded


def _the_file(parts: list[Part]) -> Part:
    files = [part for part in parts if part.name == "file"]
    if len(files) == 1:
        return files[0]
    if files:  # which one would a proxy in front have checked?
        raise ApiError(
            400,
            "duplicate_field",
            f"the form has {len(files)} 'file' fields; /v1/predict takes one",
            hint="send several images to /v1/predict/batch as fields named 'files'",
        )
    names = sorted({p.name for p in parts})
    raise ApiError(
        422,
        "missing_field",
        "the form has no 'file' field" + (f" (it has {', '.join(repr(n) for n in names)})" if names else ""),
        hint="send the image as a multipart field named 'file', e.g. curl -F file=@cat.png URL",
    )


def _timeout(limit: float) -> ApiError:
    return ApiError(504, "inference_timeout", f"no answer within the server's limit of {limit:g} s; retry later")


# --- OpenAPI documentation of the hand-parsed bodies ------------------------------------------------------

_PREDICTION_SCHEMA = {
    "type": "object",
    "properties": {
        **PREDICTION_SCHEMA["properties"],
        "model": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "sha256": {"type": "string"}},
        },
        "request_id": {"type": "string"},
        "latency_ms": {"type": "number"},
    },
}
_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "hint": {"type": "string"}},
        }
    },
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    why = {
        400: "corrupt or undecodable image, malformed multipart",
        401: "no bearer token",
        403: "wrong token, or admin endpoints disabled (IMGCLS_ADMIN_TOKEN unset)",
        409: "another reload is in progress",
        413: "body or image too large (bytes or pixels), too many files",
        415: "not JPEG/PNG by content, or the body is not multipart/form-data",
        422: "missing field, bad parameter, or an unusable model reference",
        503: "queue full, not ready, or shutting down (with Retry-After)",
        504: "inference timeout",
    }
    return {s: {"description": why[s], "content": {JSON: {"schema": _ERROR_SCHEMA}}} for s in statuses}


def _multipart_body(field: str, many: bool) -> dict[str, Any]:
    binary = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": binary} if many else binary
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {field: schema}, "required": [field]}
                }
            },
        },
        "parameters": [
            {
                "name": "top_k",
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "default": 5},
                "description": "how many classes to return, best first",
            }
        ],
    }


# --- the application -------------------------------------------------------------------------------------


def create_app(
    settings: ServeSettings,
    *,
    preload: bool = True,
    loader: Callable[[str], ServedModel] | None = None,
) -> FastAPI:
    """Build the server application.

    Args:
        settings: the server settings.
        preload: load ``settings.model`` now, so a bad model fails here with its own message, before any
            socket is opened; otherwise the lifespan loads it (and ``/readyz`` answers 503 until then).
        loader: ``ref -> ServedModel`` (default: :func:`~imgcls.serve.model.load_served`).

    Raises:
        ImgclsError: with ``preload``, the model cannot be loaded.

    Example:
        app = create_app(ServeSettings(model="runs/digits-resnet8", log_predictions=None))
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    metrics = Metrics()

    def default_loader(ref: str) -> ServedModel:
        return load_served(ref, settings, on_batch=metrics.observe_batch)

    def on_change(model: ServedModel) -> None:
        metrics.set_model(model.name, model.version, model.sha256, model.predictor.provider)
        metrics.track_queue_depth(lambda: float(model.batcher.admitted))

    holder = ModelHolder(settings, loader=loader or default_loader, on_change=on_change)
    if settings.watch_s is not None:
        from imgcls.store.watcher import check_watch_ref

        check_watch_ref(settings.model, settings.watch_s)  # a bad --watch fails before any socket opens
    state = ServerState(settings=settings, metrics=metrics, holder=holder)
    allowed = allowed_roots(settings)
    if preload:
        holder.install(holder.loader(settings.model))
    page = resources.files("imgcls.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.drained = asyncio.Event()
        restore = _install_drain_handler(state)
        state.access = AccessLog() if settings.access_log else None
        watcher: Any = None
        try:
            if holder.current is None:
                holder.install(await asyncio.to_thread(holder.loader, settings.model))
            if settings.log_predictions is not None:
                state.predlog = await asyncio.to_thread(
                    PredictionLog,
                    settings.log_predictions,
                    max_pixels=settings.max_pixels,
                    on_drop=metrics.log_dropped.inc,
                )
            if settings.wandb:
                state.wandb = await asyncio.to_thread(_start_wandb, settings, holder.current)
            if settings.watch_s is not None:
                watcher = await asyncio.to_thread(_start_watcher, state, asyncio.get_running_loop())
                state.watcher = watcher
                metrics.track_alias(str(watcher.ref.alias), watcher.status)
            logger.info(
                "serving %s on %s with %s",
                holder.current.identity if holder.current else None,
                holder.current.predictor.provider if holder.current else None,
                settings.precision,
            )
            yield
        finally:
            if watcher is not None:
                watcher.stop(timeout=1.0)
            restore()
            holder.close()
            routes.large_lane.shutdown(wait=False)
            if state.predlog is not None:
                await asyncio.to_thread(state.predlog.close)
            if state.wandb is not None:
                await asyncio.to_thread(state.wandb.close)
            if state.access is not None:
                state.access.close()

    app = FastAPI(
        title="imgcls",
        version=__version__,
        description="Image classification over a verified model bundle: onnxruntime with dynamic batching.",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},  # our own metrics; no per-request probe
    )
    app.state.server = state
    app.state.holder = holder
    routes = Predictions(state)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(ApiError(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(ApiError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error")
        return _error_response(ApiError(500, "internal", "internal server error (logged)"))

    @app.post(
        "/v1/predict",
        summary="Classify one image",
        description="Multipart field `file`: one JPEG or PNG (judged by content).",
        openapi_extra=_multipart_body("file", many=False),
        responses={200: {"content": {JSON: {"schema": _PREDICTION_SCHEMA}}}, **_errors(400, 413, 415, 422, 503, 504)},
        response_class=Response,
    )
    async def predict(request: Request) -> Response:  # served by Gateway's fast path; kept for the schema
        return _json(await routes.predict_one(request.scope, request.headers.get("content-type"), await request.body()))

    @app.post(
        "/v1/predict/batch",
        summary="Classify several images",
        description="Multipart fields `files`: results (or per-file errors) in the order sent.",
        openapi_extra=_multipart_body("files", many=True),
        responses=_errors(400, 413, 415, 422, 503, 504),
        response_class=Response,
    )
    async def predict_batch(request: Request) -> Response:
        return await routes.predict_batch(request)

    @app.get(
        "/v1/model",
        summary="The model being served",
        description="Name, version, sha256, classes, input and provider; with the admin bearer token, also the "
        "metrics, lineage, export figures and the server-side reference.",
    )
    async def model_info(request: Request) -> Response:
        served = holder.current
        if served is None:
            raise overloaded("no model is loaded yet", code="not_ready")
        body = served.describe() if request.scope.get("imgcls.admin") else served.describe_public()
        if state.watcher is not None:  # wanted (the store alias) vs served: a refused promotion shows here
            body = {**body, "alias": state.watcher.status()}
        return _json(body)

    @app.get("/livez", summary="The process is up")
    async def livez() -> Response:
        return _json({"status": "alive"})

    @app.get("/readyz", summary="Ready for traffic", responses=_errors(503))
    async def readyz() -> Response:
        if state.draining:
            raise overloaded("the server is shutting down", code="draining")
        if holder.current is None:
            raise overloaded("no model is loaded yet", code="not_ready")
        # while a new model loads the old one keeps serving: still ready (a deploy must not empty the pool)
        return _json({"status": "ready", "model": holder.current.identity, "swapping": holder.swapping})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post(
        "/v1/admin/reload",
        summary="Reload the model or switch to another (bearer token)",
        description='Optional JSON body `{"model": "<bundle dir or store reference>"}`. The new model is loaded '
        "and verified beside the old one and swapped atomically; a bad model leaves the old one serving.",
        responses=_errors(401, 403, 409, 422),
    )
    async def admin_reload(request: Request) -> Response:
        if settings.workers > 1:
            raise ApiError(
                409,
                "reload_needs_watch",
                f"this server runs {settings.workers} worker processes and a reload would reach only one of them",
                hint="push the new version to the model store, move the alias, and start the server with "
                "--watch SECONDS: every worker follows the alias",
            )
        body = await request.body()
        ref = None
        if body.strip():
            try:
                payload = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError(
                    400, "invalid_json", "the body is not JSON", hint='send {"model": "PATH_OR_REF"}'
                ) from None
            if not isinstance(payload, dict) or not isinstance(payload.get("model", ""), str):
                raise ApiError(422, "invalid_request", 'the body must be {"model": "<bundle dir or store reference>"}')
            ref = payload.get("model") or None
        try:
            if ref is not None:
                ref = check_ref(ref)
                if not is_allowed(ref, allowed):
                    metrics.reloads.labels("forbidden").inc()
                    raise ApiError(
                        403,
                        "model_not_allowed",
                        f"{ref[:200]!r} is not in a location this server may load models from",
                        hint="start the server with --allow-models naming that store or directory",
                    )
            result = await holder.swap(ref)
        except ConflictError as exc:
            metrics.reloads.labels("conflict").inc()
            raise ApiError(409, "reload_in_progress", exc.message, hint=exc.hint) from None
        except ImgclsError as exc:
            metrics.reloads.labels("failed").inc()
            # the hint of a store or bundle error can list what a server directory holds: not for callers
            raise ApiError(
                422,
                "reload_failed",
                f"{exc.message} (still serving the previous model)",
                hint="check the reference (a bundle directory, URI/NAME@ALIAS or URI/NAME:VERSION); the server log "
                "has the details",
            ) from None
        metrics.reloads.labels("ok").inc()
        return _json(result.to_dict())

    @app.get("/", summary="Web page: drop images, see the top-k", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    app.add_middleware(
        Gateway,
        state=state,
        endpoints=ENDPOINTS,
        admin_prefix="/v1/admin",
        fast_paths={("POST", "/v1/predict"): routes.predict_asgi},
    )
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``--workers N``: each worker process builds its app from ``IMGCLS_SERVE_SETTINGS``."""
    from imgcls.serve.logs import configure_logging
    from imgcls.serve.settings import settings_from_env

    configure_logging()
    return create_app(settings_from_env())


def _start_watcher(state: ServerState, loop: asyncio.AbstractEventLoop) -> Any:
    """``--watch``: follow the model's store alias; each move is pulled, verified and swapped in by the holder.

    A version that fails (download, verification, load, warm-up) is refused: the old model keeps serving, the
    watcher logs the error and ``imgcls_model_reloads_total{result="refused"}`` counts it.
    """
    from imgcls.store import AliasWatcher

    holder, metrics = state.holder, state.metrics

    def deploy(path: Any) -> None:
        holder.swap_threadsafe(loop, str(path))
        metrics.reloads.labels("ok").inc()

    def refused(_version: Any, _exc: BaseException) -> None:
        metrics.reloads.labels("refused").inc()

    assert state.settings.watch_s is not None
    current = holder.current.sha256 if holder.current is not None else None
    watcher = AliasWatcher(
        state.settings.model, state.settings.watch_s, deploy, on_refused=refused, current_digest=current
    )
    return watcher.start()


def _start_wandb(settings: ServeSettings, served: ServedModel | None) -> Any:
    from imgcls.serve.wandb_logger import WandbLogger, wandb_mode

    classes = list(served.predictor.classes) if served else []
    logger_ = WandbLogger(
        project=settings.wandb_project,
        mode=wandb_mode(),
        classes=classes,
        config={
            "model": served.identity if served else None,
            "max_batch": settings.max_batch,
            "max_delay_ms": settings.max_delay_ms,
        },
    )
    logger_.start()
    return logger_


# --- SIGTERM: drain, then let uvicorn exit -----------------------------------------------------------------


def _install_drain_handler(state: ServerState) -> Callable[[], None]:
    """On SIGTERM/SIGINT: readyz 503, refuse new work, wait for in-flight requests (≤ drain_s), then exit.

    uvicorn installs its own handlers before the lifespan starts; this one wraps them and calls uvicorn's
    once the drain is over (a second signal exits at once). Only in the main thread (not under TestClient).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def chain(sig: int) -> None:
        handler = previous.get(sig)
        if callable(handler):
            handler(sig, None)
        elif sig == signal.SIGINT:
            raise KeyboardInterrupt

    def handle(sig: int, _frame: Any) -> None:
        if state.draining:  # second signal: stop waiting
            chain(sig)
            return
        state.draining = True
        logger.info(
            "signal %s: draining %d in-flight request(s), at most %.1f s", sig, state.inflight, state.settings.drain_s
        )
        loop.call_soon_threadsafe(lambda: loop.create_task(_drain_then_exit(state, lambda: chain(sig))))

    for sig in previous:
        signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    return restore


async def _drain_then_exit(state: ServerState, exit_now: Callable[[], None]) -> None:
    started = time.monotonic()
    if state.inflight > 0 and state.drained is not None:
        state.drained.clear()
        if state.inflight > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.drained.wait(), timeout=state.settings.drain_s)
    if state.reading:  # still sending their body: a JSON 503 now, not uvicorn's plain-text 500 later
        state.cut_reading()
        await asyncio.sleep(0.05)  # let them answer before uvicorn closes the connections
    left = state.inflight
    logger.info(
        "drained in %.2f s%s", time.monotonic() - started, f" ({left} request(s) still running)" if left else ""
    )
    exit_now()
