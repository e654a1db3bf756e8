"""Uploads: a lean multipart/form-data reader that keeps the parts in memory.

Starlette's ``request.form()`` spools every file into a ``SpooledTemporaryFile`` and builds ``UploadFile``
objects, and python-multipart's byte-level state machine calls back a dozen times per part; for a 1 KB image
that is most of the cost of a request. Uploads here are small and their total is capped while the body
streams (the gateway's byte-counting ``receive`` stops at ``--max-upload-mb``), so the body is collected and
split with ``bytes.find`` — linear time, no regular expression over untrusted bytes with backtracking, a cap
on parts and on header bytes (the two multipart DoS patterns python-multipart and Starlette fixed: quadratic
boundary scans and unbounded headers/parts).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from imgcls.serve.errors import ApiError

MAX_PARTS = 1024
MAX_HEADER_BYTES = 8 * 1024
_FORM_HINT = "send multipart/form-data with the image in the field 'file', e.g. curl -F file=@cat.png URL"
# name="value" or name=token inside a Content-Disposition header; no nested quantifiers (no backtracking blow-up)
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]{1,40})\s*=\s*(?:"((?:[^"\\]|\\.){0,1024})"|([^;\s"]{0,1024}))')


@dataclass
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; ApiError 415 for any other type."""
    if not content_type:
        raise ApiError(415, "unsupported_media_type", "the request has no Content-Type", hint=_FORM_HINT)
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the request body is {kind.strip()[:100]!r}, not multipart/form-data",
            hint=_FORM_HINT,
        )
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if 1 <= len(value) <= 200:
                return value.encode("latin-1", "replace")
    raise ApiError(400, "malformed_multipart", "the multipart Content-Type has no valid boundary", hint=_FORM_HINT)


def _malformed(why: str) -> ApiError:
    return ApiError(400, "malformed_multipart", f"malformed multipart body: {why}", hint=_FORM_HINT)


def _disposition(value: str) -> dict[str, str]:
    kind = value.partition(";")[0]
    if kind.strip().lower() != "form-data":
        raise _malformed(f"a part's Content-Disposition is {kind.strip()[:40]!r}, not form-data")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(value, len(kind)):
        quoted, token = m.group(2), m.group(3)
        params[m.group(1).lower()] = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else token
    return params


def parse_multipart(content_type: str | None, body: bytes, boundary: bytes | None = None) -> list[Part]:
    """Split a complete multipart/form-data body into its parts (``boundary``: already parsed from the type).

    Raises:
        ApiError: 415 not multipart; 400 malformed (no boundary, truncated, bad part headers); 413 too many parts.
    """
    boundary = boundary or boundary_of(content_type)
    delimiter = b"--" + boundary
    # the first delimiter starts the body or follows a preamble line
    if body.startswith(delimiter):
        pos = len(delimiter)
    else:
        first = body.find(b"\r\n" + delimiter)
        if first < 0:
            raise _malformed("the boundary from Content-Type never appears in the body")
        pos = first + 2 + len(delimiter)
    separator = b"\r\n" + delimiter
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the closing delimiter; an epilogue after it is ignored
        # transport padding, then CRLF
        eol = body.find(b"\r\n", pos, pos + 2 + 64)
        if eol < 0 or body[pos:eol].strip(b" \t"):
            raise _malformed("truncated, or a boundary line is not followed by CRLF")
        start = eol + 2
        head_end = body.find(b"\r\n\r\n", start, start + MAX_HEADER_BYTES + 4)
        if head_end < 0:
            if body.startswith(b"\r\n", start):  # a part without headers
                raise _malformed("a part has no Content-Disposition header")
            raise _malformed(f"truncated, or part headers longer than {MAX_HEADER_BYTES} bytes")
        headers: dict[str, str] = {}
        for line in body[start:head_end].split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                raise _malformed("a part header line has no ':'")
            headers[key.strip().decode("latin-1").lower()] = value.strip().decode("utf-8", "replace")
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise _malformed("a part has no Content-Disposition header")
        params = _disposition(disposition)
        data_start = head_end + 4
        data_end = body.find(separator, data_start)
        if data_end < 0:
            raise _malformed("truncated body (no closing boundary)")
        if len(parts) >= MAX_PARTS:
            raise ApiError(413, "too_many_parts", f"the form has more than {MAX_PARTS} parts")
        parts.append(
            Part(params.get("name", ""), params.get("filename"), headers.get("content-type"), body[data_start:data_end])
        )
        pos = data_end + len(separator)


async def read_multipart(content_type: str | None, body: AsyncIterator[bytes]) -> list[Part]:
    """Collect a streamed body (its size is capped upstream) and split it with :func:`parse_multipart`."""
    boundary = boundary_of(content_type)  # refuse a non-multipart body before reading it
    chunks = [chunk async for chunk in body]
    return parse_multipart(content_type, chunks[0] if len(chunks) == 1 else b"".join(chunks), boundary)
