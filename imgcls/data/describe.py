"""``imgcls data describe``: the exploratory look at a dataset before training.

:func:`describe_dataset` loads the dataset exactly as training would (same splits, same prepared images),
returns a :class:`Description` and writes three files into the output folder:

* ``describe.json`` — classes, images per class and split, the imbalance ratio, native image sizes, the model
  input (size, channels, per-channel mean/std of the train split) and skipped files;
* ``class_distribution.png`` — images per class, stacked by split;
* ``samples.png`` — a grid of prepared train images (what the model sees) labelled with their class.

matplotlib (Agg, through ``Figure`` directly: no pyplot, no global backend) is imported only here.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import atomic_write_bytes, atomic_write_json
from imgcls.config import DataConfig
from imgcls.data.datasets import Dataset, load_dataset
from imgcls.text import printable

DESCRIBE_JSON = "describe.json"
DISTRIBUTION_PNG = "class_distribution.png"
SAMPLES_PNG = "samples.png"
MAX_SAMPLES = 100  # images in samples.png
MAX_PER_CLASS = 8  # samples per class when there are few classes


@dataclass
class ClassCount:
    name: str
    train: int
    val: int
    test: int | None  # None when the dataset has no test split

    @property
    def total(self) -> int:
        return self.train + self.val + (self.test or 0)


@dataclass
class Description:
    """What ``imgcls data describe`` found; ``as_dict()`` is the content of describe.json."""

    data: str
    fingerprint: str
    classes: list[ClassCount]
    imbalance_ratio: float | None  # max / min images per class in the train split (None: a class has none)
    native_sizes: list[tuple[int, int, int]]  # (height, width, images), most common first
    input_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    skipped: list[str]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def has_test(self) -> bool:
        return any(c.test is not None for c in self.classes)

    def split_totals(self) -> dict[str, int | None]:
        return {
            "train": sum(c.train for c in self.classes),
            "val": sum(c.val for c in self.classes),
            "test": sum(c.test or 0 for c in self.classes) if self.has_test else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "fingerprint": self.fingerprint,
            "num_classes": len(self.classes),
            "classes": [c.name for c in self.classes],
            "splits": self.split_totals(),
            "images_per_class": [
                {"class": c.name, "train": c.train, "val": c.val, "test": c.test, "total": c.total}
                for c in self.classes
            ],
            "imbalance_ratio": self.imbalance_ratio,
            "imbalance_ratio_basis": "max/min images per class in the train split",
            "native_sizes": [{"height": h, "width": w, "images": n} for h, w, n in self.native_sizes],
            "input": {
                "size": list(self.input_size),
                "channels": self.channels,
                "mean": list(self.mean),
                "std": list(self.std),
                "interpolation": self.interpolation,
            },
            "skipped": self.skipped,
            "files": {key: path.name for key, path in self.files.items()},
        }


def default_out(data: str) -> Path:
    """``runs/describe-<data>``: ``folder:/x/pets`` becomes ``runs/describe-folder-pets``."""
    if data.startswith("folder:"):
        data = "folder-" + Path(data.removeprefix("folder:").rstrip("/\\")).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", data).strip("-.") or "data"
    return Path("runs") / f"describe-{slug}"


def describe_dataset(cfg: DataConfig, out: Path | None = None, *, seed: int = 0) -> Description:
    """Load the dataset of ``cfg`` as training would, summarise it, and write the JSON and the two charts.

    Args:
        cfg: the data configuration (name, dir, img_size, channels, fractions, ...).
        out: the output folder (default :func:`default_out`); created when missing.
        seed: the split seed (as ``imgcls train --seed``).

    Example:
        d = describe_dataset(DataConfig(name="digits"), Path("runs/describe-digits"))
        d.imbalance_ratio, d.files["describe_json"]
    """
    from imgcls.data.folder import check_output_outside
    from imgcls.deps import require

    require("matplotlib", feature="imgcls data describe")
    check_output_outside(out or default_out(cfg.name), cfg.name, "--out")  # before anything is read or written
    ds = load_dataset(cfg, seed=seed)
    description = summarise(ds, out or default_out(ds.name))
    out_dir = description.out
    out_dir.mkdir(parents=True, exist_ok=True)
    description.files = {
        "describe_json": out_dir / DESCRIBE_JSON,
        "class_distribution": out_dir / DISTRIBUTION_PNG,
        "samples": out_dir / SAMPLES_PNG,
    }
    atomic_write_bytes(description.files["class_distribution"], class_distribution_png(description))
    atomic_write_bytes(description.files["samples"], samples_png(ds, seed=seed))
    atomic_write_json(description.files["describe_json"], description.as_dict())
    return description


def summarise(ds: Dataset, out: Path) -> Description:
    """The numbers of a loaded dataset (no files written)."""
    n = len(ds.classes)

    def counts(labels: np.ndarray) -> np.ndarray:
        return np.bincount(labels, minlength=n)[:n]

    train, val = counts(ds.train.labels), counts(ds.val.labels)
    test = counts(ds.test.labels) if ds.test is not None else None
    classes = [
        ClassCount(name, int(train[k]), int(val[k]), int(test[k]) if test is not None else None)
        for k, name in enumerate(ds.classes)
    ]
    smallest = int(train.min()) if n else 0
    ratio = round(float(train.max()) / smallest, 4) if smallest else None
    sizes = ds.native_sizes or {ds.native_size: len(ds.train) + len(ds.val) + (len(ds.test) if ds.test else 0)}
    native = sorted(((h, w, int(c)) for (h, w), c in sizes.items()), key=lambda t: (-t[2], t[0], t[1]))
    return Description(
        data=ds.name,
        fingerprint=ds.fingerprint,
        classes=classes,
        imbalance_ratio=ratio,
        native_sizes=native,
        input_size=tuple(ds.input.size),  # type: ignore[arg-type]
        channels=ds.input.channels,
        mean=tuple(ds.input.mean),
        std=tuple(ds.input.std),
        interpolation=ds.input.interpolation,
        skipped=list(ds.skipped),
        out=out,
    )


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def class_distribution_png(d: Description) -> bytes:
    """A bar per class, stacked train / val / test, as PNG bytes."""
    from matplotlib.figure import Figure

    n = len(d.classes)
    fig = Figure(figsize=(min(max(6.0, 0.28 * n + 2.0), 40.0), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    bottom = np.zeros(n)
    for split, color in (("train", "#4C72B0"), ("val", "#DD8452"), ("test", "#55A868")):
        values = np.asarray([getattr(c, split) or 0 for c in d.classes], dtype=float)
        if split == "test" and not d.has_test:
            continue
        ax.bar(x, values, bottom=bottom, label=split, color=color, width=0.8)
        bottom += values
    ax.set_xticks(x, [c.name for c in d.classes], rotation=90 if n > 10 else 0, fontsize=8 if n > 10 else 9)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylabel("images")
    imbalance = f"{d.imbalance_ratio:g}×" if d.imbalance_ratio is not None else "a class has no train images"
    ax.set_title(f"Images per class — {_short(d.data)} (imbalance {imbalance})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def samples_png(ds: Dataset, *, seed: int = 0) -> bytes:
    """A grid of prepared train images (a row per class when there are few classes), as PNG bytes.

    The grid is one mosaic image with the class names drawn above the tiles (one axes, not one per image:
    100 matplotlib axes take seconds to draw).
    """
    from matplotlib.figure import Figure

    n_classes = len(ds.classes)
    per_class = max(1, min(MAX_PER_CLASS, MAX_SAMPLES // max(n_classes, 1)))
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    for k in range(min(n_classes, MAX_SAMPLES)):
        idx = np.flatnonzero(ds.train.labels == k)
        chosen = np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False)) if idx.size else idx
        picks.extend(int(i) for i in chosen)
        if per_class > 1:
            picks.extend([-1] * (per_class - len(chosen)))  # keep one row per class
    cols = per_class if per_class > 1 else min(10, max(len(picks), 1))
    rows = max(1, -(-len(picks) // cols))
    h, w = ds.input.size
    band, gap = max(2, round(0.35 * h)), max(1, round(0.1 * w))  # label band above each tile, gap between tiles
    cell_h, cell_w = h + band, w + gap
    mosaic = np.full((rows * cell_h, cols * cell_w, 3), 255, dtype=np.uint8)
    labels = []
    for slot, i in enumerate(picks):
        if i < 0:
            continue
        r, c = divmod(slot, cols)
        top, left = r * cell_h + band, c * cell_w
        mosaic[top : top + h, left : left + w] = ds.train.images[i]  # a 1-channel tile broadcasts to gray RGB
        labels.append((left + w / 2 - 0.5, top - band / 2 - 0.5, ds.classes[int(ds.train.labels[i])]))
    fig = Figure(figsize=(1.1 * cols + 0.2, 1.25 * rows + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for x, y, text in labels:
        ax.text(x, y, _short(text, 16), ha="center", va="center", fontsize=7, clip_on=True)
    fig.suptitle(f"{_short(ds.name)}: train samples at model input {w}×{h}", fontsize=9)
    return _png(fig)


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters from its end, shown as :func:`~imgcls.text.printable` writes it (an
    undecodable byte of a path as ``\\xNN``: matplotlib refuses them)."""
    text = printable(text)
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]
