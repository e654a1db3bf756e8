"""Safe image decoding shared by training data, predict and serve.

The bytes decide the format (never the file name); only JPEG, PNG and WebP (unless turned off) are opened; EXIF
orientation is applied; the pixel count is capped and Pillow's decompression-bomb warning is an error.
Every failure is an :class:`~imgcls.errors.ImageError` with a code the server maps to an HTTP status:

* ``not_found`` — no such file, a directory, or not a regular file (a FIFO, ``/dev/zero``);
* ``too_large`` — a file of more than ``max_bytes``;
* ``unsupported_format`` — not JPEG/PNG/WebP by content: GIF, BMP, TIFF, text, …;
* ``too_many_pixels`` — width × height above ``max_pixels`` (decompression bombs);
* ``corrupt_image`` — empty, truncated or otherwise undecodable.

``Image.MAX_IMAGE_PIXELS`` (Pillow's own guard) is set explicitly to :data:`DEFAULT_MAX_PIXELS` and raised,
never lowered, when a caller asks for a larger per-call limit, so Pillow's guard never refuses what the
caller allowed; the per-call check in :func:`decode_image` is the one that decides.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import threading
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from imgcls.errors import ImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # a 40 MP RGBA PNG stored with no compression is ~160 MB
FORMATS = ("JPEG", "PNG")
# The one list of image file suffixes: a directory walk (``imgcls predict DIR``) picks up the files of the formats
# decode_image opens. A file named on its own is decoded whatever its suffix: its content decides.
SUFFIXES = {"JPEG": (".jpg", ".jpeg"), "PNG": (".png",), "WEBP": (".webp",)}


def image_suffixes(*, allow_webp: bool = True) -> tuple[str, ...]:
    """The file suffixes of the formats :func:`decode_image` opens (with ``allow_webp``, WebP's too)."""
    formats = (*FORMATS, "WEBP") if allow_webp else FORMATS
    return tuple(suffix for name in formats for suffix in SUFFIXES[name])


# Pillow's global bomb guard is set explicitly; decode_image also checks its own per-call limit.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
_limit_lock = threading.Lock()

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError)


def _allow_pixels(max_pixels: int) -> None:
    """Raise Pillow's global guard to ``max_pixels`` when it is lower (never lowers it)."""
    with _limit_lock:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < max_pixels:
            logger.info("raising PIL.Image.MAX_IMAGE_PIXELS from %s to %s", current, max_pixels)
            Image.MAX_IMAGE_PIXELS = max_pixels


def read_image_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (ImageError ``not_found`` / ``too_large``)."""
    name = str(path)
    try:
        _check_regular(os.stat(path), name, max_bytes)  # before open(): opening a FIFO would block
        with open(path, "rb") as f:
            _check_regular(os.fstat(f.fileno()), name, max_bytes)
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file", code="not_found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image", code="not_found") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied", code="not_found") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot be read ({exc.strerror or exc})", code="not_found") from None
    if len(data) > max_bytes:  # grew while being read
        raise ImageError(f"{name}: file larger than the limit of {max_bytes:,} bytes", code="too_large")
    return data


def _check_regular(info: os.stat_result, name: str, max_bytes: int) -> None:
    if stat.S_ISDIR(info.st_mode):
        if not os.access(name, os.R_OK | os.X_OK):  # one a folder walk could not enter
            raise ImageError(
                f"{name}: a folder that cannot be read (permission denied)",
                hint="give this user read access to it, or leave it out",
                code="not_found",
            )
        raise ImageError(f"{name}: is a directory, not an image", code="not_found")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{name}: not a regular file", hint="pass an image file", code="not_found")
    if info.st_size > max_bytes:
        raise ImageError(
            f"{name}: file of {info.st_size:,} bytes; the limit is {max_bytes:,}",
            hint="downscale or recompress the image",
            code="too_large",
        )


def decode_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_webp: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an image fully (so truncation is caught here) and apply its EXIF orientation.

    Args:
        source: the encoded bytes, or a path to read them from.
        max_pixels: width × height above which the image is refused (a decompression bomb guard).
        allow_webp: accept WebP too (the default, as for the folder datasets; same pixel limit).
        max_bytes: largest file read from a path.
        name: how messages call the image (default: the path, or "upload" for bytes).
        draft: ``(width, height)``: decode a JPEG at the smallest reduced scale (1/2, 1/4, 1/8 — libjpeg's DCT
            scaling) that still covers this size. A 4000×3000 photo for a 32×32 model is decoded at 500×375
            instead of 12 MP: the work and the memory of the decode follow the model, not the upload. The
            original size stays in ``img.info["original_size"]``.

    Returns:
        The decoded image, in its own mode (1, L, LA, P, RGB, RGBA, CMYK, I;16, …): convert it with
        :func:`imgcls.data.transform.to_mode` / :func:`~imgcls.data.transform.prepare`.

    Raises:
        ImageError: code ``not_found``, ``too_large``, ``unsupported_format``, ``too_many_pixels`` or
            ``corrupt_image``.

    Example:
        img = decode_image(Path("cat.jpg"))
    """
    if isinstance(source, (str, Path)):
        name = name or str(source)
        data = read_image_file(source, max_bytes=max_bytes)
    else:
        name = name or "upload"
        data = bytes(source)
    if not data:
        raise ImageError(f"{name}: empty file", hint="send a JPEG, PNG or WebP image", code="corrupt_image")
    _allow_pixels(max_pixels)
    formats = (*FORMATS, "WEBP") if allow_webp else FORMATS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=list(formats))
        except UnidentifiedImageError:
            kind = sniff_format(data)
            if kind in formats:  # the format's own signature, then a header Pillow cannot read: a damaged file
                raise ImageError(
                    f"{name}: corrupt {kind} image (its header cannot be read)",
                    hint="the file is damaged or truncated: send it again, or re-save it",
                    code="corrupt_image",
                ) from None
            raise ImageError(
                f"{name}: not a {'/'.join(formats)} image (judged by its content, not its name)",
                hint="convert it to PNG or JPEG",
                code="unsupported_format",
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(name, None, max_pixels) from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt image ({exc})", code="corrupt_image") from None
        w, h = img.size
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: image has no pixels ({w}×{h})", code="corrupt_image")
        if w * h > max_pixels:
            raise _too_many(name, (w, h), max_pixels)
        img.info["original_size"] = (w, h)
        if draft is not None and img.format == "JPEG":
            img.draft(None, draft)
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_many(name, (w, h), max_pixels) from None
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt or truncated image ({exc})", code="corrupt_image") from None
    try:
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of every upload that needs no rotation
    except (*_DECODE_ERRORS, ZeroDivisionError, AttributeError) as exc:  # malformed EXIF: keep pixels as stored
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", name, exc)
    return img


def sniff_format(data: bytes) -> str | None:
    """The format whose signature ``data`` begins with, of those :func:`decode_image` opens (None: another)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_many(name: str, size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    dims = f" ({size[0]}×{size[1]} = {size[0] * size[1]:,} pixels)" if size else ""
    return ImageError(
        f"{name}: image too large{dims}; the limit is {max_pixels:,} pixels",
        hint="downscale the image, or raise the limit (--max-pixels)",
        code="too_many_pixels",
    )
