"""The shapes of the server's requests and answers, as pydantic models: the OpenAPI schema is generated from them.

The hot path does not build these models (it serialises dicts with ``json.dumps``); a test checks that real
answers validate against them, so the documentation cannot drift from what the server sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """An answer's shape: no field beyond the documented ones (the schema says ``additionalProperties: false``)."""

    model_config = ConfigDict(extra="forbid")


class TopK(Answer):
    label: str
    class_id: int
    probability: float


class ModelIdentity(Answer):
    name: str
    version: str
    sha256: str = Field(description="digest of the bundle's manifest: names this exact model")


class Prediction(Answer):
    """``POST /v1/predict``: the top class, the top-k (best first) and who answered."""

    label: str
    class_id: int
    confidence: float = Field(description="probability of the top class")
    top_k: list[TopK]
    model: ModelIdentity
    request_id: str
    latency_ms: float


class ErrorBody(Answer):
    code: str = Field(description="stable, machine-readable")
    message: str
    hint: str | None = None


class Error(Answer):
    """Every error answer."""

    error: ErrorBody


class BatchItem(Answer):
    """One file of a batch: a prediction (``status`` 200) or its own error."""

    filename: str | None
    status: int
    label: str | None = None
    class_id: int | None = None
    confidence: float | None = None
    top_k: list[TopK] | None = None
    error: ErrorBody | None = None


class BatchPrediction(Answer):
    """``POST /v1/predict/batch``: results in the order the files were sent."""

    results: list[BatchItem]
    model: ModelIdentity
    request_id: str
    latency_ms: float


class ModelInput(Answer):
    """What the model expects: the server resizes and normalises uploads to it."""

    size: list[int] = Field(description="height, width")
    channels: int
    mean: list[float]
    std: list[float]
    interpolation: str


class AliasVersion(Answer):
    version: int | None
    digest: str | None


class RefusedVersion(Answer):
    version: int | None = None
    digest: str | None = None
    error: str | None


class AliasStatus(Answer):
    """With ``--watch``: the version the store alias points at (wanted) vs the one being served."""

    ref: str
    alias: str
    wanted: AliasVersion | None
    served: AliasVersion | None
    in_sync: bool = Field(description="false while the alias points at a version this server refused or has not loaded")
    refused: RefusedVersion | None = Field(description="the wanted version this server refused, and why")


class Limits(Answer):
    """What one request may carry (beyond: 413)."""

    max_upload_bytes: int = Field(description="largest request body (--max-upload-mb)")
    max_files: int = Field(description="most files in one /v1/predict/batch request")
    max_pixels: int = Field(description="largest image, width × height")


class ModelInfo(Answer):
    """``GET /v1/model``: anyone sees name, version, sha256, classes, input, engine, precision and provider; the
    fields marked *admin* only come with the admin bearer token (they describe the server, not the model's use)."""

    name: str
    version: str
    sha256: str
    classes: list[str]
    input: ModelInput
    engine: str
    precision: str
    provider: str
    limits: Limits
    uncertain_below: float = Field(description="the page marks an answer uncertain below this top-class probability")
    alias: AliasStatus | None = Field(default=None, description="with --watch only")
    metrics: dict[str, Any] | None = Field(default=None, description="admin")
    lineage: dict[str, Any] | None = Field(default=None, description="admin")
    export: dict[str, Any] | None = Field(default=None, description="admin")
    model: dict[str, Any] | None = Field(default=None, description="admin")
    engine_version: str | None = Field(default=None, description="admin")
    engine_choice: str | None = Field(default=None, description="admin")
    threads: int | None = Field(default=None, description="admin")
    model_file: str | None = Field(default=None, description="admin")
    ref: str | None = Field(default=None, description="admin: the server-side reference it was loaded from")
    loaded_at: str | None = Field(default=None, description="admin")
    max_batch: int | None = Field(default=None, description="admin")
    max_delay_ms: float | None = Field(default=None, description="admin")


ADMIN_ONLY = frozenset(f for f, info in ModelInfo.model_fields.items() if (info.description or "").startswith("admin"))


class Ready(Answer):
    status: str
    model: ModelIdentity
    swapping: bool = Field(description="a new model is loading; the current one keeps serving")


class Alive(Answer):
    status: str


class ReloadRequest(BaseModel):
    model: str | None = Field(
        default=None, description="bundle directory or store reference; none: reload the current one"
    )


class Reloaded(Answer):
    status: str
    previous: ModelIdentity | None
    model: ModelIdentity
    seconds: float


class PredictForm(BaseModel):
    file: bytes = Field(json_schema_extra={"format": "binary"}, description="one JPEG, PNG or WebP (judged by content)")


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
