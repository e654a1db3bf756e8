"""Server settings: one typed object built at the edge (CLI flags, environment) and passed down.

Nothing below the edge reads the environment. With ``--workers N`` the settings travel to the worker processes
as JSON in ``IMGCLS_SERVE_SETTINGS``; the admin token is never serialised (each worker reads
``IMGCLS_ADMIN_TOKEN`` itself, at its own edge: :func:`settings_from_env`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from imgcls.data.decode import DEFAULT_MAX_PIXELS
from imgcls.errors import UsageError

SETTINGS_ENV = "IMGCLS_SERVE_SETTINGS"
ADMIN_TOKEN_ENV = "IMGCLS_ADMIN_TOKEN"
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_DELAY_MS = 5.0


def default_log_path() -> Path:
    """The prediction log used when ``--log-predictions`` is not given: ``$IMGCLS_CACHE/serve/predictions.sqlite``."""
    from imgcls.paths import prediction_log

    return prediction_log()


def normalise_token(token: str | bytes) -> bytes:
    """The one normalisation of an admin token, for the configured and the presented one alike.

    Surrounding whitespace is dropped (a token read from a Kubernetes secret file ends in a newline).
    """
    raw = token.encode("utf-8") if isinstance(token, str) else token
    return raw.strip()


def token_from_env(value: str | None) -> SecretStr | None:
    """``IMGCLS_ADMIN_TOKEN`` as settings take it: unset -> None (admin off); blank -> UsageError (exit 2)."""
    if value is None or value == "":
        return None
    if not normalise_token(value):
        raise UsageError(
            f"{ADMIN_TOKEN_ENV} is set but holds only whitespace",
            hint=f"unset {ADMIN_TOKEN_ENV} to disable the admin endpoints, or set it to a long random token",
        )
    return SecretStr(value)


class ServeSettings(BaseModel):
    """Everything ``imgcls serve`` can be told. Units are in the field names.

    Each field's docstring is its ``imgcls serve --help`` line, and its default and range are the flag's
    (:mod:`imgcls.cli.serve` derives its options from these fields): one source of truth.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: str
    """Bundle directory (exported with `imgcls export`) or store reference URI/NAME@ALIAS or URI/NAME:VERSION."""
    host: str = "127.0.0.1"
    """Address to bind; 0.0.0.0 exposes the server to the network."""
    port: int = Field(default=8000, ge=1, le=65535)
    """Port to listen on; $PORT sets it when --port is not given (the Cloud Run contract)."""
    device: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    """auto, cpu, cuda or tensorrt (cuda/tensorrt fail unless they really load)."""
    engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    """auto (the bundle's serving profile from `imgcls bench --pick`, else onnxruntime), onnxruntime or openvino."""
    int8: bool = False
    """Serve the static-int8 model (imgcls export --int8); the same as --precision int8."""
    precision: Literal["fp32", "bf16", "int8", "fp16"] | None = None
    """fp32, bf16 (openvino), int8 or fp16 (default: the serving profile's, else fp32)."""
    max_batch: int | None = Field(default=None, ge=1, le=1024)
    """Most images per inference call (default: the profile's, else 32)."""
    max_delay_ms: float | None = Field(default=None, ge=0.0, le=10_000.0)
    """Longest wait for a batch to fill after its first image (default: the profile's, else 5 ms)."""
    max_queue: int = Field(default=256, ge=1)
    """Images admitted at once (decoding, queued or in inference); beyond, 503 + Retry-After."""
    timeout_s: float = Field(default=10.0, gt=0.0)
    """Per-request limit from admission to the answer; beyond, 504."""
    max_upload_mb: float = Field(default=10.0, gt=0.0)
    """Largest request body (413), checked while it streams."""
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    """Largest image, width × height (413): the decompression-bomb guard."""
    # Default: one 40 MP image at a time.
    max_decode_mpixels: float = Field(default=48.0, gt=0.0)
    """Millions of pixels decoded at once by uploads over 2 MP (they take turns; small ones never wait)."""
    max_files: int = Field(default=64, ge=1)
    """Most files in one /v1/predict/batch request (413)."""
    # The raw score, not the bundle's temperature-calibrated one: calibrated on held-out digits (T = 0.35) the digits
    # model gives random noise 0.997, so a threshold on it would flag nothing from another domain; raw it gives 0.74.
    uncertain_below: float = Field(default=0.9, ge=0.0, le=1.0)
    """The web page marks an answer "uncertain" when its top-class probability is below this (also in /v1/model
    for other clients). A hint, not an out-of-domain detector: `imgcls drift` watches whole traffic."""
    # The CLI defaults it to default_log_path() and takes 'off'; None here disables it.
    log_predictions: Path | None = None
    """SQLite prediction log (default: ~/.cache/imgcls/serve/predictions.sqlite; 'off' disables it)."""
    log_export: str | None = None
    """Also write the prediction log as closed segments (JSON lines, gzip; one per replica per interval) to a folder
    or gs://BUCKET/PREFIX/, for `imgcls drift report --log URI` over a whole fleet."""
    log_export_every_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    """Close and publish a segment this often, in seconds (and at shutdown)."""
    wandb: bool = False
    """Monitor serving in Weights & Biases (background thread): prediction rows with their image statistics,
    latency and model version; windowed latency percentiles, class histogram and errors by status and code."""
    wandb_project: str = "imgcls-serve"
    """W&B project for --wandb."""
    wandb_mode: Literal["online", "offline"] | None = None
    """online (needs an API key) or offline (no network), as for train (default: $WANDB_MODE, else online when a
    key is configured, else the server refuses to start)."""
    wandb_every_s: float = Field(default=5.0, gt=0.0, le=3600.0)
    """Seconds between W&B logs: the window of the latency percentiles, class histogram and error counts."""
    # a duration string ("15m") is accepted and parsed by _duration below
    wandb_drift_every_s: float | None = Field(default=None, gt=0.0)
    """Every DURATION (e.g. 15m), log the drift of the prediction log's last DURATION (drifted columns, estimated
    accuracy) to the W&B run, computed in a separate process; needs --wandb, the prediction log and a bundle with a
    drift reference (default: off)."""
    workers: int = Field(default=1, ge=1, le=64)
    """Server processes (each loads the model)."""
    drain_s: float = Field(default=8.0, ge=0.0)
    """On SIGTERM: longest wait for in-flight requests."""
    # Decoding holds the GIL for part of its work: on two cores a second decoding thread cost ~15 % more CPU per
    # request for small images (docs/benchmarks.md).
    decode_threads: int | None = Field(default=None, ge=1, le=64)
    """Threads decoding uploads, off the event loop (default: half the cores, at least one)."""
    intra_threads: int | None = Field(default=None, ge=1)
    """onnxruntime intra-op threads (default: one per core)."""
    access_log: bool = True
    """One JSON log line per request on stderr."""
    watch_s: float | None = Field(default=None, gt=0.0)
    """Poll the --model store alias (URI/NAME@ALIAS) every SECONDS; a move is pulled, verified and swapped in
    without a restart (a bad version is refused, the old one keeps serving)."""
    read_timeout_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """Longest a client may take to send the request head, then its body (JSON 408), and to go on reading an answer
    it stopped reading (then the connection is closed)."""
    max_connections: int = Field(default=1000, ge=1)
    """Most open connections per process; beyond, 503 and close."""
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Largest request head (request line + headers); beyond, 431."""
    keep_alive_s: float = Field(default=5.0, gt=0.0, le=600.0)
    """Close a kept-alive connection idle this long."""
    # None: imgcls.serve.model.default_allowed
    allow_models: tuple[str, ...] | None = None
    """A store URI or directory an admin reload may load models from (repeatable; default: the store or directory
    --model is in)."""
    admin_token: SecretStr | None = Field(default=None, exclude=True)
    """Bearer token for ``/v1/admin/*``; None disables the admin endpoints. Never serialised."""

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not normalise_token(value.get_secret_value()):
            raise ValueError("the admin token is empty or whitespace only")
        return value

    @field_validator("wandb_drift_every_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @model_validator(mode="after")
    def _int8_is_a_precision(self) -> ServeSettings:
        if self.int8 and self.precision not in (None, "int8"):
            raise ValueError(f"--int8 and precision {self.precision} exclude each other")
        if self.int8 and self.precision is None:
            object.__setattr__(self, "precision", "int8")
        if self.wandb_drift_every_s is not None and not (self.wandb and self.log_predictions is not None):
            raise ValueError(
                "--wandb-drift-every logs the prediction log's drift to W&B: it needs --wandb and the prediction "
                "log (not --log-predictions off)"
            )
        return self


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``1d`` (or plain seconds) -> seconds.

    Raises:
        ValueError: another form (pydantic reports it with the flag's name).
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a duration: use a number and a unit, e.g. 90s, 15m, 1h")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def settings_to_env(settings: ServeSettings) -> str:
    """JSON for ``IMGCLS_SERVE_SETTINGS`` (the admin token is excluded)."""
    return settings.model_dump_json()


def settings_from_env(environ: dict[str, str] | None = None) -> ServeSettings:
    """Settings for a worker process: ``IMGCLS_SERVE_SETTINGS`` plus the token from ``IMGCLS_ADMIN_TOKEN``."""
    env = os.environ if environ is None else environ
    raw = env.get(SETTINGS_ENV)
    if not raw:
        raise UsageError(f"{SETTINGS_ENV} is not set", hint="start the server with `imgcls serve --model BUNDLE`")
    try:
        settings = ServeSettings.model_validate_json(raw)
    except ValidationError as exc:
        raise UsageError(f"{SETTINGS_ENV} holds invalid settings: {exc}") from None
    return settings.model_copy(update={"admin_token": token_from_env(env.get(ADMIN_TOKEN_ENV))})
