"""CIFAR-10/100: small fakes in the REAL binary and python (pickle) formats, the restricted unpickler, download."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from imgcls.config import DataConfig
from imgcls.data import cifar
from imgcls.data.datasets import load_dataset
from imgcls.errors import DataError

N = 20  # images per batch file
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_NAMES = [f"fine_{i:02d}" for i in range(100)]


def _pixels(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows, the first image pure red (R plane 255, G and B planes 0)."""
    rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0] = np.concatenate([np.full(1024, 255), np.zeros(2048)]).astype(np.uint8)
    return rows


def write_cifar10_bin(root: Path, seed: int = 0) -> Path:
    """cifar-10-batches-bin/ with data_batch_1..5.bin, test_batch.bin (label byte + 3072 pixels) and meta."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        labels = (np.arange(N) % 10).astype(np.uint8)
        np.concatenate([labels[:, None], _pixels(rng, N)], axis=1).tofile(d / name)
    (d / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return d


def write_cifar100_bin(root: Path, seed: int = 0) -> Path:
    """cifar-100-binary/ with train.bin, test.bin (coarse byte, fine byte, 3072 pixels) and the fine names."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-binary"
    d.mkdir(parents=True)
    for name, n in (("train.bin", 200), ("test.bin", 100)):
        fine = (np.arange(n) % 100).astype(np.uint8)
        coarse = (fine // 5).astype(np.uint8)
        np.concatenate([coarse[:, None], fine[:, None], _pixels(rng, n)], axis=1).tofile(d / name)
    (d / "fine_label_names.txt").write_text("\n".join(CIFAR100_NAMES) + "\n")
    (d / "coarse_label_names.txt").write_text("\n".join(f"coarse_{i}" for i in range(20)) + "\n")
    return d


def write_cifar10_py(root: Path, seed: int = 0, protocol: int = 2) -> Path:
    """torchvision's cifar-10-batches-py/: pickled dicts holding a (N, 3072) uint8 array and a label list."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            "batch_label": f"batch {name}",
            "labels": [i % 10 for i in range(N)],
            "data": _pixels(rng, N),
            "filenames": [f"img_{i}.png" for i in range(N)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {"label_names": CIFAR10_NAMES, "num_cases_per_batch": N, "num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return d


def write_cifar100_py(root: Path, seed: int = 0) -> Path:
    """cifar-100-python/ with bytes keys (as Python 2 wrote them) at protocol 2."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, n in (("train", 200), ("test", 100)):
        fine = [i % 100 for i in range(n)]
        batch = {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": _pixels(rng, n)}
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [n.encode() for n in CIFAR100_NAMES], b"coarse_label_names": [b"c"] * 20}
    (d / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return d


def _red_first(x: np.ndarray) -> None:
    assert x.shape[1:] == (32, 32, 3) and x.dtype == np.uint8
    assert (x[0, ..., 0] == 255).all() and (x[0, ..., 1:] == 0).all()  # planes are R, G, B in that order


def test_cifar10_binary_reads_records_and_names(tmp_path: Path) -> None:
    write_cifar10_bin(tmp_path)
    train_x, train_y, test_x, _, names = cifar.load_cifar(cifar.SOURCES["cifar10"], tmp_path, allow_download=False)
    assert train_x.shape == (5 * N, 32, 32, 3) and test_x.shape == (N, 32, 32, 3)
    assert names == CIFAR10_NAMES
    assert train_y.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    _red_first(train_x)
    _red_first(test_x)


def test_cifar10_through_load_dataset(tmp_path: Path) -> None:
    write_cifar10_bin(tmp_path)
    ds = load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False), seed=0)
    assert ds.classes == CIFAR10_NAMES
    assert (len(ds.train), len(ds.val), len(ds.test)) == (90, 10, 20)
    assert ds.input.size == (32, 32) and ds.input.channels == 3 and len(ds.input.mean) == 3


def test_cifar100_binary_uses_the_fine_labels(tmp_path: Path) -> None:
    write_cifar100_bin(tmp_path)
    ds = load_dataset(DataConfig(name="cifar100", dir=tmp_path, download=False), seed=0)
    assert ds.classes == CIFAR100_NAMES
    assert ds.test is not None and sorted(set(ds.test.labels.tolist())) == list(range(100))
    assert len(ds.train) + len(ds.val) == 200


def test_cifar10_python_layout_loads_through_the_restricted_unpickler(tmp_path: Path) -> None:
    write_cifar10_py(tmp_path, protocol=2)
    train_x, _, test_x, _, names = cifar.load_cifar(cifar.SOURCES["cifar10"], tmp_path, allow_download=False)
    assert names == CIFAR10_NAMES and train_x.shape == (5 * N, 32, 32, 3)
    _red_first(train_x)
    _red_first(test_x)


def test_cifar10_python_layout_at_the_newest_protocol(tmp_path: Path) -> None:
    write_cifar10_py(tmp_path, protocol=pickle.HIGHEST_PROTOCOL)
    ds = load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False))
    assert ds.classes == CIFAR10_NAMES and len(ds.test) == N


def test_cifar100_python_layout_with_bytes_keys(tmp_path: Path) -> None:
    write_cifar100_py(tmp_path)
    ds = load_dataset(DataConfig(name="cifar100", dir=tmp_path, download=False))
    assert ds.classes == CIFAR100_NAMES and len(ds.test) == 100


def test_binary_layout_wins_over_python_layout(tmp_path: Path) -> None:
    write_cifar10_bin(tmp_path, seed=1)
    write_cifar10_py(tmp_path, seed=2)
    from_bin = cifar._read_binary(cifar.SOURCES["cifar10"], tmp_path / "cifar-10-batches-bin")
    loaded = cifar.load_cifar(cifar.SOURCES["cifar10"], tmp_path, allow_download=False)
    np.testing.assert_array_equal(loaded[0], from_bin[0])


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_pickle_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    d = write_cifar10_py(tmp_path)
    marker = tmp_path / "pwned"
    (d / "data_batch_3").write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": []}, protocol=2))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False))
    assert "refused" in info.value.message and "data_batch_3" in info.value.message
    assert info.value.exit_code == 2
    assert not marker.exists()


def test_an_object_array_is_refused(tmp_path: Path) -> None:
    d = write_cifar10_py(tmp_path)
    batch = {"data": np.array([1, "x"], dtype=object), "labels": [0, 1]}
    (d / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="refused"):
        cifar.load_cifar(cifar.SOURCES["cifar10"], tmp_path, allow_download=False)


def test_a_truncated_binary_batch_is_a_clear_error(tmp_path: Path) -> None:
    d = write_cifar10_bin(tmp_path)
    data = (d / "data_batch_2.bin").read_bytes()
    (d / "data_batch_2.bin").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"data_batch_2\.bin .*whole number of 3073-byte"):
        load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False))


def test_wrong_number_of_class_names_is_a_clear_error(tmp_path: Path) -> None:
    d = write_cifar10_bin(tmp_path)
    (d / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="lists 2 class names; cifar10 has 10"):
        load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False))


@pytest.mark.parametrize(
    ("name", "problem"),
    [("dog\x1b]0;owned\x07", "has a control character"), ("x" * 1001, "is 1,001 characters long"), ("", "is empty")],
)
def test_a_class_name_no_label_can_be_is_refused_before_training(tmp_path: Path, name: str, problem: str) -> None:
    """The meta file's names went unchecked into the training run, and its bundle refused them only at the end:
    the whole training lost to a name (or printed into a terminal, escapes and all)."""
    d = write_cifar10_py(tmp_path)
    meta = {"label_names": [*CIFAR10_NAMES[:9], name], "num_cases_per_batch": N, "num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    with pytest.raises(DataError, match=f"names class 9 .*, which {problem}") as err:
        load_dataset(DataConfig(name="cifar10", dir=tmp_path, download=False))
    assert "\x1b" not in str(err.value)


def test_missing_offline_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="cifar100", dir=tmp_path, download=False))
    err = info.value
    assert str(tmp_path / "cifar-100-binary") in err.message and str(tmp_path / "cifar-100-python") in err.message
    assert "cifar-100-binary.tar.gz" in (err.hint or "") and "--data-dir" in (err.hint or "")


# -- download ----------------------------------------------------------------------------------------------


def _tarball(src_root: Path, top: str, dest: Path, extra: tarfile.TarInfo | None = None) -> str:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / top, arcname=top)
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return hashlib.md5(dest.read_bytes()).hexdigest()


def test_download_fetches_the_binary_tarball_checks_md5_and_unpacks(
    tmp_path: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_dir
    write_cifar10_bin(tmp_path / "src")
    md5 = _tarball(tmp_path / "src", "cifar-10-batches-bin", served / "cifar-10-binary.tar.gz")
    source = dataclasses.replace(cifar.SOURCES["cifar10"], url=url + "cifar-10-binary.tar.gz", md5=md5)
    monkeypatch.setitem(cifar.SOURCES, "cifar10", source)
    data_dir = tmp_path / "cache"
    killed = data_dir / ".cifar-10-batches-bin.unpack-k1ll3d"  # what an unpack killed mid-way left (170 MB)
    killed.mkdir(parents=True)
    (killed / "data_batch_1.bin").write_bytes(b"half")
    os.utime(killed, (time.time() - 600, time.time() - 600))
    ds = load_dataset(DataConfig(name="cifar10", dir=data_dir, download=True))
    assert ds.classes == CIFAR10_NAMES
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-batches-bin"]  # tarball removed, no staging


def test_download_refuses_a_tarball_with_a_path_escape(
    tmp_path: Path, http_dir: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_dir
    write_cifar10_bin(tmp_path / "src")
    evil = tarfile.TarInfo("cifar-10-batches-bin/../../escaped.txt")
    evil.size = 4
    md5 = _tarball(tmp_path / "src", "cifar-10-batches-bin", served / "c.tar.gz", extra=evil)
    monkeypatch.setitem(
        cifar.SOURCES, "cifar10", dataclasses.replace(cifar.SOURCES["cifar10"], url=url + "c.tar.gz", md5=md5)
    )
    data_dir = tmp_path / "cache" / "data"
    with pytest.raises(DataError, match="unexpected member"):
        load_dataset(DataConfig(name="cifar10", dir=data_dir, download=True))
    assert not (tmp_path / "cache" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not list(data_dir.iterdir())


def test_download_failing_fast_offline_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    source = dataclasses.replace(cifar.SOURCES["cifar100"], url=f"http://127.0.0.1:{port}/cifar-100-binary.tar.gz")
    monkeypatch.setitem(cifar.SOURCES, "cifar100", source)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="cifar100", dir=tmp_path, download=True))
    assert "downloading failed" in info.value.message
    assert not list(tmp_path.iterdir())
