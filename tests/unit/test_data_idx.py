"""MNIST / Fashion-MNIST: IDX files (gzipped and raw) read with numpy, located, downloaded, or clearly missing."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest

from imgcls.config import DataConfig
from imgcls.data import idx
from imgcls.data.datasets import load_dataset
from imgcls.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def write_idx_set(raw: Path, *, n_train: int = 60, n_test: int = 20, gz: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """The four IDX files of a tiny MNIST-like set (6 per class in train) in ``raw``."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    raw.mkdir(parents=True, exist_ok=True)
    for key, stem in idx.FILES.items():
        data = idx_bytes(arrays[key])
        if gz:
            (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / stem).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_mnist_idx_files_load_through_load_dataset(tmp_path: Path, gz: bool) -> None:
    arrays = write_idx_set(tmp_path / "MNIST" / "raw", gz=gz)
    ds = load_dataset(DataConfig(name="mnist", dir=tmp_path, download=False), seed=0)
    assert ds.classes == [str(i) for i in range(10)]
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 20)  # at least one per class held out
    assert ds.input.size == (28, 28) and ds.input.channels == 1
    assert ds.train.images.shape == (50, 28, 28, 1) and ds.train.images.dtype == np.uint8
    # the test split is the t10k file, image for image
    np.testing.assert_array_equal(ds.test.images[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(ds.test.labels, arrays["test_labels"])
    assert ds.native_sizes == {(28, 28): 80}


def test_fashion_mnist_uses_its_class_names_and_resizes_on_request(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "FashionMNIST" / "raw", gz=True)
    ds = load_dataset(DataConfig(name="fashion-mnist", dir=tmp_path, img_size=32, download=False), seed=0)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    assert ds.train.images.shape[1:] == (32, 32, 1)
    assert ds.native_size == (28, 28)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    ds = load_dataset(DataConfig(name="fashion-mnist", dir=tmp_path / "empty", download=False), seed=0)
    assert len(ds.train) + len(ds.val) == 60_000 and len(ds.test) == 10_000
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    assert 0.27 < ds.input.mean[0] < 0.30  # Fashion-MNIST's well-known mean, 0.286


def test_read_idx_rejects_a_bad_magic_number_and_a_truncated_file(tmp_path: Path) -> None:
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 64)
    with pytest.raises(DataError, match="not an IDX file"):
        idx.read_idx(bad)
    short = tmp_path / "t10k-images-idx3-ubyte"
    short.write_bytes(idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-10])
    with pytest.raises(DataError, match="its header"):
        idx.read_idx(short)
    broken_gz = tmp_path / "x.gz"
    broken_gz.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 4), np.uint8)))[:-8])
    with pytest.raises(DataError, match="cannot be read"):
        idx.read_idx(broken_gz)


def test_missing_with_download_off_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist", dir=tmp_path, download=False))
    err = info.value
    assert err.exit_code == 2
    assert str(tmp_path / "MNIST" / "raw") in err.message
    assert "train-images-idx3-ubyte.gz" in err.message
    assert "data.download" in (err.hint or "") and "--data-dir" in (err.hint or "")
    assert "https://" in (err.hint or "")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failed_download_is_a_data_error_naming_the_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real download attempt against a closed local port: refused at once (this machine has no internet).
    source = dataclasses.replace(idx.SOURCES["mnist"], mirrors=(f"http://127.0.0.1:{_closed_port()}/",))
    monkeypatch.setitem(idx.SOURCES, "mnist", source)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist", dir=tmp_path, download=True))
    assert "downloading failed" in info.value.message
    assert info.value.exit_code == 2
    assert not any((tmp_path / "MNIST" / "raw").glob("*.gz"))  # nothing half-written


def test_download_fetches_checks_md5_and_loads(
    tmp_path: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_dir
    arrays = write_idx_set(served, gz=True, seed=3)
    md5 = {f"{s}.gz": hashlib.md5((served / f"{s}.gz").read_bytes()).hexdigest() for s in idx.FILES.values()}
    source = dataclasses.replace(idx.SOURCES["mnist"], mirrors=(f"http://127.0.0.1:{_closed_port()}/", url), md5=md5)
    monkeypatch.setitem(idx.SOURCES, "mnist", source)
    data_dir = tmp_path / "cache"
    ds = load_dataset(DataConfig(name="mnist", dir=data_dir, download=True))  # first mirror fails, second works
    assert sorted(p.name for p in (data_dir / "MNIST" / "raw").iterdir()) == sorted(md5)
    np.testing.assert_array_equal(ds.test.images[..., 0], arrays["test_images"])


def test_download_with_a_wrong_checksum_keeps_nothing(
    tmp_path: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_dir
    write_idx_set(served, gz=True)
    source = dataclasses.replace(idx.SOURCES["mnist"], mirrors=(url,))  # the real md5s: these fakes won't match
    monkeypatch.setitem(idx.SOURCES, "mnist", source)
    with pytest.raises(DataError, match="expected"):
        load_dataset(DataConfig(name="mnist", dir=tmp_path / "cache", download=True))
    assert not list((tmp_path / "cache" / "MNIST" / "raw").iterdir())
