"""Safe image decoding shared by training data, predict and serve.

The bytes decide the format (never the file name); only JPEG and PNG (WebP optionally) are opened; EXIF
orientation is applied; the pixel count is capped and Pillow's decompression-bomb warning is an error.
Every failure is an :class:`~imgcls.errors.ImageError` with a code the server maps to an HTTP status.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from imgcls.errors import ImageError

DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Pillow's global bomb guard is set explicitly; decode_image also checks its own per-call limit.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


def decode_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_webp: bool = False,
) -> Image.Image:
    """Decode an image fully (so truncation is caught here) and apply its EXIF orientation.

    Args:
        source: the encoded bytes, or a path to read them from.
        max_pixels: width × height above which the image is refused (a decompression bomb guard).
        allow_webp: also accept WebP.

    Raises:
        ImageError: code ``not_found``, ``unsupported_format``, ``too_many_pixels`` or ``corrupt_image``.
    """
    name = "upload"
    if isinstance(source, (str, Path)):
        name = str(source)
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file", code="not_found") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an image", code="not_found") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot be read ({exc.strerror})", code="not_found") from None
    else:
        data = source
    if not data:
        raise ImageError(f"{name}: empty file", hint="send a JPEG or PNG image", code="corrupt_image")
    formats = (*FORMATS, "WEBP") if allow_webp else FORMATS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(formats))
        except UnidentifiedImageError:
            raise ImageError(
                f"{name}: not a {'/'.join(formats)} image (judged by its content, not its name)",
                hint="convert it to PNG or JPEG",
                code="unsupported_format",
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(name, None, max_pixels) from None
        except (OSError, ValueError, SyntaxError) as exc:
            raise ImageError(f"{name}: corrupt image ({exc})", code="corrupt_image") from None
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: image has no pixels ({w}×{h})", code="corrupt_image")
        if w * h > max_pixels:
            raise _too_many(name, (w, h), max_pixels)
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(name, (w, h), max_pixels) from None
        except (OSError, ValueError, SyntaxError, EOFError, struct_error()) as exc:
            raise ImageError(f"{name}: corrupt or truncated image ({exc})", code="corrupt_image") from None
    return img


def struct_error() -> type[Exception]:
    import struct

    return struct.error


def _too_many(name: str, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    dims = f" ({size[0]}×{size[1]} = {size[0] * size[1]:,} pixels)" if size else ""
    return ImageError(
        f"{name}: image too large{dims}; the limit is {max_pixels:,} pixels",
        hint="downscale the image, or raise the limit (--max-pixels)",
        code="too_many_pixels",
    )
