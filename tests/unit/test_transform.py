"""imgcls.data.transform: the one evaluation transform, mode by mode, and its arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.bundle import InputSpec
from imgcls.data.transform import normalize, prepare, preprocess, to_mode

GRAY = InputSpec(size=(8, 8), channels=1, mean=(0.25,), std=(0.5,))
RGB = InputSpec(size=(8, 8), channels=3, mean=(0.1, 0.2, 0.3), std=(0.2, 0.25, 0.5))


def solid(mode: str, value: object, size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new(mode, size, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "value", "gray", "rgb"),
    [
        ("1", 1, 255, (255, 255, 255)),
        ("1", 0, 0, (0, 0, 0)),
        ("L", 77, 77, (77, 77, 77)),
        ("RGB", (255, 0, 0), 76, (255, 0, 0)),  # ITU-R 601-2 luma of pure red
        ("RGBX", (0, 255, 0, 0), 150, (0, 255, 0)),
        ("RGBA", (10, 20, 30, 0), 255, (255, 255, 255)),  # fully transparent -> white
        ("RGBA", (10, 20, 30, 255), 18, (10, 20, 30)),  # opaque -> as is
        ("LA", (0, 0), 255, (255, 255, 255)),
        ("LA", (40, 255), 40, (40, 40, 40)),
        ("La", (0, 0), 255, (255, 255, 255)),
        ("RGBa", (0, 0, 0, 0), 255, (255, 255, 255)),
        ("PA", (0, 0), 255, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), 255, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 255), 0, (0, 0, 0)),
        ("YCbCr", (128, 128, 128), 128, (128, 128, 128)),
        ("I;16", 65535, 255, (255, 255, 255)),
        ("I;16", 257 * 100, 100, (100, 100, 100)),
        ("I;16B", 257 * 50, 50, (50, 50, 50)),
        ("I", 200, 200, (200, 200, 200)),  # fits 8 bits: as is
        ("I", 257 * 30, 30, (30, 30, 30)),  # a 16-bit value
        ("F", 0.5, 128, (128, 128, 128)),  # 0..1 floats
        ("F", 64.0, 64, (64, 64, 64)),  # 0..255 floats
    ],
)
def test_to_mode_gives_the_expected_pixel(mode: str, value: object, gray: int, rgb: tuple[int, int, int]) -> None:
    img = solid(mode, value)
    g = to_mode(img, 1)
    c = to_mode(img, 3)
    assert g.mode == "L" and c.mode == "RGB"
    assert abs(int(np.asarray(g)[0, 0]) - gray) <= 1
    assert np.abs(np.asarray(c)[0, 0].astype(int) - np.array(rgb)).max() <= 1


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.putpixel((0, 0), 1)
    img.info["transparency"] = 0
    arr = np.asarray(to_mode(img, 3))
    assert tuple(arr[1, 1]) == (255, 255, 255)  # index 0 is transparent
    assert tuple(arr[0, 0]) == (200, 10, 10)


def test_wide_integer_range_outside_16_bits_is_stretched() -> None:
    arr = np.array([[0, 100_000], [200_000, 400_000]], dtype=np.int32)
    out = np.asarray(to_mode(Image.fromarray(arr, "I"), 1))
    assert out[0, 0] == 0 and out[1, 1] == 255


def test_constant_float_image_outside_known_ranges_does_not_divide_by_zero() -> None:
    out = np.asarray(to_mode(solid("F", -3.0), 1))
    assert (out == 0).all()


def test_same_mode_is_returned_untouched() -> None:
    img = solid("RGB", (1, 2, 3))
    assert to_mode(img, 3) is img


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"])
def test_prepare_resizes_with_the_bundle_interpolation(interpolation: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    spec = InputSpec(size=(12, 20), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=interpolation)
    arr = prepare(img, spec)
    assert arr.shape == (12, 20, 3) and arr.dtype == np.uint8
    resample = getattr(Image.Resampling, interpolation.upper())
    np.testing.assert_array_equal(arr, np.asarray(img.resize((20, 12), resample=resample)))


def test_prepare_keeps_an_image_already_at_size() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(prepare(Image.fromarray(arr, "L"), GRAY)[..., 0], arr)


def test_normalize_is_x_over_255_minus_mean_over_std_in_nchw() -> None:
    rng = np.random.default_rng(2)
    u8 = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    x = normalize(u8, RGB)
    assert x.dtype == np.float32 and x.shape == (5, 3, 8, 8) and x.flags["C_CONTIGUOUS"]
    expected = (u8.astype(np.float64) / 255.0 - np.array(RGB.mean)) / np.array(RGB.std)
    np.testing.assert_allclose(x, expected.transpose(0, 3, 1, 2), atol=1e-6)


def test_normalize_accepts_one_image() -> None:
    u8 = np.full((8, 8, 1), 255, np.uint8)
    x = normalize(u8, GRAY)
    assert x.shape == (1, 1, 8, 8)
    assert np.allclose(x, (1.0 - 0.25) / 0.5)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8, 3), np.uint16), np.zeros((2, 8, 8, 1), np.uint8)],
)
def test_normalize_refuses_what_prepare_does_not_produce(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        normalize(bad, RGB)


def test_preprocess_is_prepare_then_normalize() -> None:
    img = solid("RGBA", (100, 150, 200, 128), (13, 7))
    np.testing.assert_array_equal(preprocess(img, RGB), normalize(prepare(img, RGB), RGB)[0])


def test_a_large_16_bit_image_is_resized_before_it_is_mapped_to_8_bits() -> None:
    from imgcls.bundle import InputSpec
    from imgcls.data.transform import prepare

    arr = np.full((600, 800), 257 * 100, dtype=np.uint16)
    arr[:, 400:] = 257 * 200
    spec = InputSpec(size=(6, 8), channels=1, mean=(0.5,), std=(0.25,))
    out = prepare(Image.fromarray(arr), spec)[:, :, 0]
    assert out.shape == (6, 8) and set(out[:, :3].ravel()) == {100} and set(out[:, -3:].ravel()) == {200}
