"""The shapes of the server's requests and answers, as pydantic models: the OpenAPI schema is generated from them.

The hot path does not build these models (it serialises dicts with ``json.dumps``); a test checks that real
answers validate against them, so the documentation cannot drift from what the server sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TopK(BaseModel):
    label: str
    class_id: int
    probability: float


class ModelIdentity(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="digest of the bundle's manifest: names this exact model")


class Prediction(BaseModel):
    """``POST /v1/predict``: the top class, the top-k (best first) and who answered."""

    label: str
    class_id: int
    confidence: float = Field(description="probability of the top class")
    top_k: list[TopK]
    model: ModelIdentity
    request_id: str
    latency_ms: float


class ErrorBody(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str
    hint: str | None = None


class Error(BaseModel):
    """Every error answer."""

    error: ErrorBody


class BatchItem(BaseModel):
    """One file of a batch: a prediction (``status`` 200) or its own error."""

    filename: str | None
    status: int
    label: str | None = None
    class_id: int | None = None
    confidence: float | None = None
    top_k: list[TopK] | None = None
    error: ErrorBody | None = None


class BatchPrediction(BaseModel):
    """``POST /v1/predict/batch``: results in the order the files were sent."""

    results: list[BatchItem]
    model: ModelIdentity
    request_id: str
    latency_ms: float


class ModelInput(BaseModel):
    model_config = {"extra": "allow"}
    size: list[int] = Field(description="height, width")
    channels: int


class PublicModelInfo(BaseModel):
    """``GET /v1/model`` without the admin token (with it: also metrics, lineage, export, the reference)."""

    model_config = {"extra": "allow"}
    name: str
    version: str
    sha256: str
    classes: list[str]
    input: ModelInput
    provider: str


class Ready(BaseModel):
    status: str
    model: ModelIdentity
    swapping: bool = Field(description="a new model is loading; the current one keeps serving")


class Alive(BaseModel):
    status: str


class ReloadRequest(BaseModel):
    model: str | None = Field(
        default=None, description="bundle directory or store reference; none: reload the current one"
    )


class Reloaded(BaseModel):
    status: str
    previous: ModelIdentity | None
    model: ModelIdentity
    seconds: float


class PredictForm(BaseModel):
    file: bytes = Field(json_schema_extra={"format": "binary"}, description="one JPEG or PNG (judged by content)")


class BatchForm(BaseModel):
    files: list[bytes] = Field(json_schema_extra={"items": {"type": "string", "format": "binary"}})


_WHY = {
    400: "corrupt or undecodable image, malformed or ambiguous multipart",
    401: "no bearer token",
    403: "wrong token, admin endpoints disabled (IMGCLS_ADMIN_TOKEN unset), or a model outside --allow-models",
    408: "the request head or body did not arrive within --read-timeout-s",
    409: "another reload is in progress, or several workers (use --watch)",
    413: "body or image too large (bytes or pixels), too many files or parts",
    415: "not JPEG/PNG by content, or the body is not multipart/form-data",
    422: "missing field, bad parameter, or an unusable model reference",
    431: "request head larger than --max-header-bytes",
    503: "queue full, not ready, too many connections, or shutting down (with Retry-After)",
    504: "inference timeout",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for these error statuses, each with the :class:`Error` schema."""
    return {s: {"description": _WHY[s], "model": Error} for s in statuses}


def multipart(form: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its multipart body itself, with ``top_k``."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": form.model_json_schema()}},
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
