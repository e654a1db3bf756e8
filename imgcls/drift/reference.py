"""The drift reference: a class-stratified sample of held-out images described the way serving describes traffic.

For each reference image: the image statistics (:func:`imgcls.data.stats.images_stats`, the server's function),
the model outputs (predicted class, confidence, margin, entropy) and the embedding (penultimate features
projected onto ``k`` PCA components fitted on training images). The PCA goes into the exported ONNX graphs as a
second output (``embedding``), so the server and ``imgcls drift report --images`` compute it without torch.
Also stored: a temperature-scaling calibration fitted on the same held-out images (for the label-free accuracy
estimate) and per-column thresholds calibrated by resampling the reference against itself
(:func:`imgcls.drift.columns.calibrate`).

The arrays live in ``drift/reference.npz`` (``allow_pickle=False``), listed in the bundle's files, so its
sha256 is verified on every load and it travels with push/pull; the description is the ``drift`` section
of bundle.json (the typed :class:`imgcls.bundle.DriftSection`).

Example:
    section, blob = build_reference(model, spec, val_images, val_labels, pca_images=train_images)
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import Bundle, DriftSection, InputSpec, load_bundle
from imgcls.data.stats import STAT_NAMES, images_stats
from imgcls.drift import columns as C
from imgcls.errors import BundleError, UsageError

logger = logging.getLogger(__name__)

REFERENCE_FILE = "drift/reference.npz"
EMBEDDING_OUTPUT = "embedding"
MIN_IMAGES, MAX_IMAGES = 1000, 5000  # the --size asked for
MIN_SOURCE_IMAGES = 20  # fewer images than this make no reference (a smaller split is used whole, with a warning)
DEFAULT_IMAGES = 2000
DEFAULT_K = 8
PCA_FIT_IMAGES = 5000  # training images the PCA is fitted on


@dataclass
class Reference:
    """A bundle's drift reference: the section and its (verified) arrays."""

    bundle: Bundle
    section: DriftSection
    data: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return len(self.data[C.CLASS_COLUMN])

    @property
    def k(self) -> int:
        return self.section.embedding.k

    @property
    def n_classes(self) -> int:
        return len(self.bundle.classes)

    @property
    def temperature(self) -> float:
        return self.section.calibration.temperature


def load_reference(bundle: Bundle | str | Path) -> Reference:
    """The verified drift reference of a bundle.

    Raises:
        BundleError: no reference (the hint names ``imgcls drift reference``), or its file fails its sha256.
    """
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)  # verifies every sha256, the reference file included
    section = bundle.meta.drift
    if section is None or not bundle.has(REFERENCE_FILE):
        raise BundleError(
            f"bundle {bundle.path} has no drift reference",
            hint=f"make one with `imgcls drift reference {bundle.path} --data DATASET` (bundles trained by this "
            "version of `imgcls train` have one)",
        )
    try:
        with np.load(bundle.file(REFERENCE_FILE), allow_pickle=False) as z:
            data = {name: np.asarray(z[name]) for name in z.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle.path / REFERENCE_FILE} is not a readable reference ({exc})") from None
    return Reference(bundle, section, data)


def projection(bundle: Bundle) -> tuple[np.ndarray, np.ndarray] | None:
    """The PCA (mean, components) the exported graphs carry, or None for a bundle without a reference."""
    if bundle.meta.drift is None or not bundle.has(REFERENCE_FILE):
        return None
    with np.load(bundle.file(REFERENCE_FILE), allow_pickle=False) as z:
        return np.asarray(z["pca_mean"]), np.asarray(z["pca_components"])


# --- building -------------------------------------------------------------------------------------------


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` rows keeping each class's share (largest remainders), sorted; deterministic for seed."""
    labels = np.asarray(labels)
    size = min(size, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take))[: size - int(take.sum())]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), t, replace=False) for c, t in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits / t
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood (golden-section search on log T in [-3, 3])."""
    lo, hi = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _nll(logits, labels, np.exp(a)), _nll(logits, labels, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def calibrated(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities re-tempered: softmax(log p / T) (the same as softmax(logits / T))."""
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def rgb(images: np.ndarray) -> list[np.ndarray]:
    """uint8 (N, H, W, 1|3) -> RGB arrays for images_stats (gray replicated, as Pillow converts L -> RGB)."""
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return list(np.ascontiguousarray(images))


def _features_and_logits(model: Any, x: np.ndarray, device: str, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from imgcls.models.features import split_head

    features, head = split_head(model)
    feats, logits = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            f = features(torch.from_numpy(x[i : i + batch]).to(device))
            feats.append(f.float().cpu().numpy())
            logits.append(head(f).float().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def build_reference(
    model: Any,
    spec: InputSpec,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    pca_images: np.ndarray | None = None,
    size: int = DEFAULT_IMAGES,
    seed: int = 0,
    k: int = DEFAULT_K,
    source: str = "validation split",
    device: str = "cpu",
) -> tuple[DriftSection, bytes]:
    """The ``drift`` section and the bytes of ``drift/reference.npz`` for held-out prepared images.

    Args:
        model: the trained torch model (eval mode).
        spec: the bundle's input spec.
        images: held-out uint8 (N, H, W, C) images prepared by the evaluation transform, with their ``labels``.
        pca_images: training images the PCA is fitted on (default: the reference sample itself).
        size: reference images (clipped to [1,000, 5,000], and to what is there).
        seed: picks the sample and the calibration windows.
        k: PCA components.
    """
    from imgcls.data.transform import normalize

    if not MIN_IMAGES <= size <= MAX_IMAGES:
        raise UsageError(f"--size {size}: a reference holds between {MIN_IMAGES} and {MAX_IMAGES} images")
    if len(images) < MIN_SOURCE_IMAGES:
        raise UsageError(f"{source} has {len(images)} images; a drift reference needs at least {MIN_SOURCE_IMAGES}")
    if len(images) < size:
        logger.warning("%s has only %d images (asked for %d): the reference uses them all", source, len(images), size)
    pick = stratified_sample(labels, size, seed)
    ref_images, ref_labels = images[pick], np.asarray(labels)[pick].astype(np.int64)
    feats, logits = _features_and_logits(model, normalize(ref_images, spec), device)
    if pca_images is not None and len(pca_images):
        rng = np.random.default_rng(seed + 1)
        fit_idx = np.sort(rng.permutation(len(pca_images))[:PCA_FIT_IMAGES])
        fit_feats, _ = _features_and_logits(model, normalize(pca_images[fit_idx], spec), device)
        fitted_on = f"{len(fit_idx)} training images"
    else:
        fit_feats, fitted_on = feats, "the reference images"
    k = max(1, min(k, fit_feats.shape[1], len(fit_feats) - 1))
    mean = fit_feats.mean(axis=0)
    _, sing, vt = np.linalg.svd(fit_feats - mean, full_matrices=False)
    components = vt[:k].astype(np.float32)
    explained = (sing**2 / max(float((sing**2).sum()), 1e-12))[:k]
    embedding = (feats - mean) @ components.T

    temperature = fit_temperature(logits.astype(np.float64), ref_labels)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    outputs = C.output_columns(probs)
    cal = calibrated(probs, temperature)
    stats = np.array([[s.as_dict()[n] for n in STAT_NAMES] for s in images_stats(rgb(ref_images))])

    data: dict[str, np.ndarray] = {name: stats[:, i] for i, name in enumerate(STAT_NAMES)}
    data.update(outputs)
    data.update({name: embedding[:, i].astype(np.float64) for i, name in enumerate(C.embedding_columns(k))})
    data["label"] = ref_labels
    data["width"] = np.full(len(pick), spec.size[1], dtype=np.int64)
    data["height"] = np.full(len(pick), spec.size[0], dtype=np.int64)
    data["pca_mean"] = mean.astype(np.float32)
    data["pca_components"] = components
    columns = [*C.numeric_columns(k), C.CLASS_COLUMN]
    thresholds = C.calibrate(data, columns, len(probs[0]), seed=seed)
    accuracy = float((outputs[C.CLASS_COLUMN] == ref_labels).mean())
    section = DriftSection.model_validate({
        "file": REFERENCE_FILE,
        "images": len(pick),
        "seed": seed,
        "source": source,
        "sample": "random, stratified by class (each class keeps its share of the held-out images)",
        "columns": [{"name": c, "method": C.method_of(c)} for c in columns],
        "outputs_from": "the torch model (fp32), before export",
        "embedding": {
            "k": k,
            "features": int(fit_feats.shape[1]),
            "onnx_output": EMBEDDING_OUTPUT,
            "fitted_on": fitted_on,
            "explained_variance_ratio": [round(float(v), 6) for v in explained],
        },
        "calibration": {
            "method": "temperature scaling (NLL) on the reference images",
            "temperature": round(temperature, 6),
            "nll_before": round(_nll(logits.astype(np.float64), ref_labels, 1.0), 6),
            "nll_after": round(_nll(logits.astype(np.float64), ref_labels, temperature), 6),
            "reference_accuracy": accuracy,
            "estimated_accuracy": float(cal.max(axis=1).mean()),
        },
        "thresholds": thresholds,
    })  # fmt: skip
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **data)  # type: ignore[arg-type]
    return section, buf.getvalue()
