"""The bundle's serving profile (written by ``imgcls bench --pick``) and how ``engine="auto"`` follows it.

The profile records the engine, precision and threads that were fastest on a machine AND passed the accuracy
gate, with the machine they were measured on: the typed ``serving`` section of the bundle
(:class:`imgcls.bundle.ServingProfile`). ``auto`` uses it unless the caller asked for another precision or a GPU
device; a profile measured on another CPU model is still used, with a warning in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from imgcls.bundle import Bundle, ServingProfile

__all__ = ["EngineChoice", "ServingProfile", "resolve_engine", "serving_profile", "write_serving_profile"]

logger = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8", "fp16")


def serving_profile(bundle: Bundle) -> ServingProfile | None:
    """The bundle's serving profile, or None (none written, or one naming an engine this version lacks: logged)."""
    profile = bundle.meta.serving
    if profile is None:
        return None
    if profile.engine not in ENGINES or profile.precision not in PRECISIONS:
        logger.warning(
            "ignoring the serving profile of %s: %s %s is not an engine and precision this imgcls runs "
            "(upgrade imgcls, or re-run `imgcls bench --model %s --pick`)",
            bundle.path, profile.engine, profile.precision, bundle.path,
        )  # fmt: skip
        return None
    return profile


def write_serving_profile(path: str | Path, profile: ServingProfile) -> None:
    """Store ``profile`` in the bundle's ``bundle.json`` (an atomic edit; the manifest keeps verifying)."""
    from imgcls.bundle import edit_bundle

    with edit_bundle(path) as edit:
        edit.meta.serving = profile


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
