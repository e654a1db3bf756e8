"""The routes: predict (the gateway's fast path), batch, model info, probes, metrics, admin reload, the page.

The OpenAPI schema is generated from the pydantic models of :mod:`imgcls.serve.schemas`; the answers are built as
dicts and serialised with ``orjson`` (no model validation per request).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.types import Scope, Send

from imgcls.errors import ConflictError, ImageError, ImgclsError
from imgcls.prediction import SMALL_ROW, prediction_json, top_ids, top_ids_row
from imgcls.serve import schemas
from imgcls.serve.batcher import BatcherClosed, InferenceTimeout, QueueFull
from imgcls.serve.errors import ApiError, overloaded
from imgcls.serve.gateway import JSON, new_request_id, send_error
from imgcls.serve.model import (
    LARGE_DECODE_PIXELS,
    Decoded,
    PixelBudget,
    ServedModel,
    check_ref,
    decode_pixels,
    is_allowed,
)
from imgcls.serve.predlog import PredictionRecord, output_summary
from imgcls.serve.state import ServerState
from imgcls.serve.upload import Part, parse_form

_FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
    b'fill="#2b6cb0"/><path d="M4 11l3-4 2 3 1.5-2L13 11z" fill="#fff"/></svg>'
)
# parts a form may have beyond its files (a proxy or a client may add a field or two)
PART_MARGIN = 8


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj), status_code=status, media_type=JSON, headers=headers)


# --- prediction ------------------------------------------------------------------------------------------


def _top_k_param(query_string: bytes, n_classes: int) -> int:
    """``?top_k=K``: ASCII digits, given once (default 5; at most the class count).

    It was read as Python's ``int()`` reads (``1_0`` was 10, an Arabic-Indic ``٣`` was 3), the last of several
    ``top_k`` won (a proxy in front that checked the first let any other through), and a percent-encoded name
    (``top%5Fk``) was not looked for; all three read differently by another parser.
    """
    if not query_string or (b"top_k" not in query_string and b"%" not in query_string):
        return min(5, n_classes)
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("top_k")
    if values is None:
        return min(5, n_classes)
    if len(values) > 1:
        raise ApiError(
            422,
            "invalid_parameter",
            f"top_k is given {len(values)} times",
            hint="give the query parameter once, e.g. ?top_k=3",
        )
    raw = values[0]
    digits = raw.strip(" ")
    k = 0
    if digits.isascii() and digits.isdigit():
        digits = digits.lstrip("0")
        k = int(digits or "0") if len(digits) <= 18 else n_classes  # beyond: more than any model has classes
    if k < 1:
        raise ApiError(
            422, "invalid_parameter", f"top_k must be a positive integer, got {raw[:40]!r}", hint="e.g. ?top_k=3"
        )
    return min(k, n_classes)


def _prediction(served: ServedModel, probs: np.ndarray, k: int) -> tuple[dict[str, Any], np.ndarray | list[float]]:
    """(the prediction JSON, the row as the record's summary takes it: Python floats when the row is small)."""
    if len(probs) <= SMALL_ROW:  # plain Python: no numpy call per request that could release the loop's GIL
        values = probs.tolist()
        return prediction_json(served.predictor.classes, values, top_ids_row(values, k)), values
    return prediction_json(served.predictor.classes, probs, top_ids(probs, k)), probs


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
        keep = self.state.predlog is not None or self.state.wandb is not None  # both log the image statistics
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
        self,
        served: ServedModel,
        request_id: str,
        decoded: Decoded,
        result: dict[str, Any],
        probs: Any,
        latency: float,
        row: Any = None,
    ) -> None:
        st = self.state
        st.metrics.observe_prediction(result["label"])
        summarised = probs if row is None else row  # the same numbers, as Python floats when the row is small
        outputs = output_summary(summarised) if st.predlog is not None or st.wandb is not None else {}
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
                    **outputs,
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
                    model_name=served.name,
                    model_version=served.version,
                    model_sha256=served.sha256,
                    format=decoded.format,
                    bytes=decoded.nbytes,
                    stats=decoded.stats,
                    stats_source=decoded.stats_source,
                    **outputs,
                )
            )

    async def predict_one(self, scope: Scope, content_type: str | None, body: bytes) -> dict[str, Any]:
        """``POST /v1/predict`` with its whole body: the answer as a dict, or ApiError."""
        request_id: str = scope.get("imgcls.request_id") or new_request_id()
        start: float = scope.get("imgcls.start") or time.perf_counter()
        parts = await parse_form(content_type, body, max_parts=1 + PART_MARGIN)
        data = _the_file(parts).data
        deadline = time.monotonic() + self.state.settings.timeout_s
        served = self._acquire(1)  # admission after the body: a slow client never holds a queue slot
        try:
            k = _top_k_param(scope.get("query_string", b""), len(served.predictor.classes))
            decoded, probs = await self._classify(served, data, deadline)
            result, row = _prediction(served, probs, k)
            latency = round((time.perf_counter() - start) * 1000, 3)
            result["model"] = served.identity
            result["request_id"] = request_id
            result["latency_ms"] = latency
            self._record(served, request_id, decoded, result, probs, latency, row)
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
        body = orjson.dumps(result)
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
        request_id: str = scope.get("imgcls.request_id") or new_request_id()
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
                return {"filename": part.filename, "status": 200, **_prediction(served, probs, k)[0]}, decoded, probs

            outcomes = await asyncio.gather(*(one(p) for p in files))
            latency = round((time.perf_counter() - start) * 1000, 3)
            for result, decoded, probs in outcomes:
                if decoded is not None:
                    self._record(served, request_id, decoded, result, probs, latency)
                elif self.state.wandb is not None:  # a failed file of a batch answered 200: still an error
                    self.state.wandb.error("predict_batch_file", result["status"], result["error"]["code"])
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


def add_routes(app: FastAPI, state: ServerState, routes: Predictions, page: str, allowed: tuple[str, ...]) -> None:
    """Register the routes on ``app`` (``allowed``: where an admin reload may load from)."""
    settings, holder, metrics = state.settings, state.holder, state.metrics
    limits = {
        "max_upload_bytes": settings.max_upload_bytes,
        "max_files": settings.max_files,
        "max_pixels": settings.max_pixels,
    }

    @app.post(
        "/v1/predict",
        summary="Classify one image",
        description="Multipart field `file`: one JPEG, PNG or WebP (judged by content).",
        openapi_extra=schemas.multipart(schemas.PredictForm),
        responses={200: {"model": schemas.Prediction}, **schemas.errors(400, 408, 413, 415, 422, 503, 504)},
        response_class=Response,
    )
    async def predict(request: Request) -> Response:  # served by Gateway's fast path; kept for the schema
        return _json(await routes.predict_one(request.scope, request.headers.get("content-type"), await request.body()))

    @app.post(
        "/v1/predict/batch",
        summary="Classify several images",
        description="Multipart fields `files`: results (or per-file errors) in the order sent.",
        openapi_extra=schemas.multipart(schemas.BatchForm),
        responses={200: {"model": schemas.BatchPrediction}, **schemas.errors(400, 408, 413, 415, 422, 503, 504)},
        response_class=Response,
    )
    async def predict_batch(request: Request) -> Response:
        return await routes.predict_batch(request)

    @app.get(
        "/v1/model",
        summary="The model being served",
        description="Name, version, sha256, classes, input, engine, provider and the limits a client must stay "
        "within; with the admin bearer token, also the metrics, lineage, export figures and the server-side "
        "reference.",
        responses={200: {"model": schemas.ModelInfo}, **schemas.errors(503)},
        response_class=Response,
    )
    async def model_info(request: Request) -> Response:
        served = holder.current
        if served is None:
            raise overloaded("no model is loaded yet", code="not_ready")
        body = served.describe() if request.scope.get("imgcls.admin") else served.describe_public()
        body["limits"] = limits  # what a client must stay within (the page checks files against it)
        body["uncertain_below"] = settings.uncertain_below
        if state.watcher is not None:  # wanted (the store alias) vs served: a refused promotion shows here
            body = {**body, "alias": state.watcher.status(full=bool(request.scope.get("imgcls.admin")))}
        return _json(body)

    @app.get("/livez", summary="The process is up", responses={200: {"model": schemas.Alive}}, response_class=Response)
    async def livez() -> Response:
        return _json({"status": "alive"})

    @app.get(
        "/readyz",
        summary="Ready for traffic",
        responses={200: {"model": schemas.Ready}, **schemas.errors(503)},
        response_class=Response,
    )
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
        openapi_extra={"requestBody": {"content": {JSON: {"schema": schemas.ReloadRequest.model_json_schema()}}}},
        responses={200: {"model": schemas.Reloaded}, **schemas.errors(400, 401, 403, 409, 415, 422)},
        response_class=Response,
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
            except RecursionError:  # '[[[[...': the decoder recurses once per level (was a 500)
                raise ApiError(
                    400, "invalid_json", "the body's JSON is nested too deeply", hint='send {"model": "PATH_OR_REF"}'
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

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(_FAVICON, media_type="image/svg+xml", headers={"cache-control": "max-age=86400"})

    @app.get("/", summary="Web page: drop images, see the top-k", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)
