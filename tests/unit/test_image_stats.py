"""The one per-image statistics function: known values, any mode, and the batched form agreeing with it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imgcls.data.stats import STAT_NAMES, image_stats, images_stats


def test_a_flat_grey_image_has_its_brightness_and_nothing_else() -> None:
    s = image_stats(Image.new("L", (40, 30), 51))
    assert s.brightness == pytest.approx(0.2, abs=1e-6)
    assert (s.contrast, s.saturation, s.entropy) == (pytest.approx(0.0, abs=1e-6), 0.0, 0.0)
    assert s.sharpness == pytest.approx(0.0, abs=1e-9)


def test_half_black_half_white_is_one_bit_of_maximal_contrast_and_sharp_at_the_edge() -> None:
    arr = np.zeros((32, 32), dtype=np.uint8)
    arr[:, 16:] = 255
    s = image_stats(Image.fromarray(arr))
    assert s.brightness == pytest.approx(0.5, abs=1e-6)
    assert s.contrast == pytest.approx(0.5, abs=1e-6)
    assert s.entropy == pytest.approx(1.0)
    assert s.sharpness > 0.01
    assert s.saturation == 0.0


def test_pure_red_is_fully_saturated() -> None:
    assert image_stats(Image.new("RGB", (8, 8), (255, 0, 0))).saturation == pytest.approx(1.0)


def test_a_large_image_and_its_thumbnail_agree() -> None:
    """Statistics are taken on a copy of at most 128 px a side: a 12 MP photo of a scene and a small one agree."""
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8))
    small = base.resize((120, 100), Image.Resampling.BICUBIC)  # a smooth scene
    big = base.resize((4000, 3000), Image.Resampling.BICUBIC)  # the same scene, 12 MP
    a, b = image_stats(big), image_stats(small)
    for name in ("brightness", "contrast", "saturation"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), abs=0.01), name
    assert a.entropy == pytest.approx(b.entropy, abs=0.1)


def test_the_batched_form_gives_each_image_exactly_its_own_statistics() -> None:
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(21)]  # 3 chunks
    images += [
        Image.fromarray(rng.integers(0, 256, (7, 9), dtype=np.uint8)),
        Image.new("P", (2, 2)),  # too small for a Laplacian
        Image.fromarray(rng.integers(0, 256, (300, 200, 4), dtype=np.uint8), mode="RGBA"),
        Image.new("CMYK", (16, 16), (0, 255, 0, 0)),
    ]
    rng.shuffle(images)  # sizes interleaved: results must come back in the caller's order
    batched = images_stats(images)
    assert len(batched) == len(images)
    for img, stats in zip(images, batched, strict=True):
        assert stats == image_stats(img)
    assert images_stats([]) == []
    assert list(batched[0].as_dict()) == list(STAT_NAMES)


def test_an_rgb_array_gives_the_statistics_of_its_image_and_other_arrays_are_refused() -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # thumbnailed like an image
    got = images_stats([small, Image.fromarray(small), large])
    assert got[0] == got[1] == image_stats(Image.fromarray(small))
    assert got[2] == image_stats(Image.fromarray(large))
    for bad in (small.astype(np.float32), rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)):
        with pytest.raises(ValueError, match="uint8"):
            images_stats([bad])


def test_the_thumbnail_the_server_ships_has_the_statistics_of_the_image() -> None:
    """The server sends its log writer stats_thumbnail(model input); the writer's statistics of it must be the
    reference's statistics of the same prepared image (grey (H, W, 1) inputs included), whatever its size."""
    from imgcls.data.stats import stats_thumbnail

    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    big = rng.integers(0, 256, (224, 300, 3), dtype=np.uint8)
    for img in (grey, grey[:, :, 0], big, Image.fromarray(big)):
        thumb = stats_thumbnail(img)
        assert thumb.dtype == np.uint8 and thumb.shape[2] == 3 and max(thumb.shape[:2]) <= 128
        assert images_stats([thumb]) == images_stats([img])
    assert image_stats(grey) == image_stats(Image.fromarray(grey[:, :, 0]))  # grey replicated as Pillow does
