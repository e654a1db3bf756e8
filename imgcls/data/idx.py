"""MNIST and Fashion-MNIST from their IDX files (gzipped or not), read with numpy: no torchvision needed.

Files are looked for in torchvision's layout (``<data dir>/MNIST/raw``, ``<data dir>/FashionMNIST/raw``)
and, for Fashion-MNIST, in the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
When they are missing and downloading is allowed, the gzipped files are fetched into the torchvision layout
and checked against their published md5.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgcls.errors import DataError

logger = logging.getLogger(__name__)

# IDX type codes (the third magic byte) -> numpy big-endian dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives and where it is published."""

    name: str  # the --data name
    folder: str  # torchvision's folder under the data dir (files in <folder>/raw)
    classes: tuple[str, ...]
    mirrors: tuple[str, ...]  # base URLs; each file is <mirror><file>.gz
    md5: dict[str, str]  # <file>.gz -> md5 of the published gzip
    system_dirs: tuple[Path, ...] = ()  # read-only places a distribution package installs the files
    get_hint: str = ""  # how to get the files without imgcls


SOURCES = {
    "mnist": IdxSource(
        name="mnist",
        folder="MNIST",
        classes=tuple(str(i) for i in range(10)),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        folder="FashionMNIST",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        get_hint="on Debian/Ubuntu: `apt-get install dataset-fashion-mnist`",
    ),
}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (``.gz`` or raw) as a numpy array of its declared type and shape.

    Raises:
        DataError: the file is not IDX, or holds fewer bytes than its header declares.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise _corrupt(path, f"cannot be read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise _corrupt(path, "is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _corrupt(path, "has a truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise _corrupt(path, f"holds {len(data) - header:,} data bytes; its header {shape} says {expected:,}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(f"{path} {what}", hint="delete the file and get it again (or run with download on)")


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def locate(source: IdxSource, data_dir: Path) -> dict[str, Path] | None:
    """The four files from the first place that holds all of them, or None."""
    for directory in (data_dir / source.folder / "raw", *source.system_dirs):
        found = {key: _find(directory, stem) for key, stem in FILES.items()}
        if all(found.values()):
            logger.debug("%s: reading %s", source.name, directory)
            return {k: v for k, v in found.items() if v is not None}
    return None


def download(source: IdxSource, data_dir: Path) -> dict[str, Path]:
    """Fetch the four gzipped files into ``<data dir>/<folder>/raw``, trying each mirror in turn."""
    from imgcls.data.download import DownloadFailed, fetch

    raw = data_dir / source.folder / "raw"
    paths = {}
    for key, stem in FILES.items():
        name = f"{stem}.gz"
        dest = raw / name
        if dest.is_file() and _md5(dest) == source.md5[name]:  # left by an earlier, interrupted download
            paths[key] = dest
            continue
        errors = []
        for mirror in source.mirrors:
            try:
                paths[key] = fetch(mirror + name, dest, source.md5[name])
                break
            except DownloadFailed as exc:
                errors.append(str(exc))
        else:
            raise DownloadFailed("; ".join(errors))
    return paths


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def load_idx(source: IdxSource, data_dir: Path, *, allow_download: bool) -> tuple[np.ndarray, ...]:
    """``(train_x, train_y, test_x, test_y)``: uint8 (N, 28, 28) images and int64 labels.

    Raises:
        DataError: the files are missing (and cannot be downloaded), corrupt or inconsistent.
    """
    from imgcls.data.download import DownloadFailed

    files = locate(source, data_dir)
    if files is None:
        failure = None
        if allow_download:
            try:
                files = download(source, data_dir)
            except DownloadFailed as exc:
                failure = str(exc)
        if files is None:
            raise _missing(source, data_dir, allow_download, failure)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.dtype != np.uint8:
            raise _corrupt(
                files[f"{split}_images"],
                f"does not match {files[f'{split}_labels'].name}: images {x.shape} {x.dtype}, labels {y.shape}",
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= len(source.classes)):
            raise _corrupt(files[f"{split}_labels"], f"has labels outside 0..{len(source.classes) - 1}")
    return (
        arrays["train_images"],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"],
        arrays["test_labels"].astype(np.int64),
    )


def _missing(source: IdxSource, data_dir: Path, tried_download: bool, failure: str | None) -> DataError:
    raw = data_dir / source.folder / "raw"
    places = ", ".join(str(p) for p in (raw, *source.system_dirs))
    names = ", ".join(f"{stem}.gz" for stem in FILES.values())
    message = f"{source.name} not found: looked for {names} (gzipped or not) in {places}"
    if failure:
        message += f"; downloading failed ({failure})"
    ways = [f"download them from {source.mirrors[0]} into {raw}"]
    if source.get_hint:
        ways.insert(0, source.get_hint)
    ways.append("or point --data-dir at a folder holding " + f"{source.folder}/raw/")
    if not tried_download:
        ways.insert(0, "allow downloading (data.download: true) when online")
    return DataError(message, hint="; ".join(ways))
