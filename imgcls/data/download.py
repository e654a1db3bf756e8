"""Download dataset files with a checksum, and unpack tarballs without letting a member escape.

Only the dataset loaders call this, only for the URLs in their source tables, and only when
``data.download`` is on. Every failure is a :class:`DownloadFailed` the loader turns into a
:class:`~imgcls.errors.DataError` that says where the files were looked for and how to get them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from imgcls.fsio import atomic_file, fsync_tree, staging_dir

logger = logging.getLogger(__name__)

TIMEOUT_S = 30.0  # per socket operation; an offline machine fails at name resolution, well before this


class DownloadFailed(Exception):
    """A download or unpack that did not produce verified files (the reason is the message)."""


def fetch(url: str, dest: Path, md5: str, *, timeout: float = TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` through a temporary file, keeping it only when its md5 matches.

    Args:
        url: an http(s) URL from a loader's source table.
        dest: the final file path; its directory is created.
        md5: the published md5 of the file (the datasets publish md5, not sha256).
        timeout: seconds per socket operation.

    Raises:
        DownloadFailed: the network failed, or the file arrived with another checksum.
    """
    if not url.startswith(("https://", "http://")):
        raise DownloadFailed(f"refusing to fetch {url!r}: not an http(s) URL")
    digest = hashlib.md5(usedforsecurity=False)
    logger.info("downloading %s -> %s", url, dest)
    with atomic_file(dest, suffix=".part") as tmp:  # a failed or corrupt download leaves nothing behind
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:  # scheme checked above
                    while block := response.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DownloadFailed(f"download of {url} failed: {reason}") from None
        if digest.hexdigest() != md5:
            raise DownloadFailed(f"{url} arrived with md5 {digest.hexdigest()}, expected {md5} (corrupt or changed)")
    return dest


def unpack_tarball(archive: Path, into: Path, *, top: str) -> Path:
    """Unpack ``archive`` into ``into``; every member must be a regular file or directory under ``top/``.

    The directory appears complete or not at all: members go to a temporary directory that is renamed to
    ``into/top`` at the end.

    Raises:
        DownloadFailed: a member is a link, a device, absolute, or outside ``top/``; or the archive is corrupt.
    """
    final = into / top
    with staging_dir(final, "unpack") as staging:
        _unpack_into(archive, staging, final, top=top)
    return final


def _unpack_into(archive: Path, staging: Path, final: Path, *, top: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if (
                    not (m.isfile() or m.isdir())
                    or m.name.startswith("/")
                    or ".." in parts
                    or not parts
                    or parts[0] != top
                ):
                    raise DownloadFailed(f"{archive.name}: unexpected member {m.name!r}; refusing to unpack it")
            tar.extractall(staging, members=members, filter="data")
        if final.exists():
            raise DownloadFailed(f"{final} appeared while unpacking; remove it and try again")
        fsync_tree(staging / top)
        os.replace(staging / top, final)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DownloadFailed(f"{archive} cannot be unpacked: {exc}") from None
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
