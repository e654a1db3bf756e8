"""imgcls.data.decode: the bytes decide, every mode opens, EXIF is applied, bombs and broken files are typed errors."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.data.decode import DEFAULT_MAX_PIXELS, decode_image
from imgcls.errors import IMAGE_ERROR_STATUS, ImageError


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise(size: tuple[int, int] = (40, 30), mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming width × height + IEND: no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def code_of(source: bytes | Path, **kwargs: object) -> str:
    with pytest.raises(ImageError) as info:
        decode_image(source, **kwargs)  # type: ignore[arg-type]
    assert info.value.code in IMAGE_ERROR_STATUS
    assert info.value.message  # a message a person can read
    return info.value.code


# --- every mode --------------------------------------------------------------------------------------------


def _mode_images() -> list[tuple[str, str, Image.Image]]:
    base = noise((24, 16))
    p_transparent = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_transparent.info["transparency"] = 0
    i16 = Image.fromarray((np.arange(24 * 16).reshape(16, 24) * 170).astype(np.uint16))
    return [
        ("PNG", "1", base.convert("1")),
        ("PNG", "L", base.convert("L")),
        ("PNG", "LA", base.convert("LA")),
        ("PNG", "P", base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)),
        ("PNG", "P", p_transparent),
        ("PNG", "RGB", base),
        ("PNG", "RGBA", base.convert("RGBA")),
        ("PNG", "I;16", i16),
        ("JPEG", "L", base.convert("L")),
        ("JPEG", "RGB", base),
        ("JPEG", "CMYK", base.convert("CMYK")),
    ]


@pytest.mark.parametrize(("fmt", "mode", "img"), _mode_images(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_mode_decodes_in_its_own_mode_and_prepares_to_both_channel_counts(
    fmt: str, mode: str, img: Image.Image
) -> None:
    from imgcls.bundle import InputSpec
    from imgcls.data.transform import prepare

    decoded = decode_image(encode(img, fmt))
    assert decoded.mode == mode
    assert decoded.size == (24, 16)
    for channels in (1, 3):
        spec = InputSpec(size=(8, 12), channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
        arr = prepare(decoded, spec)
        assert arr.dtype == np.uint8 and arr.shape == (8, 12, channels)


def test_format_is_decided_by_content_not_name(tmp_path: Path) -> None:
    png_named_jpg = tmp_path / "photo.jpg"
    png_named_jpg.write_bytes(encode(noise(), "PNG"))
    assert decode_image(png_named_jpg).format == "PNG"
    gif_named_png = tmp_path / "fake.png"
    gif_named_png.write_bytes(encode(noise(), "GIF"))
    assert code_of(gif_named_png) == "unsupported_format"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_other_image_formats_are_unsupported(fmt: str) -> None:
    assert code_of(encode(noise((16, 16)), fmt)) == "unsupported_format"


def test_text_and_random_bytes_are_unsupported() -> None:
    assert code_of(b"hello, I am not an image\n") == "unsupported_format"
    assert code_of(os.urandom(2048)) == "unsupported_format"
    assert code_of(b"<svg xmlns='http://www.w3.org/2000/svg'/>") == "unsupported_format"


def test_webp_decodes_by_default_and_can_be_turned_off() -> None:
    webp = encode(noise(), "WEBP")
    assert decode_image(webp).size == (40, 30)
    assert code_of(webp, allow_webp=False) == "unsupported_format"


# --- EXIF orientation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    # 40×20 stored: left half red, right half blue. Orientation 6 = "rotate 90° clockwise to display".
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(encode(img, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {})))
    assert decoded.size == (20, 40)  # portrait now
    top, bottom = np.asarray(decoded)[2, 10], np.asarray(decoded)[-3, 10]
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is on top after a clockwise turn
    assert bottom[2] > 200 and bottom[0] < 60
    plain = decode_image(encode(img, fmt))
    assert plain.size == (40, 20)


def test_malformed_exif_keeps_the_pixels() -> None:
    img = noise((16, 16))
    exif = Image.Exif()
    exif[0x0112] = 99  # not an orientation
    decoded = decode_image(encode(img, "PNG", exif=exif.tobytes()))
    assert decoded.size == (16, 16)


# --- sizes: bombs and limits -------------------------------------------------------------------------------


def test_global_pillow_limit_is_set_explicitly() -> None:
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS == 40_000_000


@pytest.mark.parametrize(("width", "height"), [(7_000, 7_000), (100_000, 100_000), (2**31 - 1, 2**31 - 1)])
def test_huge_dimensions_are_refused_before_decoding(width: int, height: int) -> None:
    # 49 MP is over the limit (Pillow's warning, made an error); 10^10 is a bomb (Pillow's error).
    with pytest.raises(ImageError) as info:
        decode_image(png_header_only(width, height))
    assert info.value.code == "too_many_pixels"
    assert "40,000,000" in info.value.message
    assert "--max-pixels" in (info.value.hint or "")


def test_per_call_limit_names_the_dimensions() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(encode(noise((100, 60)), "PNG"), max_pixels=5_000)
    assert info.value.code == "too_many_pixels"
    assert "100×60" in info.value.message and "5,000" in info.value.message


def test_a_larger_per_call_limit_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)  # restored after the test
    # 49 MP allowed by the caller: Pillow's guard is raised to match, so the header passes and the missing
    # pixel data is what fails.
    assert code_of(png_header_only(7_000, 7_000), max_pixels=60_000_000) == "corrupt_image"
    assert Image.MAX_IMAGE_PIXELS == 60_000_000
    decode_image(encode(noise(), "PNG"), max_pixels=1_000_000)
    assert Image.MAX_IMAGE_PIXELS == 60_000_000  # never lowered


# --- broken and odd files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_files_are_corrupt(fmt: str, keep: float) -> None:
    data = encode(noise((64, 64)), fmt)
    assert code_of(data[: int(len(data) * keep)]) == "corrupt_image"


def test_empty_file_is_corrupt(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert code_of(empty) == "corrupt_image"
    assert code_of(b"") == "corrupt_image"


def test_missing_file_directory_and_device_are_not_found(tmp_path: Path) -> None:
    assert code_of(tmp_path / "nope.png") == "not_found"
    assert code_of(tmp_path) == "not_found"
    if Path("/dev/zero").exists():
        assert code_of(Path("/dev/zero")) == "not_found"  # never read forever


def test_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer appears
    assert code_of(fifo) == "not_found"


def test_file_over_max_bytes_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(encode(noise((64, 64)), "PNG"))
    assert code_of(path, max_bytes=1_000) == "too_large"


def test_corrupted_bytes_never_escape_as_other_exceptions() -> None:
    """Flipped bytes in valid JPEG/PNG files: decode succeeds or raises ImageError, nothing else."""
    rng = random.Random(1234)
    originals = [encode(noise((32, 32), seed=1), "PNG"), encode(noise((32, 32), seed=2), "JPEG")]
    outcomes = {"ok": 0, "error": 0}
    for i in range(300):
        data = bytearray(originals[i % 2])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(8, len(data))]
        try:
            decode_image(bytes(data))
            outcomes["ok"] += 1
        except ImageError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0 and sum(outcomes.values()) == 300


def test_decoded_image_is_fully_loaded_and_detached_from_the_bytes() -> None:
    img = decode_image(encode(noise((20, 10)), "PNG"))
    assert np.asarray(img).shape == (10, 20, 3)


def test_a_jpeg_is_decoded_at_reduced_scale_when_a_draft_size_is_given() -> None:
    import io

    from imgcls.serve.model import decode_pixels, image_size

    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (200, 100, 50)).save(buf, format="JPEG")
    data = buf.getvalue()
    img = decode_image(data, draft=(64, 64))
    assert img.size == (500, 375)  # 1/8 scale still covers 64×64; libjpeg never decoded the 12 MP
    assert img.info["original_size"] == (4000, 3000)
    assert decode_image(data).size == (4000, 3000)
    assert image_size(data) == (4000, 3000)
    assert decode_pixels(data, (32, 32)) == 500 * 375
    png = io.BytesIO()
    Image.new("I;16", (6000, 5000)).save(png, format="PNG")
    assert image_size(png.getvalue()) == (6000, 5000) and decode_pixels(png.getvalue(), (32, 32)) == 30_000_000
    assert image_size(b"\xff\xd8\xff\xe0garbage") is None and image_size(b"GIF89a") is None


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((16383, 2400), {"lossless": True}),  # VP8L: 1.5 KB that decode to 118 MB of RGB
        ((3001, 2003), {"quality": 50}),  # VP8, lossy
        ((4097, 1025), {"lossless": True, "exact": True, "mode": "RGBA"}),  # alpha: a VP8X canvas
        ((1, 1), {"quality": 80}),
    ],
)
def test_a_webps_size_is_read_from_its_header_so_a_large_one_takes_the_large_image_lane(
    size: tuple[int, int], options: dict
) -> None:
    """image_size knew PNG and JPEG only: a 16383×2400 WebP of 1.5 KB went to the small uploads' decode threads,
    outside the pixel budget (+2.4 GB of memory from 8 of them at once, small requests 504 behind them)."""
    import io

    from imgcls.serve.model import LARGE_DECODE_PIXELS, decode_pixels, image_size

    mode = options.pop("mode", "RGB")
    buf = io.BytesIO()
    Image.new(mode, size, (0, 0, 0, 255) if mode == "RGBA" else (0, 0, 0)).save(buf, format="WEBP", **options)
    data = buf.getvalue()
    assert image_size(data) == size == Image.open(io.BytesIO(data)).size
    assert decode_pixels(data, (32, 32)) == size[0] * size[1]
    assert (decode_pixels(data, (32, 32)) > LARGE_DECODE_PIXELS) == (size[0] * size[1] > LARGE_DECODE_PIXELS)


def test_an_image_whose_header_gives_no_size_is_costed_as_the_largest() -> None:
    """A JPEG with more segments before its frame header than are scanned, or a WebP of another chunk layout, was
    decoded beside the small uploads whatever its size: it takes the large-image lane with the whole budget."""
    import io

    from imgcls.serve.model import UNKNOWN_SIZE_PIXELS, decode_pixels, image_size

    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    padded = jpeg[:2] + b"\xff\xfe\x00\x04ab" * 100 + jpeg[2:]  # 100 comment segments first: still a good JPEG
    assert Image.open(io.BytesIO(padded)).size == (64, 64)
    assert image_size(padded) is None and decode_pixels(padded, (32, 32)) == UNKNOWN_SIZE_PIXELS
    odd_webp = b"RIFF\x20\x00\x00\x00WEBPALPH" + b"\x00" * 40
    assert decode_pixels(odd_webp, (32, 32)) == UNKNOWN_SIZE_PIXELS
    assert decode_pixels(b"GIF89a" + b"\x00" * 40, (32, 32)) is None  # refused by the decoder at once


def _png_with_ihdr(width: int = 8, height: int = 8, depth: int = 8, crc_ok: bool = True) -> bytes:
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([depth, 2, 0, 0, 0])
    crc = zlib.crc32(ihdr) ^ (0 if crc_ok else 1)
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + ihdr + crc.to_bytes(4, "big") + b"\x00" * 16


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n",  # the signature alone
        _png_with_ihdr(crc_ok=False),
        _png_with_ihdr(depth=7),
        _png_with_ihdr(width=0),
        b"\xff\xd8\xff" + b"\x00" * 64,  # a JPEG's SOI, then nothing a JPEG holds
        b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 40,
    ],
    ids=["png-signature-only", "png-bad-ihdr-crc", "png-depth-7", "png-width-0", "jpeg-soi-junk", "webp-junk"],
)
def test_a_damaged_header_of_a_format_it_reads_is_a_corrupt_image_not_an_unsupported_format(data: bytes) -> None:
    """A PNG whose IHDR could not be read was answered 415 'not a JPEG/PNG/WEBP image… convert it to PNG or JPEG':
    the file IS a PNG, and the fix is a good copy of it (400 corrupt_image), not a conversion."""
    with pytest.raises(ImageError) as info:
        decode_image(data)
    assert info.value.code == "corrupt_image", info.value.message
