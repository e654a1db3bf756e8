"""The gateway: one pure ASGI middleware for request id, body limits and deadline, auth, drain, metrics, access log.

It knows no route: it is given the metric label of each path, the path prefix that needs the admin token, and
optional fast paths (``(method, path) -> handler(scope, body, send)``) that skip the router.

Admission comes after the body: the gateway reads a request's whole body (``POST``/``PUT``/``PATCH``) under
``read_timeout_s`` (then a JSON 408) and ``max_upload_bytes`` (413) *before* any route runs, so a client that
sends its body slowly, or never, holds no queue slot and no decoding thread. When the SIGTERM drain ends, a
request still reading its body is answered a JSON 503 (``draining``) instead of uvicorn's plain-text 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgcls.serve.errors import ApiError, overloaded
from imgcls.serve.settings import normalise_token
from imgcls.serve.state import ServerState

# Request ids: 128 random bits from a generator seeded from os.urandom once per process (and again in a forked
# worker). They are echoed in X-Request-Id and the logs, not secrets; a per-request os.urandom is a syscall that
# releases the GIL, and an event loop that lets go of the GIL mid-request waits for the other threads to return it.
_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def new_request_id() -> str:
    """A fresh request id: 32 hex digits."""
    return f"{_IDS.getrandbits(128):032x}"


logger = logging.getLogger(__name__)

JSON = "application/json"
FastPath = Callable[[Scope, bytes, Send], Awaitable[None]]
# requests that do not count as in-flight work and stay open while draining
PROBES = frozenset({"livez", "readyz", "metrics"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# answers after which the rest of the request may be unread: the connection cannot be reused
_CLOSE_AFTER = frozenset({408, 413})


class Gateway:
    """Pure ASGI middleware (no per-request task, unlike ``BaseHTTPMiddleware``).

    Args:
        app: the application behind it.
        state: the server's shared state.
        endpoints: path -> metric label (others count as ``other``; under ``admin_prefix`` as ``admin``).
        admin_prefix: paths that need ``Authorization: Bearer <IMGCLS_ADMIN_TOKEN>``.
        fast_paths: ``(method, path) -> handler(scope, body, send)``, called with the whole body.
    """

    def __init__(
        self,
        app: ASGIApp,
        state: ServerState,
        endpoints: Mapping[str, str],
        admin_prefix: str = "/v1/admin",
        fast_paths: Mapping[tuple[str, str], FastPath] | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.endpoints = dict(endpoints)
        self.admin_prefix = admin_prefix
        self.fast_paths = dict(fast_paths or {})
        self.limit = state.settings.max_upload_bytes
        self.read_timeout_s = state.settings.read_timeout_s
        token = state.settings.admin_token
        self.token = normalise_token(token.get_secret_value()) if token is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        st = self.state
        path: str = scope["path"]
        admin_path = path.startswith(self.admin_prefix)
        endpoint = self.endpoints.get(path) or ("admin" if admin_path else "other")
        request_id = None
        content_length = -1
        authorization = None
        authorizations = 0
        content_type = None
        content_types = 0
        encoding = None
        expects_continue = False
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif key == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if _REQUEST_ID.fullmatch(text) else None
            elif key == b"content-type":
                content_type = value.decode("latin-1")
                content_types += 1
            elif key == b"authorization":
                authorization = value
                authorizations += 1
            elif key == b"expect":
                expects_continue = value.strip().lower() == b"100-continue"
            elif key == b"content-encoding":  # a list field: several lines are one list (RFC 9110 5.3)
                encoding = value if encoding is None else encoding + b"," + value
        if request_id is None:
            request_id = new_request_id()
        scope["imgcls.request_id"] = request_id
        scope["imgcls.start"] = start
        scope["imgcls.content_type"] = content_type
        scope["imgcls.admin"] = authorizations == 1 and self._authorized(authorization)
        status = [500]
        started = [False]
        received = [0]
        closing = st.draining
        extra = [(b"x-request-id", request_id.encode())]

        error_code: list[str | None] = [None]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
                status[0] = message["status"]
                headers = list(message.get("headers", ())) + extra
                if closing or st.draining:
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            elif status[0] >= 400 and error_code[0] is None and st.wandb is not None:
                error_code[0] = _error_code(message.get("body", b""))
            await send(message)

        counted = endpoint not in PROBES
        if counted:
            st.inflight += 1
        try:
            if admin_path and authorizations > 1:  # which one would a proxy in front have checked, or added?
                error: ApiError | None = _duplicate("Authorization", authorizations, "send one: Bearer <token>")
            else:
                error = self._refuse(endpoint, admin_path, content_length, authorization, scope["imgcls.admin"])
            if error is None and scope["method"] in _WITH_BODY:
                if encoding is not None:
                    error = _encoded(encoding)
                if content_types > 1:
                    error = _duplicate(
                        "Content-Type", content_types, "send one: Content-Type: multipart/form-data; boundary=..."
                    )
            if error is not None:
                # Refused before its body was read: a client that waits for '100 Continue' never sends the body, and
                # its next request on this connection would be read as that body (RFC 9110 10.1.1: say so, close)
                await send_error(send_wrapper, error, close=expects_continue and scope["method"] in _WITH_BODY)
            elif scope["method"] in _WITH_BODY:
                body = await self._read_body(receive, received)
                fast = self.fast_paths.get((scope["method"], path))
                if fast is not None:
                    await fast(scope, body, send_wrapper)
                else:
                    await self.app(scope, _replay(body, receive), send_wrapper)
            elif scope["method"] == "HEAD":
                # HEAD is GET without the body (RFC 9110: every server supports both). FastAPI's routes are GET only
                # and answered 405, so an uptime check by HEAD (the default of some) saw /livez as down. The app
                # answers GET; uvicorn writes no body for it, judging by its own scope (still HEAD).
                await self.app({**scope, "method": "GET"}, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except ApiError as exc:  # raised before the app's handlers could see it
            if not started[0]:
                with contextlib.suppress(Exception):  # the client may be gone (a disconnect mid-upload)
                    await send_error(send_wrapper, exc)
        except Exception:
            # The one traceback of a 500. An answer already started (the app's JSON 500, or a response that broke
            # mid-way) is not raised on: uvicorn logged a second traceback for it, and it closes the connection of
            # an incomplete response by itself.
            logger.exception("unexpected error on %s %s", scope["method"], path)
            if not started[0]:
                await send_error(send_wrapper, ApiError(500, "internal", "internal server error (logged)"))
        finally:
            if counted:
                st.inflight -= 1
                if st.draining and st.inflight == 0 and st.drained is not None:
                    st.drained.set()
            seconds = time.perf_counter() - start
            st.metrics.observe_request(endpoint, status[0], seconds)
            if endpoint in ("predict", "predict_batch"):
                st.metrics.upload_bytes.observe(received[0])
            if st.access is not None:
                st.access.log(request_id, scope["method"], path, status[0], round(seconds * 1000, 3), received[0])
            if st.wandb is not None and started[0] and status[0] >= 400:
                st.wandb.error(endpoint, status[0], error_code[0] or "http_error")

    async def _read_body(self, receive: Receive, received: list[int]) -> bytes:
        """The whole body, within ``read_timeout_s`` (408) and ``max_upload_bytes`` (413)."""
        st = self.state
        chunks: list[bytes] = []
        limit = self.limit
        if _buffered(receive):  # all of it has arrived already (most uploads): no deadline to arm and cancel
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                chunk = message.get("body", b"")
                received[0] += len(chunk)
                if received[0] > limit:
                    raise too_large(limit)
                return chunk
            if message["type"] == "http.disconnect":
                raise ApiError(400, "incomplete_body", "the client disconnected before the body was complete")
            chunks.append(message.get("body", b""))  # cannot happen with a buffered body; read the rest below
            received[0] += len(chunks[0])
        loop = asyncio.get_running_loop()
        deadline = asyncio.timeout_at(loop.time() + self.read_timeout_s)
        st.reading.add(deadline)
        try:
            async with deadline:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ApiError(400, "incomplete_body", "the client disconnected before the body was complete")
                    chunk = message.get("body", b"")
                    received[0] += len(chunk)
                    if received[0] > limit:
                        raise too_large(limit)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            if st.bodies_cut:
                raise overloaded("the server shut down before the request body was complete", code="draining") from None
            raise ApiError(
                408,
                "read_timeout",
                f"the request body did not arrive within {self.read_timeout_s:g} s",
                hint="send the whole body at once, or start the server with a longer --read-timeout-s",
            ) from None
        finally:
            st.reading.discard(deadline)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _authorized(self, authorization: bytes | None) -> bool:
        if self.token is None or authorization is None or authorization[:7].lower() != b"bearer ":
            return False
        return hmac.compare_digest(normalise_token(authorization[7:]), self.token)

    def _refuse(
        self, endpoint: str, admin_path: bool, content_length: int, authorization: bytes | None, authorized: bool
    ) -> ApiError | None:
        """An error to answer without running the app: admin auth, draining, an announced oversized body."""
        if admin_path:
            if self.token is None:
                return ApiError(
                    403,
                    "admin_disabled",
                    "the admin endpoints are disabled",
                    hint="start the server with IMGCLS_ADMIN_TOKEN set to enable them",
                )
            if authorization is None or authorization[:7].lower() != b"bearer ":
                return ApiError(
                    401,
                    "unauthorized",
                    "the admin endpoints need 'Authorization: Bearer <token>'",
                    headers={"www-authenticate": 'Bearer realm="imgcls-admin"'},
                )
            if not authorized:
                return ApiError(403, "forbidden", "the admin token is wrong")
        if self.state.draining and endpoint not in PROBES:
            return overloaded("the server is shutting down; retry on another instance", code="draining")
        if content_length > self.limit:
            return too_large(self.limit, content_length)
        return None


def _encoded(encoding: bytes) -> ApiError | None:
    """415 for a body with a Content-Encoding (gzip, br, ...): it is read as sent, so a compressed form came back as
    'the boundary from Content-Type never appears in the body'. RFC 9110 answers an unread coding 415 with
    ``Accept-Encoding``; nothing is decompressed here (no second decompression bomb to bound)."""
    codings = [c.strip().lower() for c in encoding.decode("latin-1").split(",")]
    if all(c in ("", "identity") for c in codings):
        return None
    coding = ", ".join(c for c in codings if c not in ("", "identity"))  # the ones it cannot read
    return ApiError(
        415,
        "unsupported_content_encoding",
        f"the request body has Content-Encoding {coding[:40]!r}; the server reads bodies uncompressed",
        hint="send the body without Content-Encoding (JPEG, PNG and WebP are compressed already)",
        headers={"accept-encoding": "identity"},
    )


def _duplicate(name: str, count: int, hint: str) -> ApiError:
    """400 for a request with several lines of a singleton header (RFC 9110). Of two Content-Type headers,
    /v1/predict read the last and /v1/predict/batch the first, so one request was two forms; of two Authorization
    headers the last was checked: a proxy in front may check, or add, another one than the server reads."""
    return ApiError(400, "duplicate_header", f"the request has {count} {name} headers", hint=hint)


def _buffered(receive: Receive) -> bool:
    """Whether ``receive`` will hand over the whole request body at once, without waiting for the client.

    True only for the server's own request cycle (:class:`imgcls.serve.protocol.CorkedCycle`), which knows when
    the parser has seen the end of the message; any other ``receive`` (a test client, another server) is read
    under the deadline as usual.
    """
    complete = getattr(getattr(receive, "__self__", None), "body_complete", None)
    return bool(complete is not None and complete())


def _error_code(body: bytes) -> str:
    """The ``error.code`` of one of our JSON error bodies (errors only: off the 200 path)."""
    try:
        return str(json.loads(body)["error"]["code"])[:64]
    except (ValueError, KeyError, TypeError):
        return "http_error"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then waits on the connection (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def too_large(limit: int, size: int | None = None) -> ApiError:
    told = f" ({size:,} bytes)" if size is not None else ""
    return ApiError(
        413,
        "too_large",
        f"the request body is larger than the limit of {limit:,} bytes{told}",
        hint="send a smaller image, or start the server with a larger --max-upload-mb",
    )


async def send_error(send: Send, error: ApiError, *, close: bool = False) -> None:
    """Answer ``error`` as JSON (closing the connection when the rest of the request may be unread, or ``close``)."""
    body = error.to_bytes()
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in error.headers.items()]
    if close or error.status in _CLOSE_AFTER:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
