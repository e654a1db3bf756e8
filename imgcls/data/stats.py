"""Per-image statistics: ONE function, used for the training reference, the prediction log and drift.

All values are computed on a copy downscaled to at most 128 px on its long side (:func:`stats_thumbnail`), so
the cost is bounded and the statistics of a 4000 px image and of its thumbnail agree.

What the statistics describe: the drift reference, the server's prediction log and ``imgcls drift report
--images`` all give these functions the MODEL'S INPUT — the image decoded and prepared by the bundle's
evaluation transform (``Predictor.prepare``: resized/cropped to the model's size, in its channels) — not the
file as uploaded. The three then compute the same numbers for the same image (no train/serve skew), the
numbers describe what the model sees, and the server never decodes an upload twice. The server makes the
thumbnail (:func:`stats_thumbnail`) in its decoding thread and its log writer computes the statistics of
that thumbnail: ``images_stats([x]) == images_stats([stats_thumbnail(x)])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

STAT_NAMES = ("brightness", "contrast", "saturation", "entropy", "sharpness")
_MAX_SIDE = 128
# pixels per vectorised chunk: temporaries stay cache-sized (8 images of 32×32 ran at 29 µs an image here,
# 32 at once at 47, one at a time at 115)
_CHUNK_PIXELS = 8 * 32 * 32


@dataclass(frozen=True)
class ImageStats:
    brightness: float  # mean luma, 0..1
    contrast: float  # std of luma, 0..0.5
    saturation: float  # mean HSV saturation, 0..1
    entropy: float  # Shannon entropy of the 256-bin luma histogram, bits (0..8)
    sharpness: float  # variance of a 4-neighbour Laplacian of luma (0..1 scale)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in STAT_NAMES}  # not dataclasses.asdict: it deep-copies


def image_stats(img: Image.Image | np.ndarray) -> ImageStats:
    """Brightness, contrast, saturation, entropy and sharpness of a decoded image (any mode; or its uint8
    ``(H, W, 3)`` RGB pixels)."""
    return images_stats([img])[0]


def images_stats(images: Sequence[Image.Image | np.ndarray]) -> list[ImageStats]:
    """:func:`image_stats` of many images, in order. Images of one size share every numpy call, so a batch of
    small images costs a fraction of calling :func:`image_stats` on each (per-call overhead dominates at 32×32).

    An image may also be given as the ``uint8`` ``(H, W, 3)`` RGB array of its pixels (what the prediction log
    receives), which skips Pillow: the same statistics as for ``Image.fromarray(array)``.
    """
    arrays = [_rgb_array(img) for img in images]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, arr in enumerate(arrays):
        by_shape.setdefault(arr.shape, []).append(i)
    out: list[ImageStats | None] = [None] * len(arrays)
    for shape, same in by_shape.items():
        step = max(1, _CHUNK_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(same), step):
            indices = same[start : start + step]
            values = _stats(np.stack([arrays[i] for i in indices]))
            for i, v in zip(indices, values.tolist(), strict=True):
                out[i] = ImageStats(*v)
    return out  # type: ignore[return-value]  # every slot filled above


def stats_thumbnail(img: Image.Image | np.ndarray) -> np.ndarray:
    """The pixels the statistics are computed from: ``uint8`` ``(H, W, 3)`` RGB, at most 128 px a side.

    ``img`` is a decoded image (any mode) or ``uint8`` pixels ``(H, W, 3)``, ``(H, W, 1)`` or ``(H, W)`` (grey
    is replicated, as Pillow converts L to RGB). :func:`images_stats` of the result equals that of ``img``.
    """
    return _rgb_array(img)


def _rgb_array(img: Image.Image | np.ndarray) -> np.ndarray:
    from imgcls.data.transform import to_mode

    if isinstance(img, np.ndarray):
        if img.dtype == np.uint8 and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)):
            img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image_stats takes uint8 (H, W, 3|1) arrays, got {img.dtype} {img.shape}")
        if max(img.shape[:2]) <= _MAX_SIDE:
            return img
        img = Image.fromarray(img)
    rgb = to_mode(img, 3)
    if max(rgb.size) > _MAX_SIDE:
        rgb = rgb.copy()
        rgb.thumbnail((_MAX_SIDE, _MAX_SIDE), Image.Resampling.BILINEAR)
    return np.asarray(rgb)


def _stats(rgb: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 5) float64, columns in ``STAT_NAMES`` order."""
    n, h, w = rgb.shape[:3]
    arr = rgb.astype(np.float32) / 255.0
    luma = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (N, H, W)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    # the same values as arr.max(axis=-1) / arr.min(axis=-1), ~20x faster: a reduction over a length-3 last
    # axis is numpy's slow path, and this runs for every served prediction
    mx, mn = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-8), 0.0)
    bins = np.clip((luma * 255).astype(np.int64), 0, 255).reshape(n, -1) + 256 * np.arange(n)[:, None]
    hist = np.bincount(bins.ravel(), minlength=256 * n).reshape(n, 256).astype(np.float64)
    p = hist / hist.sum(axis=1, keepdims=True)
    entropy = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=1)
    if h >= 3 and w >= 3:
        c = luma[:, 1:-1, 1:-1]
        lap = -4 * c + luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]
        sharpness = lap.reshape(n, -1).var(axis=1)
    else:
        sharpness = np.zeros(n)
    flat = luma.reshape(n, -1)
    return np.stack([flat.mean(axis=1), flat.std(axis=1), sat.reshape(n, -1).mean(axis=1), entropy, sharpness], axis=1)
