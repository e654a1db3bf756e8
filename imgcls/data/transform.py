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


def _extrema(img: Image.Image) -> tuple[float, float]:
    try:
        lo, hi = img.getextrema()  # single-band modes: (min, max), without a copy of the pixels
    except ValueError:  # modes Pillow has no extrema for (I;16B)
        arr = np.asarray(img)
        return (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    return float(lo), float(hi)  # type: ignore[arg-type]


def _wide_to_l(img: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """A 16/32-bit integer or float image to ``L``, by the range its mode implies, not by the image's own.

    ``I;16*``: 0..65535. ``I``: 0..255 when every value fits, else 0..65535 when every value fits (a 16-bit
    PNG), else the image's min..max. ``F``: 0..1 when every value fits, else 0..255, else min..max.
    ``extrema``: the range of the image this one was resized from (the mapping is the full image's).

    No float64 copy: ``I;16`` goes through exact integer arithmetic (``rint(x / 257) == (x + 128) // 257`` for
    integers, as 257 is odd), the other modes through one float32 buffer changed in place.
    """
    mode = img.mode
    lo, hi = extrema if extrema is not None else _extrema(img)
    arr = np.asarray(img)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        wide = arr.astype(np.uint32)
        wide += 128
        wide //= 257
        return Image.fromarray(wide.astype(np.uint8), "L")
    if mode == "I" and lo >= 0 and hi <= 255:
        return Image.fromarray(arr.astype(np.uint8), "L")
    out = arr.astype(np.float32)
    if mode == "F" and lo >= 0 and hi <= 1:
        out *= np.float32(255.0)
    elif mode == "F" and lo >= 0 and hi <= 255:
        pass
    elif hi > lo:
        out -= np.float32(lo)
        out *= np.float32(255.0 / (hi - lo))
    else:
        out[...] = 0
    np.rint(out, out=out)
    np.clip(out, 0, 255, out=out)
    return Image.fromarray(out.astype(np.uint8), "L")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to ``L`` (channels=1) or ``RGB`` (channels=3).

    Transparent pixels (RGBA, LA, PA, P with a transparency entry, premultiplied RGBa/La) are composited onto
    white; 16/32-bit and float images are scaled to 8 bits by their range (see :func:`_wide_to_l`) rather than
    clipped; ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and ``RGBX`` go through Pillow's conversions.
    Colour to grey uses Pillow's ITU-R 601-2 luma.
    """
    target = "L" if channels == 1 else "RGB"
    mode = img.mode
    if mode == target:
        return img
    if mode in _WIDE_MODES:
        img = _wide_to_l(img)
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


def draft_size(spec: InputSpec) -> tuple[int, int]:
    """``(width, height)`` to pass as :func:`~imgcls.data.decode.decode_image`'s ``draft``: twice the model's
    input, so a JPEG is decoded at reduced scale while the resize still has pixels to average. Every room that
    decodes for a model (training's folder datasets, predict, serve) passes this, so they see the same pixels."""
    h, w = spec.size
    return 2 * w, 2 * h


def prepare(img: Image.Image, spec: InputSpec) -> np.ndarray:
    """A decoded image to ``uint8`` ``(H, W, C)`` at the model's size and channel count.

    A 16/32-bit or float image is resized first, in its own mode, and then mapped to 8 bits with its full
    range: a 6000×6000 16-bit PNG for a 32×32 model costs one resize, not 36 M pixels of conversions.
    """
    h, w = spec.size
    if img.mode in _WIDE_MODES and img.size != (w, h):
        extrema = _extrema(img)
        img = _wide_to_l(img.resize((w, h), resample=_RESAMPLE[spec.interpolation]), extrema)
    img = to_mode(img, spec.channels)
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
