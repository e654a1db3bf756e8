"""The one interface every store backend implements; everything above it is backend-agnostic.

Keys are relative, '/'-separated and validated with :func:`imgcls.store.refs.check_store_key` by each
backend before use. A *generation* is an opaque positive integer that changes whenever an object is
rewritten (GCS object generations; a content hash locally); ``0`` in a precondition means "must not exist".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from imgcls.store.refs import StoreURI

# progress(key, bytes_done, bytes_total): called while a file moves; the CLI renders it.
Progress = Callable[[str, int, int], None]

CHUNK = 1 << 20


class PreconditionFailed(Exception):
    """A create-only or compare-and-swap write lost: the object exists or changed since it was read."""


class ContentChanged(Exception):
    """The bytes an upload read from its source file do not have the sha256 the caller expected (the file was
    rewritten while it was being uploaded); nothing is left in the store."""


@dataclass(frozen=True)
class ObjectStat:
    """Size and checksum (crc32c; zlib crc32 in a local store without google-crc32c) of a stored object."""

    size: int
    crc32c: int


class Backend(Protocol):
    """Storage primitives the registry needs."""

    uri: StoreURI

    def check(self) -> None:
        """Raise StoreError (exit 2, with a hint) if the store cannot be reached or does not exist."""

    def read(self, key: str) -> tuple[bytes, int] | None:
        """``(data, generation)`` of an object, or None if it does not exist."""

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write a small object; with a precondition, raise PreconditionFailed unless it holds. Returns the new
        generation."""

    def upload_file(self, key: str, src: Path, *, progress: Progress | None = None, sha256: str | None = None) -> None:
        """Create-only upload of a file with a crc32c check; PreconditionFailed if the key exists. With ``sha256``,
        ContentChanged (and no object left) unless the bytes uploaded have that hash."""

    def download_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> None:
        """Download an object to ``dest`` (a new file) with a crc32c check where the backend keeps one."""

    def stat(self, key: str) -> ObjectStat | None:
        """Size and checksum of an object, or None if it does not exist."""

    def checksum(self, path: Path) -> int:
        """The checksum :meth:`stat` reports, computed for a local file."""

    def list_children(self, prefix: str) -> list[str]:
        """Names of the immediate children (objects or 'folders') under ``prefix/``."""

    def delete(self, key: str) -> None:
        """Delete an object if it exists."""


def crc32c_update(crc: int, data: bytes) -> int:
    """Running crc32c (Castagnoli) of a byte stream, with google-crc32c's C code when it is installed."""
    try:
        import google_crc32c  # lazily: part of the gcs extra; small C extension

        return int(google_crc32c.extend(crc, data))
    except ImportError:
        return _crc32c_py(crc, data)


_TABLE: list[int] = []


def _crc32c_py(crc: int, data: bytes) -> int:
    if not _TABLE:
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _TABLE.append(c)
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def has_fast_crc32c() -> bool:
    """True when google-crc32c's C code is installed (it comes with the ``gcs`` extra)."""
    try:
        import google_crc32c

        return bool(google_crc32c.implementation == "c")
    except ImportError:
        return False


def crc32c_file(path: Path, update: Callable[[int, bytes], int] = crc32c_update) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            crc = update(crc, block)
    return crc
