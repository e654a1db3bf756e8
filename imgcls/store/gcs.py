"""A store in a Google Cloud Storage bucket (``gs://bucket/prefix``).

google-cloud-storage is imported inside functions only (the ``gcs`` extra). Credentials come from
Application Default Credentials; when ``STORAGE_EMULATOR_HOST`` is set the client talks to that emulator with
anonymous credentials. Writes carry preconditions: ``if_generation_match=0`` for every version file
(create-only) and the read generation for alias moves (compare-and-swap). Uploads and downloads are checked
with crc32c.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from imgcls.deps import require
from imgcls.errors import StoreError
from imgcls.store.backend import (
    ContentChanged,
    ObjectStat,
    PreconditionFailed,
    Progress,
    crc32c_file,
    crc32c_update,
)
from imgcls.store.refs import StoreURI, check_store_key

logger = logging.getLogger(__name__)

RESUMABLE_CHUNK = 8 << 20  # bytes per resumable-upload request; files above this size upload in chunks


def _reason(exc: BaseException | None) -> str:
    """``[Errno 111] Connection refused`` out of urllib3's nested message, or the message itself, cut short."""
    import re

    text = str(exc) if exc is not None else "no answer"
    found = re.search(r"\[Errno -?\d+\] [^'\")\]]+", text)
    return found.group(0).strip() if found else text[:200]


def _crc_from_b64(value: str | None) -> int | None:
    return int.from_bytes(base64.b64decode(value), "big") if value else None


class _CountingReader:
    """A file wrapper that reports how many bytes were read and keeps the sha256 of the bytes it handed out
    (each offset once: a retried chunk is read again after a seek)."""

    def __init__(self, f: Any, key: str, total: int, progress: Progress | None) -> None:
        self.f, self.key, self.total, self.progress = f, key, total, progress
        self.done = 0
        self.sha256 = hashlib.sha256()
        self.hashed = 0  # bytes [0, hashed) are in sha256

    def read(self, n: int = -1) -> bytes:
        start = self.f.tell()
        data = self.f.read(n)
        if start <= self.hashed < start + len(data):
            self.sha256.update(data[self.hashed - start :])
            self.hashed = start + len(data)
        self.done += len(data)
        if self.progress and data:
            self.progress(self.key, min(self.done, self.total), self.total)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


class _CountingWriter:
    def __init__(self, f: Any, key: str, total: int, progress: Progress | None) -> None:
        self.f, self.key, self.total, self.progress = f, key, total, progress
        self.done = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        self.done += len(data)
        self.crc = crc32c_update(self.crc, data)
        if self.progress:
            self.progress(self.key, self.done, self.total)
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


class GCSBackend:
    """Backend over ``gs://bucket/prefix`` through the google-cloud-storage client."""

    def __init__(self, uri: StoreURI, client: Any | None = None) -> None:
        self.uri = uri
        self._client = client
        self._bucket: Any = None

    # -- client -----------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client()
        return self._client

    @property
    def bucket(self) -> Any:
        if self._bucket is None:
            self._bucket = self.client.bucket(self.uri.bucket)
        return self._bucket

    def _key(self, key: str) -> str:
        check_store_key(key)
        return f"{self.uri.prefix}/{key}" if self.uri.prefix else key

    def _call(self, what: str, fn: Any, *args: Any, missing: str = "raise", **kwargs: Any) -> Any:
        """Run a client call, turning access problems into StoreError (exit 2) with a hint.

        ``missing`` says what a 404 means: "bucket" (the bucket is missing), "none" (return None) or "raise".
        """
        exceptions = require("google.api_core.exceptions", feature="a gs:// store")
        requests = require("requests", feature="a gs:// store")
        storage_exceptions = require("google.cloud.storage.exceptions", feature="a gs:// store")
        try:
            return fn(*args, **kwargs)
        except (storage_exceptions.DataCorruption, storage_exceptions.InvalidResponse) as exc:
            raise StoreError(
                f"GCS transfer failed its integrity check while trying to {what}: {exc}",
                hint="the data was corrupted or cut short in transit; try again",
                exit_code=1,
            ) from exc
        except exceptions.PreconditionFailed as exc:
            raise PreconditionFailed(what) from exc
        except exceptions.NotFound as exc:
            if missing == "bucket":
                raise _no_bucket(self.uri) from exc
            if missing == "none":
                return None
            raise StoreError(f"not found while trying to {what}", hint="the stored version is partial") from exc
        except (exceptions.Forbidden, exceptions.Unauthorized) as exc:
            raise StoreError(
                f"access to gs://{self.uri.bucket} was refused ({exc.code}) while trying to {what}",
                hint="grant the account storage.objects.* on the bucket, or run `gcloud auth application-default "
                "login` with an account that has it",
            ) from exc
        except exceptions.GoogleAPICallError as exc:
            raise StoreError(f"GCS request failed while trying to {what}: {exc}", exit_code=1) from exc
        # the client retried a transient failure (no connection) until its deadline: 120 s by default
        except exceptions.RetryError as exc:
            raise StoreError(
                f"cannot reach GCS while trying to {what}: {_reason(exc.cause)}, still after the client's retries",
                hint="check the network, or STORAGE_EMULATOR_HOST if you use an emulator",
            ) from exc
        except (OSError, requests.exceptions.RequestException) as exc:
            raise StoreError(
                f"cannot reach GCS while trying to {what}: {exc}",
                hint="check the network, or STORAGE_EMULATOR_HOST if you use an emulator",
            ) from exc

    def check(self) -> None:
        self._call("open the bucket", self.client.get_bucket, self.uri.bucket, missing="bucket")

    # -- objects ----------------------------------------------------------------------------------------
    def read(self, key: str) -> tuple[bytes, int] | None:
        name = self._key(key)
        for _ in range(5):  # re-read if the object changes between its metadata and its content
            blob = self._call(f"read {name}", self.bucket.get_blob, name)
            if blob is None:
                return None
            generation = int(blob.generation)
            try:
                data = self._call(
                    f"read {name}", blob.download_as_bytes, if_generation_match=generation, missing="none"
                )
            except PreconditionFailed:
                continue
            if data is None:
                continue
            return data, generation
        raise StoreError(f"{name} keeps changing while being read", exit_code=3)

    def write(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        name = self._key(key)
        blob = self.bucket.blob(name)
        kwargs = {} if if_generation_match is None else {"if_generation_match": if_generation_match}
        self._call(
            f"write {name}",
            blob.upload_from_string,
            data,
            content_type="application/json",
            checksum="crc32c",
            missing="bucket",
            **kwargs,
        )
        self._check_crc(name, blob, crc32c_update(0, data))
        return int(blob.generation)

    def _check_crc(self, name: str, blob: Any, expected: int) -> None:
        stored = _crc_from_b64(blob.crc32c)
        if stored is not None and stored != expected:
            raise StoreError(
                f"crc32c mismatch after uploading gs://{self.uri.bucket}/{name}", hint="push again", exit_code=1
            )

    def upload_file(self, key: str, src: Path, *, progress: Progress | None = None, sha256: str | None = None) -> None:
        name = self._key(key)
        size = os.path.getsize(src)
        blob = self.bucket.blob(name, chunk_size=RESUMABLE_CHUNK if size > RESUMABLE_CHUNK else None)
        crc = 0
        with open(src, "rb") as f:
            while block := f.read(1 << 20):
                crc = crc32c_update(crc, block)
            f.seek(0)
            reader = _CountingReader(f, name, size, progress)
            self._call(
                f"upload {name}",
                blob.upload_from_file,
                reader,
                size=size,
                if_generation_match=0,
                checksum="crc32c",
                content_type="application/octet-stream",
                missing="bucket",
            )
        if sha256 is not None and (reader.hashed != size or reader.sha256.hexdigest() != sha256):
            # the file changed while it was read: the object just created holds other bytes; take it back
            self._call(
                f"delete {name}",
                self.bucket.delete_blob,
                name,
                if_generation_match=blob.generation,
                missing="none",
            )
            raise ContentChanged(key)
        self._check_crc(name, blob, crc)

    def download_file(self, key: str, dest: Path, *, progress: Progress | None = None) -> None:
        name = self._key(key)
        blob = self._call(f"read {name}", self.bucket.get_blob, name)
        if blob is None:
            raise StoreError(f"gs://{self.uri.bucket}/{name} is missing", hint="the stored version is partial")
        expected = _crc_from_b64(blob.crc32c)
        with open(dest, "xb") as f:
            writer = _CountingWriter(f, name, int(blob.size or 0), progress)
            self._call(
                f"download {name}",
                blob.download_to_file,
                writer,
                checksum="crc32c",
                if_generation_match=blob.generation,
                missing="raise",
            )
        if expected is not None and writer.crc != expected:
            raise StoreError(
                f"crc32c mismatch downloading gs://{self.uri.bucket}/{name}: the download is corrupt or partial",
                hint="pull again",
                exit_code=1,
            )

    def stat(self, key: str) -> ObjectStat | None:
        name = self._key(key)
        blob = self._call(f"read {name}", self.bucket.get_blob, name)
        if blob is None:
            return None
        return ObjectStat(size=int(blob.size or 0), crc32c=_crc_from_b64(blob.crc32c) or 0)

    def checksum(self, path: Path) -> int:
        return crc32c_file(path)

    def list_children(self, prefix: str) -> list[str]:
        base = self._key(prefix) + "/" if prefix else (f"{self.uri.prefix}/" if self.uri.prefix else "")

        def _list() -> list[str]:
            it = self.client.list_blobs(self.uri.bucket, prefix=base, delimiter="/")
            names = [b.name[len(base) :] for b in it]
            names += [p[len(base) :].rstrip("/") for p in it.prefixes]
            return sorted(n for n in set(names) if n and not n.startswith("."))

        return list(self._call(f"list gs://{self.uri.bucket}/{base}", _list, missing="bucket"))

    def delete(self, key: str) -> None:
        name = self._key(key)
        self._call(f"delete {name}", self.bucket.delete_blob, name, missing="none")


def _no_bucket(uri: StoreURI) -> StoreError:
    return StoreError(
        f"bucket gs://{uri.bucket} does not exist or is not visible to these credentials",
        hint=f"create it (`gcloud storage buckets create gs://{uri.bucket}`) or fix the URI",
    )


def make_client() -> Any:
    """A storage client: the emulator when ``STORAGE_EMULATOR_HOST`` is set, else Application Default Credentials."""
    storage = require("google.cloud.storage", feature="a gs:// store")
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        project = os.environ.get("GOOGLE_CLOUD_PROJECT", "imgcls-emulator")
        return storage.Client(project=project, credentials=AnonymousCredentials())
    auth_exceptions = require("google.auth.exceptions", feature="a gs:// store")
    try:
        return storage.Client()
    except auth_exceptions.DefaultCredentialsError as exc:
        raise StoreError(
            "no Google Cloud credentials found for the gs:// store",
            hint="run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
            "service-account key file (STORAGE_EMULATOR_HOST selects an emulator)",
        ) from exc
    except OSError as exc:
        raise StoreError(f"cannot create a GCS client: {exc}", hint="check the credentials setup") from exc
