"""A store in a local folder: exclusive creates with ``link(2)``, compare-and-swap by rename under a lock.

- create-only: the data goes to a temporary file in the target folder, then ``os.link(tmp, dest)`` — atomic,
  fails if ``dest`` exists, and a reader never sees a half-written object;
- compare-and-swap: under an exclusive ``flock`` on ``.NAME.lock`` beside the object, the current generation
  (a hash of the content) is compared with the expected one and the new content renamed into place;
- every key is checked and resolved inside the root: no key escapes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from imgcls.errors import StoreError
from imgcls.fsio import atomic_file, link_new
from imgcls.store.backend import (
    CHUNK,
    ContentChanged,
    ObjectStat,
    PreconditionFailed,
    Progress,
    crc32c_file,
    crc32c_update,
    has_fast_crc32c,
)
from imgcls.store.refs import StoreURI, check_store_key


def _checksum() -> Callable[[int, bytes], int]:
    """crc32c with google-crc32c's C code; zlib's crc32 where it is missing (a serve-only install): the
    local store only compares a written file with its source, so either detects a bad copy, and pure-Python
    crc32c would cost seconds per 100 MB."""
    return crc32c_update if has_fast_crc32c() else _zlib_crc32


def _zlib_crc32(crc: int, data: bytes) -> int:
    return zlib.crc32(data, crc)


def _generation(data: bytes) -> int:
    return int(hashlib.sha256(data).hexdigest()[:15], 16) + 1


class LocalBackend:
    """Backend over a folder (created on first write)."""

    def __init__(self, uri: StoreURI) -> None:
        self.uri = uri
        self.root = Path(uri.location)

    # -- paths ------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if key == "":
            return self.root
        check_store_key(key)
        path = self.root / key
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise StoreError(f"refusing store key {key!r}: it resolves outside {self.root}")
        return path

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store {self.root} is not a folder", hint="pass a folder, file:///path or gs://bucket")

    def _parent(self, dest: Path) -> Path:
        """Create the folder of ``dest``, with a store error instead of an OSError."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StoreError(f"cannot create {dest.parent}: a file is in the way") from exc
        except PermissionError as exc:
            raise StoreError(
                f"cannot write to {dest.parent}: permission denied", hint="choose a writable store"
            ) from exc
        return dest

    @contextlib.contextmanager
    def _locked(self, dest: Path) -> Iterator[None]:
        lock = dest.parent / f".{dest.name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def _link_into_place(tmp: Path, dest: Path) -> None:
        """Create-only commit: the object appears complete, or PreconditionFailed when it already exists."""
        try:
            link_new(tmp, dest)
        except FileExistsError as exc:
            raise PreconditionFailed(str(dest)) from exc

    # -- objects ----------------------------------------------------------------------------------------
    def read(self, key: str) -> tuple[bytes, int] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError as exc:
            raise StoreError(f"store object {key!r} is a folder", hint="the store layout was modified by hand") from exc
        return data, _generation(data)

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        dest = self._parent(self._path(key))

        def swap_if_unchanged(tmp: Path, dest: Path) -> None:
            with self._locked(dest):
                current = self.read(key)
                if current is None or current[1] != if_generation_match:
                    raise PreconditionFailed(key)
                os.replace(tmp, dest)

        commit = (
            self._link_into_place
            if if_generation_match == 0
            else os.replace
            if if_generation_match is None
            else swap_if_unchanged
        )
        with atomic_file(dest, commit=commit) as tmp:
            tmp.write_bytes(data)
        return _generation(data)

    def upload_file(self, key: str, src: Path, *, progress: Progress | None = None, sha256: str | None = None) -> None:
        dest = self._parent(self._path(key))
        total = os.path.getsize(src)
        crc = done = 0
        update = _checksum()
        digest = hashlib.sha256()
        with atomic_file(dest, commit=self._link_into_place) as tmp:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while block := fin.read(CHUNK):
                    fout.write(block)
                    crc = update(crc, block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(key, done, total)
            if sha256 is not None and digest.hexdigest() != sha256:  # before the commit: nothing is left
                raise ContentChanged(key)
            if crc32c_file(tmp, update) != crc:
                raise StoreError(
                    f"checksum mismatch writing {key!r} into {self.root}", hint="check the disk; push again"
                )

    def download_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> None:
        src = self._path(key)
        try:
            total = os.path.getsize(src)
            fin = open(src, "rb")  # noqa: SIM115
        except FileNotFoundError as exc:
            raise StoreError(
                f"{key!r} is missing from store {self.root}", hint="the stored version is partial", exit_code=1
            ) from exc
        done = 0
        with fin, open(dest, "xb") as fout:
            while block := fin.read(CHUNK):
                fout.write(block)
                done += len(block)
                if progress:
                    progress(key, done, total)

    def stat(self, key: str) -> ObjectStat | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectStat(size=path.stat().st_size, crc32c=crc32c_file(path, _checksum()))

    def checksum(self, path: Path) -> int:
        return crc32c_file(path, _checksum())

    def list_children(self, prefix: str) -> list[str]:
        path = self._path(prefix)
        try:
            return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()
