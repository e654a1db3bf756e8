"""HTTP errors of the server: every one is JSON ``{"error": {"code", "message"[, "hint"]}}`` with a status.

Bad input maps to 4xx, overload and readiness to 503 with ``Retry-After``, a passed deadline to 504; a 500
means a bug in the server, never bad input.
"""

from __future__ import annotations

import json

from imgcls.errors import IMAGE_ERROR_STATUS, ImageError, ImgclsError


class ApiError(Exception):
    """An error answer: HTTP status, a stable machine-readable code, a message and an optional hint."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str]]:
        error = {"code": self.code, "message": self.message}
        if self.hint:
            error["hint"] = self.hint
        return {"error": error}

    def to_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()

    @classmethod
    def from_image_error(cls, exc: ImageError) -> ApiError:
        return cls(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, exc.message, hint=exc.hint)

    @classmethod
    def from_imgcls_error(cls, exc: ImgclsError, status: int = 422) -> ApiError:
        if isinstance(exc, ImageError):
            return cls.from_image_error(exc)
        return cls(status, exc.code, exc.message, hint=exc.hint)


def overloaded(message: str, code: str = "overloaded", retry_after_s: int = 1) -> ApiError:
    """503 with Retry-After: the queue is full, the server is draining, or no model is ready."""
    return ApiError(503, code, message, headers={"retry-after": str(retry_after_s)})
