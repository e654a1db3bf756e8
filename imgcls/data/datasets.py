"""Datasets as prepared uint8 arrays, split into train / val / test.

Every image in a :class:`Split` is exactly ``transform.prepare(decoded_image, dataset.input)``: the training
evaluation input, predict's and serve's are the same bytes. Training augmentations work on these arrays.

Supported ``--data``: ``digits`` (embedded, scikit-learn), ``mnist`` and ``fashion-mnist`` (IDX files,
:mod:`imgcls.data.idx`), ``cifar10`` and ``cifar100`` (binary or torchvision python layout,
:mod:`imgcls.data.cifar`) under ``--data-dir`` (default :func:`default_data_dir`), and ``folder:PATH`` (one
sub-folder per class, :mod:`imgcls.data.folder`). Downloads (when ``data.download`` is on) are md5-checked.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from imgcls.bundle import InputSpec
from imgcls.config import DataConfig
from imgcls.data._dataset import Dataset, Split, channel_stats, fingerprint, stratified_split
from imgcls.errors import DataError

logger = logging.getLogger(__name__)

# Dataset, Split and the shared helpers live in the leaf module _dataset (the loaders import them from there)
__all__ = ["Dataset", "Split", "channel_stats", "default_data_dir", "fingerprint", "load_dataset", "stratified_split"]


def default_data_dir() -> Path:
    """``$IMGCLS_CACHE/data`` (:mod:`imgcls.paths`): where named datasets are looked for and downloaded."""
    from imgcls.paths import data_dir

    return data_dir()


def load_dataset(cfg: DataConfig, *, seed: int = 0) -> Dataset:
    """Load, split and prepare the dataset named by ``cfg.name``.

    Example:
        ds = load_dataset(DataConfig(name="digits", img_size=16), seed=0)
        ds.train.images.shape  # (1293, 16, 16, 1)
    """
    name = cfg.name.strip()
    if name.startswith("folder:"):
        from imgcls.data.folder import load_folder

        return load_folder(name.removeprefix("folder:"), cfg, seed)
    name = _ALIASES.get(name.lower(), name.lower())
    data_dir = Path(cfg.dir).expanduser() if cfg.dir is not None else default_data_dir()
    if name == "digits":
        return _digits(cfg, seed)
    if name in ("mnist", "fashion-mnist"):
        from imgcls.data import idx

        source = idx.SOURCES[name]
        train_x, train_y, test_x, test_y = idx.load_idx(source, data_dir, allow_download=cfg.download)
        return _from_arrays(name, list(source.classes), cfg, seed, train_x, train_y, test_x, test_y)
    if name in ("cifar10", "cifar100"):
        from imgcls.data import cifar

        train_x, train_y, test_x, test_y, classes = cifar.load_cifar(
            cifar.SOURCES[name], data_dir, allow_download=cfg.download
        )
        return _from_arrays(name, classes, cfg, seed, train_x, train_y, test_x, test_y)
    check_dataset_name(cfg.name)
    raise AssertionError(f"dataset {name!r} passed check_dataset_name but has no loader")


def check_dataset_name(name: str) -> None:
    """DataError unless ``name`` is a dataset imgcls has (or ``folder:PATH``): checked before a run loads anything
    (``train.factory.check_run``), so that a sweep refuses a bad choice before its study, not at the trial that
    draws it."""
    name = name.strip()
    if name.startswith("folder:") or _ALIASES.get(name.lower(), name.lower()) in NAMES:
        return
    import difflib

    near = difflib.get_close_matches(name.lower(), [*NAMES, "folder:"], n=1, cutoff=0.5)
    raise DataError(
        f"unknown dataset {name!r}" + (f"; did you mean {near[0]!r}?" if near else ""),
        hint="use digits, mnist, fashion-mnist, cifar10, cifar100 or folder:PATH (one sub-folder per class)",
    )


NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
}


def _from_arrays(
    name: str,
    classes: list[str],
    cfg: DataConfig,
    seed: int,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None,
    test_y: np.ndarray | None,
) -> Dataset:
    """Arrays of native uint8 (N, H, W[, C]) images -> prepared, split Dataset."""
    from PIL import Image

    from imgcls.data.transform import prepare

    if train_x.ndim == 3:
        train_x = train_x[..., None]
        test_x = test_x[..., None] if test_x is not None else None
    native = (int(train_x.shape[1]), int(train_x.shape[2]))
    native_channels = int(train_x.shape[3])
    channels = cfg.channels or native_channels
    size = (cfg.img_size, cfg.img_size) if cfg.img_size else native
    keep, held = stratified_split(train_y, cfg.val_fraction, seed)

    def prep(x: np.ndarray, spec: InputSpec) -> np.ndarray:
        if x.shape[1:3] == spec.size and x.shape[3] == spec.channels:
            return np.ascontiguousarray(x)
        if not len(x):  # an empty split (data.val_fraction=0): the loop says what it lacks
            return np.empty((0, *spec.size, spec.channels), np.uint8)
        mode = "L" if x.shape[3] == 1 else "RGB"
        return np.stack([prepare(Image.fromarray(a[..., 0] if mode == "L" else a, mode), spec) for a in x])

    provisional = InputSpec(
        size=size, channels=channels, mean=(0.5,) * channels, std=(0.5,) * channels, interpolation=cfg.interpolation
    )
    tr = Split(prep(train_x[keep], provisional), train_y[keep].astype(np.int64))
    va = Split(prep(train_x[held], provisional), train_y[held].astype(np.int64))
    te = None
    if test_x is not None and test_y is not None:
        te = Split(prep(test_x, provisional), test_y.astype(np.int64))
    mean, std = channel_stats(tr.images)
    spec = InputSpec(size=size, channels=channels, mean=mean, std=std, interpolation=cfg.interpolation)
    total = len(train_x) + (len(test_x) if test_x is not None else 0)
    return Dataset(name, classes, spec, tr, va, te, fingerprint(tr, va, te), native, native_sizes={native: total})


def _digits(cfg: DataConfig, seed: int) -> Dataset:
    """The 1,797 real 8×8 handwritten digits shipped inside scikit-learn (values 0..16 scaled to 0..255)."""
    pixels, y = _digits_arrays()
    x = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    rest, test = stratified_split(y, cfg.test_fraction, seed + 7919)
    return _from_arrays("digits", [str(i) for i in range(10)], cfg, seed, x[rest], y[rest], x[test], y[test])


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) float 0..16, labels): read from scikit-learn's own digits.csv.gz when it is there.

    Reading the file scikit-learn ships avoids importing scikit-learn itself (~2 s here); the values are those
    of ``sklearn.datasets.load_digits()``, which is the fallback.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    from imgcls.deps import require

    datasets = require("sklearn.datasets", feature="the digits dataset")
    d = datasets.load_digits()
    return d.images, d.target.astype(np.int64)
