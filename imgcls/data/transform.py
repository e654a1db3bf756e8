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


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """16/32-bit integer or float pixels to 0..255 by the range their mode implies, not by the image's own.

    ``I;16*``: 0..65535. ``I``: 0..255 when every value fits, else 0..65535 when every value fits (a 16-bit
    PNG), else the image's min..max. ``F``: 0..1 when every value fits, else 0..255, else min..max.
    """
    arr = arr.astype(np.float64, copy=False)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        arr = arr / 257.0
    elif mode == "I" and lo >= 0 and hi <= 255:
        pass
    elif mode == "I" and lo >= 0 and hi <= 65535:
        arr = arr / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        arr = arr * 255.0
    elif mode == "F" and lo >= 0 and hi <= 255:
        pass
    else:
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to ``L`` (channels=1) or ``RGB`` (channels=3).

    Transparent pixels (RGBA, LA, PA, P with a transparency entry, premultiplied RGBa/La) are composited onto
    white; 16/32-bit and float images are scaled to 8 bits by their range (see :func:`_to_uint8`) rather than
    clipped; ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and ``RGBX`` go through Pillow's conversions.
    Colour to grey uses Pillow's ITU-R 601-2 luma.
    """
    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode == target:
        return img
    if mode in _WIDE_MODES:
        img = Image.fromarray(_to_uint8(np.asarray(img), mode), "L")
        return img if target == "L" else img.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA") if mode != "La" else img.convert("LA").convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        return img if target == "RGB" else img.convert("L")
    if target == "L" and mode not in ("1", "RGB"):
        img = img.convert("RGB")  # e.g. CMYK, LAB, HSV: through RGB, as Pillow has no direct path for all
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
    """``uint8`` ``(N, H, W, C)`` or ``(H, W, C)`` to normalised ``float32`` ``(N, C, H, W)``: ``(x/255 - mean)/std``.

    Raises:
        ValueError: not uint8, or the channel count differs from the spec's.
    """
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != spec.channels:
        raise ValueError(
            f"normalize takes uint8 (N, H, W, {spec.channels}) images from prepare(), got {images.dtype} {images.shape}"
        )
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) * inv_std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """One decoded image to the model's ``float32`` ``(C, H, W)`` input."""
    return normalize(prepare(img, spec), spec)[0]
