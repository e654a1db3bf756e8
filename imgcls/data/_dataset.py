"""The types every dataset loader returns (:class:`Dataset`, :class:`Split`) and the helpers they share.

A leaf module (as timm's ``_registry.py`` is): :mod:`imgcls.data.datasets` dispatches to the loaders
(:mod:`imgcls.data.folder`, :mod:`imgcls.data.idx`, :mod:`imgcls.data.cifar`), and the loaders build their
results from here, so no loader imports the dispatcher back. Import these names from
:mod:`imgcls.data.datasets`, which re-exports them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from imgcls.bundle import InputSpec


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, C), the output of transform.prepare
    labels: np.ndarray  # int64 (N,)
    paths: list[str] | None = None  # source file per image (folder datasets)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    name: str  # "digits", "cifar100", "folder:/abs/path", ...
    classes: list[str]
    input: InputSpec  # model input: size, channels, mean/std of the train split, interpolation
    train: Split
    val: Split
    test: Split | None
    fingerprint: str  # sha256 over the prepared images and labels of every split
    native_size: tuple[int, int]  # (H, W) of the source images (most common size for folders)
    skipped: list[str] = field(default_factory=list)  # unreadable files (folder datasets), reasons in the log
    native_sizes: dict[tuple[int, int], int] = field(default_factory=dict)  # (H, W) -> images of that size

    @property
    def eval_split(self) -> Split:
        """The split final metrics are reported on: test when there is one, else validation."""
        return self.test if self.test is not None and len(self.test) else self.val


def fingerprint(*splits: Split | None) -> str:
    """sha256 over the prepared images and labels of the splits, in order (None counts as a split)."""
    h = hashlib.sha256()
    for s in splits:
        if s is None:
            h.update(b"none")
            continue
        h.update(np.ascontiguousarray(s.images).tobytes())
        h.update(np.ascontiguousarray(s.labels.astype(np.int64)).tobytes())
    return h.hexdigest()


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0..1 scale of uint8 (N, H, W, C) images.

    Computed exactly from a 256-bin histogram per channel, without a float64 copy of the images (which
    would be 350 MB for 54,000 28×28 images).
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(np.ascontiguousarray(images[..., c]).reshape(-1), minlength=256).astype(np.float64)
        n = max(float(counts.sum()), 1.0)
        mean = float(counts @ values) / n
        var = max(float(counts @ (values * values)) / n - mean * mean, 0.0)
        means.append(round(mean, 6))
        stds.append(round(max(var**0.5, 1e-3), 6))
    return tuple(means), tuple(stds)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``fraction`` of every class held out, deterministically for ``seed``."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_held = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
