"""The ONE evaluation transform: decode -> mode -> resize -> float -> normalise, with Pillow and numpy only.

Training evaluation, export calibration, predict, serve and bench all call these functions, so a model sees
exactly the same input everywhere. The transform is split in two so training can cache the uint8 stage:

* :func:`prepare` — a PIL image to a ``uint8`` ``(H, W, C)`` array at the model's size and channel count;
* :func:`normalize` — ``uint8`` ``(N, H, W, C)`` (or one ``(H, W, C)``) to ``float32`` ``(N, C, H, W)``.

:func:`preprocess` is the two together for one image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgcls.bundle import InputSpec

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to ``L`` (channels=1) or ``RGB`` (channels=3).

    Transparent pixels are composited onto white; 16/32-bit and float images are scaled to 8 bits by their
    range rather than clipped.
    """
    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode == target:
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        else:
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return img if target == "L" else img.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        return img if target == "RGB" else img.convert("L")
    return img.convert(target)


def prepare(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image to ``uint8`` ``(H, W, C)`` at the model's size and channel count."""
    img = to_mode(img, spec.channels)
    h, w = spec.size
    if img.size != (w, h):
        img = img.resize((w, h), resample=_RESAMPLE[spec.interpolation])
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr


def normalize(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``uint8`` ``(N, H, W, C)`` or ``(H, W, C)`` to normalised ``float32`` ``(N, C, H, W)``."""
    if images.ndim == 3:
        images = images[None]
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) * inv_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """One decoded image to the model's ``float32`` ``(C, H, W)`` input."""
    return normalize(prepare(img, spec), spec)[0]
