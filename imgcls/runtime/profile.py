"""The bundle's serving profile (written by ``imgcls bench --pick``) and how ``engine="auto"`` follows it.

The profile records the engine, precision and threads that were fastest on a machine AND passed the accuracy
gate, with the machine they were measured on. ``auto`` uses it unless the caller asked for another precision
or a GPU device; a profile measured on another CPU model is still used, with a warning in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgcls.bundle import Bundle

logger = logging.getLogger(__name__)

PROFILE_KEY = "serving"


class ServingProfile(BaseModel):
    """How to serve this bundle on the machine it was measured on (``bundle.json`` section ``serving``)."""

    model_config = ConfigDict(extra="ignore")

    engine: Literal["onnxruntime", "openvino"]
    precision: Literal["fp32", "bf16", "int8", "fp16"]
    threads: int | None = Field(default=None, ge=1)
    """Inference threads; None: the engine's default."""
    max_batch: int | None = Field(default=None, ge=1, le=1024)
    """Batcher's largest batch (set by ``--slo-p99-ms``); None: the server's default."""
    max_delay_ms: float | None = Field(default=None, ge=0.0)
    """Batcher's longest wait for a batch to fill (set by ``--slo-p99-ms``); None: the server's default."""
    machine: dict[str, Any] = Field(default_factory=dict)
    """``cpu`` (model name) and ``isa`` (flags) of the machine the choice was measured on."""
    measured: dict[str, Any] = Field(default_factory=dict)
    """The figures behind the choice (img/s, batch, p99, the gate's top-1 agreement and max |Δprob|)."""
    created: str = ""


def serving_profile(bundle: Bundle) -> ServingProfile | None:
    """The bundle's serving profile, or None (none written, or one this version cannot read: logged)."""
    raw = bundle.meta.extra(PROFILE_KEY)  # not yet a typed section of BundleMeta
    if raw is None:
        return None
    try:
        return ServingProfile.model_validate(raw)
    except ValidationError as exc:
        logger.warning("ignoring the serving profile of %s: %s", bundle.path, exc.errors()[0]["msg"])
        return None


def write_serving_profile(path: str | Path, profile: ServingProfile) -> None:
    """Store ``profile`` in the bundle's ``bundle.json`` (an atomic edit; the manifest keeps verifying)."""
    from imgcls.bundle import edit_bundle

    with edit_bundle(path) as edit:
        setattr(edit.meta, PROFILE_KEY, profile.model_dump(mode="json"))


@dataclass(frozen=True)
class EngineChoice:
    """What :func:`resolve_engine` decided, and why."""

    engine: str
    precision: str
    threads: int | None
    reason: str


def resolve_engine(
    bundle: Bundle, *, engine: str, precision: str | None, device: str, threads: int | None
) -> EngineChoice:
    """Turn ``engine="auto"`` into a real engine: the serving profile when it applies, else onnxruntime."""
    from imgcls.runtime.engines import engine_available

    if engine != "auto":
        return EngineChoice(engine, precision or "fp32", threads, "asked for")
    profile = serving_profile(bundle)
    if profile is not None and device in ("auto", "cpu") and precision in (None, profile.precision):
        if engine_available(profile.engine):
            from imgcls.runtime.machine import cpu_model

            measured_on = profile.machine.get("cpu")
            if measured_on and measured_on != cpu_model():
                logger.warning(
                    "the serving profile of %s was measured on %s, this machine is %s: re-run `imgcls bench "
                    "--model %s --pick` here", bundle.path, measured_on, cpu_model(), bundle.path,
                )  # fmt: skip
            return EngineChoice(
                profile.engine,
                profile.precision,
                threads if threads is not None else profile.threads,
                f"serving profile of {profile.created or 'bench --pick'}",
            )
        logger.warning(
            "the serving profile of %s names %s, which is not installed; using onnxruntime "
            "(pip install 'imgcls[%s]')", bundle.path, profile.engine, profile.engine,
        )  # fmt: skip
    chosen = precision or "fp32"
    return EngineChoice("openvino" if chosen == "bf16" else "onnxruntime", chosen, threads, "default")
