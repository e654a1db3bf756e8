"""Data core load times: a ``folder:`` of JPEG photos decoded on a thread pool vs one thread, Fashion-MNIST
from the Debian package, and the per-channel statistics.

Run: ``.venv/bin/python -m benchmarks data_load [-- --images 1200 --repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _photo_folder(root: Path, n_images: int) -> Path:
    """``n_images`` 320×240 JPEG crops of scikit-learn's two sample photos, in 4 classes."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(n_images):
        photo = photos[i % 2]
        y, x = int(rng.integers(0, photo.shape[0] - 240)), int(rng.integers(0, photo.shape[1] - 320))
        d = root / f"class_{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo[y : y + 240, x : x + 320]).save(d / f"{i:05d}.jpg", quality=90)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks data_load")
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from imgcls.config import DataConfig
    from imgcls.data.datasets import channel_stats, load_dataset
    from imgcls.data.folder import load_folder

    print(f"cpu cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = _photo_folder(Path(tmp) / "photos", args.images)
        cfg = DataConfig(name=f"folder:{root}", img_size=64)
        load_folder(str(root), cfg, 0, workers=1)  # warm the page cache
        serial, pooled = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            serial.append(_median_time(lambda: load_folder(str(root), cfg, 0, workers=1), 1))
            pooled.append(_median_time(lambda: load_folder(str(root), cfg, 0), 1))
        s, p = statistics.median(serial), statistics.median(pooled)
        print(
            f"folder: {args.images} JPEG 320x240 -> 64x64: 1 thread {s:.2f} s ({args.images / s:,.0f} img/s), "
            f"pool {p:.2f} s ({args.images / p:,.0f} img/s), speed-up {s / p:.2f}x"
        )

    if Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            fm = DataConfig(name="fashion-mnist", dir=Path(tmp), download=False)
            t = _median_time(lambda: load_dataset(fm, seed=0), args.repeats)
            print(f"fashion-mnist (70,000 28x28, Debian .gz): load_dataset {t:.2f} s")
            ds = load_dataset(fm, seed=0)
            images = ds.train.images

            def float_stats() -> object:
                x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
                return x.mean(axis=0), x.std(axis=0)

            t_hist = _median_time(lambda: channel_stats(images), args.repeats)
            t_float = _median_time(float_stats, args.repeats)
            print(
                f"channel_stats on {len(images):,} images: histogram {t_hist:.3f} s, "
                f"float64 copy {t_float:.3f} s ({t_float / t_hist:.1f}x)"
            )
    t = _median_time(lambda: load_dataset(DataConfig(name="digits"), seed=0), args.repeats)
    print(f"digits: load_dataset {t:.3f} s")


if __name__ == "__main__":
    main()
