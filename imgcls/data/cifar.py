"""CIFAR-10 and CIFAR-100 from the official binary format, read with numpy; torchvision's python layout too.

Looked for under the data dir, first in the binary layout the dataset authors publish for C programs
(``cifar-10-batches-bin/``, ``cifar-100-binary/``), then in the python layout torchvision downloads
(``cifar-10-batches-py/``, ``cifar-100-python/``), which many users already have. The python layout is a set
of pickles: they are read through :class:`_ArrayUnpickler`, which rebuilds numpy arrays and plain containers
and refuses every other global, so a tampered file cannot run code. When neither is there and downloading is
allowed, the binary tarball is fetched, its md5 checked and unpacked (no links, nothing outside its folder).

CIFAR-100 uses its 100 fine labels.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.errors import DataError
from imgcls.text import class_name_problem, printable

logger = logging.getLogger(__name__)

_PIXELS = 32 * 32 * 3  # one image: 1024 red, 1024 green, 1024 blue bytes, rows top to bottom


@dataclass(frozen=True)
class CifarSource:
    """One CIFAR variant: its two on-disk layouts and where the binary tarball is published."""

    name: str
    num_classes: int
    # binary layout
    bin_dir: str
    bin_train: tuple[str, ...]
    bin_test: str
    bin_names: str  # label names, one per line
    label_bytes: int  # label bytes before each image's pixels
    label_index: int  # which of those bytes is the label used (CIFAR-100: 1 = fine)
    # python (torchvision) layout
    py_dir: str
    py_train: tuple[str, ...]
    py_test: str
    py_meta: str
    py_labels_key: str
    py_names_key: str
    # download
    url: str
    md5: str

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


SOURCES = {
    "cifar10": CifarSource(
        name="cifar10",
        num_classes=10,
        bin_dir="cifar-10-batches-bin",
        bin_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        bin_test="test_batch.bin",
        bin_names="batches.meta.txt",
        label_bytes=1,
        label_index=0,
        py_dir="cifar-10-batches-py",
        py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        py_test="test_batch",
        py_meta="batches.meta",
        py_labels_key="labels",
        py_names_key="label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
    ),
    "cifar100": CifarSource(
        name="cifar100",
        num_classes=100,
        bin_dir="cifar-100-binary",
        bin_train=("train.bin",),
        bin_test="test.bin",
        bin_names="fine_label_names.txt",
        label_bytes=2,
        label_index=1,
        py_dir="cifar-100-python",
        py_train=("train",),
        py_test="test",
        py_meta="meta",
        py_labels_key="fine_labels",
        py_names_key="fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        md5="03b5dce01913d631647c71ecec9e9cb8",
    ),
}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def load_cifar(source: CifarSource, data_dir: Path, *, allow_download: bool) -> Arrays:
    """``(train_x, train_y, test_x, test_y, class_names)``: uint8 (N, 32, 32, 3) images, int64 labels.

    Raises:
        DataError: the files are missing (and cannot be downloaded), corrupt or refused.
    """
    from imgcls.data.download import DownloadFailed, fetch, unpack_tarball

    bin_dir, py_dir = data_dir / source.bin_dir, data_dir / source.py_dir
    if _complete(bin_dir, (*source.bin_train, source.bin_test, source.bin_names)):
        return _read_binary(source, bin_dir)
    if _complete(py_dir, (*source.py_train, source.py_test, source.py_meta)):
        return _read_python(source, py_dir)
    failure = None
    if allow_download:
        archive = data_dir / source.archive
        try:
            fetch(source.url, archive, source.md5)
            try:
                if bin_dir.exists():  # an incomplete earlier copy
                    import shutil

                    shutil.rmtree(bin_dir)
                unpack_tarball(archive, data_dir, top=source.bin_dir)
            finally:
                archive.unlink(missing_ok=True)
        except DownloadFailed as exc:
            failure = str(exc)
        else:
            if _complete(bin_dir, (*source.bin_train, source.bin_test, source.bin_names)):
                return _read_binary(source, bin_dir)
            failure = f"{source.archive} did not contain the expected files"
    raise _missing(source, data_dir, allow_download, failure)


def _complete(directory: Path, names: tuple[str, ...]) -> bool:
    return all((directory / n).is_file() for n in names)


def _assemble(
    source: CifarSource,
    train: list[tuple[np.ndarray, np.ndarray]],
    test: tuple[np.ndarray, np.ndarray],
    names: list[str],
    names_path: Path,
) -> Arrays:
    """Both layouts end here: the class names checked, the training batches joined."""
    _check_names(source, names, names_path)
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test[0], test[1], names


# -- binary layout ------------------------------------------------------------------------------------------


def _read_binary(source: CifarSource, directory: Path) -> Arrays:
    logger.debug("%s: reading the binary layout in %s", source.name, directory)
    train = [_read_bin(source, directory / f) for f in source.bin_train]
    test_x, test_y = _read_bin(source, directory / source.bin_test)
    names_path = directory / source.bin_names
    try:
        names = [line.strip() for line in names_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise _corrupt(names_path, f"cannot be read ({exc})") from None
    return _assemble(source, train, (test_x, test_y), names, names_path)


def _read_bin(source: CifarSource, path: Path) -> tuple[np.ndarray, np.ndarray]:
    record = source.label_bytes + _PIXELS
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise _corrupt(path, f"cannot be read ({exc})") from None
    if raw.size == 0 or raw.size % record:
        raise _corrupt(path, f"holds {raw.size:,} bytes, not a whole number of {record}-byte CIFAR records")
    rows = raw.reshape(-1, record)
    labels = rows[:, source.label_index].astype(np.int64)
    images = rows[:, source.label_bytes :].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    _check_labels(source, labels, path)
    return np.ascontiguousarray(images), labels


# -- python (torchvision) layout ----------------------------------------------------------------------------


def _read_python(source: CifarSource, directory: Path) -> Arrays:
    logger.debug("%s: reading the python layout in %s", source.name, directory)
    train = [_read_py_batch(source, directory / f) for f in source.py_train]
    test_x, test_y = _read_py_batch(source, directory / source.py_test)
    meta_path = directory / source.py_meta
    meta = _unpickle(meta_path)
    names = meta.get(source.py_names_key)
    if not isinstance(names, list):
        raise _corrupt(meta_path, f"has no {source.py_names_key!r} list")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    return _assemble(source, train, (test_x, test_y), names, meta_path)


def _read_py_batch(source: CifarSource, path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get(source.py_labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise _corrupt(path, f"has no uint8 'data' array of shape (N, {_PIXELS})")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise _corrupt(path, f"has no integer {source.py_labels_key!r} list") from None
    if y.shape[0] != data.shape[0]:
        raise _corrupt(path, f"holds {data.shape[0]} images but {y.shape[0]} labels")
    _check_labels(source, y, path)
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), y


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles of bytes at protocol 2 go through _codecs.encode(text, "latin1"); nothing else is allowed.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode is only allowed with the latin1 codec")
    return text.encode("latin1")


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:  # object arrays would carry arbitrary pickled objects
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _frombuffer(buffer: bytes, dtype: Any, shape: tuple[int, ...], order: str) -> np.ndarray:
    # numpy's own pickles at protocol 5 rebuild arrays through numpy._core.numeric._frombuffer
    dtype = _plain_dtype(dtype)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"bad array order {order!r}")
    return np.frombuffer(buffer, dtype=dtype).reshape(tuple(shape), order="F" if order == "F" else "C")


class _ArrayUnpickler(pickle.Unpickler):
    """A restricted unpickler for CIFAR's python batches: dicts, lists, strings, numbers and numpy arrays.

    A pickle can name any importable callable and have it called while loading. This one only resolves the
    globals numpy needs to rebuild an array (``_reconstruct``, ``ndarray``, a non-object ``dtype``, and
    ``_frombuffer`` for protocol 5, reimplemented here) and the latin1 bytes helper; any other global is
    refused, so loading a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): _plain_dtype,
            ("numpy.core.numeric", "_frombuffer"): _frombuffer,
            ("numpy._core.numeric", "_frombuffer"): _frombuffer,
            ("_codecs", "encode"): _latin1_encode,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return allowed[(module, name)]


def _reconstruct() -> Any:
    return np.empty(0).__reduce__()[0]  # numpy's array-rebuilding function, wherever this numpy keeps it


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path} was refused: {exc}",
            hint="this is not an original CIFAR python batch; delete it and get the dataset again",
        ) from None
    except Exception as exc:  # nothing can run inside the restricted unpickler: any failure is a bad file
        raise _corrupt(path, f"cannot be read as a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise _corrupt(path, "does not hold a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


# -- checks and messages ------------------------------------------------------------------------------------


def _check_labels(source: CifarSource, labels: np.ndarray, path: Path) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= source.num_classes):
        raise _corrupt(path, f"has labels outside 0..{source.num_classes - 1}")


def _check_names(source: CifarSource, names: list[str], path: Path) -> None:
    if len(names) != source.num_classes:
        raise _corrupt(path, f"lists {len(names)} class names; {source.name} has {source.num_classes}")
    for i, name in enumerate(names):  # refused here, not by the bundle's check once the training has run
        if problem := class_name_problem(name):
            raise _corrupt(path, f"names class {i} {printable(name[:60])!r}, which {problem}")


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(f"{path} {what}", hint="delete the dataset folder and get it again (or run with download on)")


def _missing(source: CifarSource, data_dir: Path, tried_download: bool, failure: str | None) -> DataError:
    message = (
        f"{source.name} not found: looked for {data_dir / source.bin_dir}/ (binary: "
        f"{', '.join((*source.bin_train, source.bin_test))}) and {data_dir / source.py_dir}/ (python layout)"
    )
    if failure:
        message += f"; downloading failed ({failure})"
    ways = [
        f"download {source.url} (md5 {source.md5}) and unpack it in {data_dir}",
        "or point --data-dir at the folder that holds " + f"{source.bin_dir}/ or {source.py_dir}/",
    ]
    if not tried_download:
        ways.insert(0, "allow downloading (data.download: true) when online")
    return DataError(message, hint="; ".join(ways))
