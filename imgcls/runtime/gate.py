"""The accuracy gate: an engine × precision against the fp32 onnxruntime reference, on the bundle's real images.

``imgcls bench`` never reports a speed (nor picks an engine) without this gate's verdict. The images are the
bundle's own real samples (``samples/val.npz``, else ``samples/train.npz``, written by ``imgcls train``), or
the prepared images the caller passes. What is compared is what really runs: the engine's own precision
(OpenVINO's precision hint is always explicit, see :mod:`imgcls.runtime.ov`).

Thresholds: fp32 must reproduce the reference (max |Δprob| ≤ 1e-3, top-1 agreement ≥ 99.9 %); a reduced
precision (bf16, int8, fp16) must agree on top-1 for ≥ 97 % of the images and, where labels are known, lose at
most 1.0 point of top-1 accuracy — the bound ``imgcls export`` already holds its int8 model to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from imgcls.bundle import Bundle
from imgcls.errors import UsageError

SAMPLE_FILES = ("samples/val.npz", "samples/train.npz")
FP32_MAX_PROB_DIFF = 1e-3
FP32_MIN_AGREEMENT = 0.999
REDUCED_MIN_AGREEMENT = 0.97
REDUCED_MAX_TOP1_DROP = 0.01


@dataclass
class GateImages:
    """Prepared ``uint8`` ``(N, H, W, C)`` images, their labels when known, and where they came from."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


@dataclass
class GateResult:
    """One engine × precision judged against the reference."""

    engine: str
    precision: str
    provider: str
    images: int
    source: str
    top1_agreement: float
    max_abs_prob_diff: float
    top1: float | None
    reference_top1: float | None
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_images(bundle: Bundle, limit: int = 1024) -> GateImages:
    """The bundle's real sample images (at most ``limit``).

    Raises:
        UsageError: the bundle holds no samples (train with ``imgcls train``, which saves them).
    """
    spec = bundle.input
    for rel in SAMPLE_FILES:
        if not bundle.has(rel):
            continue
        try:
            with np.load(bundle.file(rel), allow_pickle=False) as z:
                images = np.asarray(z["images"] if "images" in z else z["x"])
                raw_labels = z["labels"] if "labels" in z else z.get("y")
                labels = None if raw_labels is None else np.asarray(raw_labels).astype(np.int64)
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"{bundle.path / rel} is not a readable samples file ({exc})") from None
        if images.dtype != np.uint8 or images.shape[1:] != (*spec.size, spec.channels):
            raise UsageError(
                f"{bundle.path / rel} holds {images.dtype} {images.shape}; expected uint8 (N, {spec.size[0]}, "
                f"{spec.size[1]}, {spec.channels}) prepared images"
            )
        return GateImages(images[:limit], None if labels is None else labels[:limit], f"bundle {rel}")
    raise UsageError(
        f"bundle {bundle.path} holds no real sample images ({' or '.join(SAMPLE_FILES)}) for the accuracy gate",
        hint="re-train it with `imgcls train` (which saves them), or pass --images DIR with real images",
    )


def judge(
    probs: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray | None,
    *,
    engine: str,
    precision: str,
    provider: str,
    source: str,
) -> GateResult:
    """Compare ``probs`` (the candidate's probabilities) with the fp32 onnxruntime ``reference``."""
    if probs.shape != reference.shape:
        return GateResult(
            engine,
            precision,
            provider,
            len(reference),
            source,
            0.0,
            float("inf"),
            None,
            None,
            False,
            f"output shape {probs.shape} differs from the reference {reference.shape}",
        )
    finite = bool(np.all(np.isfinite(probs)))
    agreement = float((probs.argmax(1) == reference.argmax(1)).mean()) if len(probs) else 0.0
    diff = float(np.abs(probs - reference).max()) if len(probs) and finite else float("inf")
    top1 = ref_top1 = None
    if labels is not None and len(labels):
        top1 = float((probs.argmax(1) == labels).mean())
        ref_top1 = float((reference.argmax(1) == labels).mean())
    failures = []
    if not finite:
        failures.append("non-finite outputs")
    if precision == "fp32":
        if diff > FP32_MAX_PROB_DIFF:
            failures.append(f"max |Δprob| {diff:.2g} > {FP32_MAX_PROB_DIFF:g}")
        if agreement < FP32_MIN_AGREEMENT:
            failures.append(f"top-1 agreement {agreement:.2%} < {FP32_MIN_AGREEMENT:.1%}")
    else:
        if agreement < REDUCED_MIN_AGREEMENT:
            failures.append(f"top-1 agreement {agreement:.2%} < {REDUCED_MIN_AGREEMENT:.0%}")
        if top1 is not None and ref_top1 is not None and ref_top1 - top1 > REDUCED_MAX_TOP1_DROP:
            failures.append(f"top-1 {top1:.2%} is {100 * (ref_top1 - top1):.1f} points below fp32's {ref_top1:.2%}")
    passed = not failures
    reason = "passed" if passed else "; ".join(failures)
    return GateResult(engine, precision, provider, len(probs), source, agreement, diff, top1, ref_top1, passed, reason)


def probabilities(predictor: Any, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """The predictor's probabilities for prepared ``uint8`` images, ``batch`` at a time."""
    out = [predictor.infer_prepared(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(predictor.classes)), np.float32)
