"""The FastAPI application, wired from its parts: :mod:`~imgcls.serve.protocol` (connections),
:mod:`~imgcls.serve.gateway` (limits, auth, drain, metrics, access log; knows no route), :mod:`~imgcls.serve.routes`
(predict, batch, model info, admin, page; OpenAPI from :mod:`~imgcls.serve.schemas`) and
:mod:`~imgcls.serve.lifecycle` (lifespan, watcher, W&B, SIGTERM drain).

Hot path of ``POST /v1/predict`` (one event loop, no blocking call on it):

0. :class:`~imgcls.serve.protocol.GuardedProtocol` (the connection): a bounded request head (431), a head
   deadline (408), a connection cap (503);
1. :class:`~imgcls.serve.gateway.Gateway` (pure ASGI): request id, admin auth, drain refusal, the whole body
   read under ``--read-timeout-s`` (408) and ``--max-upload-mb`` (413), metrics, one log line;
2. the body is split by :func:`~imgcls.serve.upload.parse_form` (no temporary files; large bodies off the
   loop); only then is a queue slot taken (admission after the body);
3. decoding + resizing run in a thread pool (:meth:`ServedModel.decode`);
4. the prepared ``uint8`` image joins the dynamic batch (:class:`~imgcls.serve.batcher.Batcher`);
5. the answer is serialised with ``orjson``; the prediction log and W&B get a record on a queue.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from imgcls import __version__
from imgcls.serve.errors import ApiError
from imgcls.serve.gateway import JSON, Gateway
from imgcls.serve.lifecycle import make_lifespan, model_event
from imgcls.serve.metrics import Metrics
from imgcls.serve.model import ModelHolder, ServedModel, allowed_roots, load_served
from imgcls.serve.routes import Predictions, add_routes
from imgcls.serve.settings import ServeSettings
from imgcls.serve.state import ServerState

ENDPOINTS = {
    "/v1/predict": "predict",
    "/v1/predict/batch": "predict_batch",
    "/v1/model": "model",
    "/v1/admin/reload": "admin_reload",
    "/livez": "livez",
    "/readyz": "readyz",
    "/metrics": "metrics",
    "/": "page",
    "/favicon.ico": "favicon",
    "/docs": "docs",
    "/openapi.json": "openapi",
}


def _error_response(exc: ApiError) -> Response:
    return Response(exc.to_bytes(), status_code=exc.status, media_type=JSON, headers=exc.headers or None)


# --- the application -------------------------------------------------------------------------------------


class ServerApp(FastAPI):
    """FastAPI with the :class:`Gateway` OUTSIDE its middleware stack, not inside it.

    ``add_middleware`` would put the gateway under Starlette's ServerErrorMiddleware and FastAPI's own
    telemetry and body-limit layers: every prediction would pass through (and its ``send`` be wrapped by) three
    layers that the gateway does again itself (it answers its own JSON 500 and reads the body under its own
    limits). Outermost, the ``POST /v1/predict`` fast path goes from the connection to the route in one hop;
    every other request still runs through the whole FastAPI stack behind the gateway.
    """

    gateway_options: dict[str, Any]
    on_connection_error: Callable[[int, str], None] | None = None
    """Told ``(status, code)`` of each error the connection layer answers itself (:class:`GuardedProtocol`)."""

    def build_middleware_stack(self) -> ASGIApp:
        return Gateway(super().build_middleware_stack(), **self.gateway_options)


def create_app(
    settings: ServeSettings,
    *,
    preload: bool = True,
    loader: Callable[[str], ServedModel] | None = None,
) -> ServerApp:
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
        if state.wandb is not None:  # a reload: the W&B run records the new model (and links its artifact)
            state.wandb.model_changed(model_event(model))

    holder = ModelHolder(settings, loader=loader or default_loader, on_change=on_change)
    if settings.watch_s is not None:
        from imgcls.store.watcher import check_watch_ref

        check_watch_ref(settings.model, settings.watch_s)  # a bad --watch fails before any socket opens
    state = ServerState(settings=settings, metrics=metrics, holder=holder)
    allowed = allowed_roots(settings)
    if preload:
        holder.install(holder.loader(settings.model))
    page = resources.files("imgcls.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    routes = Predictions(state)
    app = ServerApp(
        title="imgcls",
        version=__version__,
        description="Image classification over a verified model bundle: onnxruntime with dynamic batching.",
        lifespan=make_lifespan(state, lambda: routes.large_lane.shutdown(wait=False)),
        telemetry={"tracing": False, "metrics": False, "logs": False},  # our own metrics; no per-request probe
        # '/v1/predict/' was a 307 to 'http://<the client's Host header>/v1/predict': an open redirect that a cache in
        # front could keep, and an upload answered with no answer; now a 404 that names the route
        redirect_slashes=False,
        docs_url=None,  # /docs is added below, its scripts pinned; no /redoc (a second unpinned script)
        redoc_url=None,
    )
    _add_docs(app)
    app.state.server = state
    app.state.holder = holder
    app.on_connection_error = state.connection_error
    add_routes(app, state, routes, page, allowed)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message, hint = str(exc.detail), None
        if exc.status_code == 404:
            path = request.scope["path"]
            route = path.rstrip("/")
            message = f"no route {path[:200]!r}"
            hint = "the routes are listed at /docs"
            if route in ENDPOINTS:
                hint = f"the route is {route} (no trailing slash)"
        elif exc.status_code == 405:  # Starlette's "Method Not Allowed" named neither the route nor what it takes
            allow, path = (exc.headers or {}).get("Allow", ""), request.scope["path"]
            if "GET" in allow.split(", ") and "HEAD" not in allow:  # the gateway answers HEAD as GET (RFC 9110)
                allow += ", HEAD"
                exc.headers = {**(exc.headers or {}), "Allow": allow}
            message = f"{request.method} is not allowed on {path}"
            hint = f"it takes {allow}" + (", e.g. curl -F file=@cat.png URL" if path.startswith("/v1/predict") else "")
        return _error_response(ApiError(exc.status_code, code, message, hint=hint, headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_response(ApiError(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer: the gateway logs the traceback once, with the method and path
        return _error_response(ApiError(500, "internal", "internal server error (logged)"))

    app.gateway_options = {
        "state": state,
        "endpoints": ENDPOINTS,
        "admin_prefix": "/v1/admin",
        "fast_paths": {("POST", "/v1/predict"): routes.predict_asgi},
    }
    return app


# Swagger UI for /docs, pinned to one release with Subresource Integrity: FastAPI's default loads whatever
# swagger-ui-dist@5 the CDN serves today onto the server's own origin. The hashes are of the npm package's files
# (`npm pack swagger-ui-dist@5.36.0`; `openssl dgst -sha384 -binary F | base64`), which jsDelivr serves as they are.
SWAGGER_UI = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.36.0"
SWAGGER_INTEGRITY = {
    "swagger-ui-bundle.js": "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
    "swagger-ui.css": "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
}


def _add_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    response = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="imgcls - API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url="/favicon.ico",  # the server's own, not a request to fastapi.tiangolo.com
    )
    html = bytes(response.body).decode()
    for name, digest in SWAGGER_INTEGRITY.items():
        url = f'"{SWAGGER_UI}/{name}"'
        if url not in html:  # a FastAPI that writes the page another way: no unpinned script instead
            raise RuntimeError(f"the /docs page of this FastAPI does not load {name} where expected")
        html = html.replace(url, f'{url} integrity="{digest}" crossorigin="anonymous"')
    page = html.encode()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)


def create_app_from_env() -> FastAPI:
    """Factory for ``--workers N``: each worker process builds its app from ``IMGCLS_SERVE_SETTINGS``."""
    from imgcls.serve.logs import configure_logging
    from imgcls.serve.settings import settings_from_env

    configure_logging()
    return create_app(settings_from_env())
