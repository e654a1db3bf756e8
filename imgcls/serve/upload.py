"""Uploads: a lean multipart/form-data reader that keeps the parts in memory.

Starlette's ``request.form()`` spools every file into a ``SpooledTemporaryFile`` and builds ``UploadFile``
objects, and python-multipart's byte-level state machine calls back a dozen times per part; for a 1 KB image
that is most of the cost of a request. Uploads here are small and their total is capped while the body
streams (the gateway reads it whole under ``--max-upload-mb`` and ``--read-timeout-s``), so the body is split
with ``bytes.find`` — linear time, no regular expression over untrusted bytes with backtracking.

Bounds (each one a 400 or 413 that names it), so that one request cannot cost more than a few ms of parsing
and so that a proxy in front cannot read the same form another way:

* at most :data:`MAX_PARAMS` parameters per header, at most :data:`MAX_PART_HEADER_LINES` header lines of at
  most :data:`MAX_HEADER_BYTES` per part, at most ``max_parts`` parts (the caller passes its max files plus a
  small margin);
* a duplicate ``boundary`` parameter, a duplicate parameter in ``Content-Disposition`` (two ``name=``), an
  extended ``name*=`` / ``filename*=`` parameter, or a header repeated inside a part is refused: each is a
  place where two parsers may disagree on which value wins;
* a ``Content-Transfer-Encoding`` other than 7bit, 8bit or binary (RFC 7578 deprecates it) is refused, rather
  than passing base64 or quoted-printable bytes on as if they were the file; so is a bare CR or LF inside a
  part's header block;
* :func:`parse_form` parses bodies above :data:`OFF_LOOP_BYTES` in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from imgcls.serve.errors import ApiError

MAX_PARTS = 1024
"""Parts in one body when the caller gives no ``max_parts``."""
MAX_HEADER_BYTES = 8 * 1024
"""Header block of one part."""
MAX_PART_HEADER_LINES = 8
"""Header lines of one part (Content-Disposition, Content-Type and a few more)."""
MAX_PARAMS = 16
"""Parameters of one header (``form-data; name=...; filename=...``; ``multipart/form-data; boundary=...``)."""
OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed in a worker thread (a 1,000-part body took 0.7 s on the loop)."""
TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
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


def _malformed(why: str) -> ApiError:
    return ApiError(400, "malformed_multipart", f"malformed multipart body: {why}", hint=_FORM_HINT)


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
    pieces = params.split(";")
    if len(pieces) > MAX_PARAMS:
        raise _malformed(f"the Content-Type has more than {MAX_PARAMS} parameters")
    found: list[str] = []
    for param in pieces:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            found.append(value.strip().strip('"'))
    if len(found) > 1:
        raise _malformed("the Content-Type has more than one boundary parameter")
    if found and 1 <= len(found[0]) <= 200:
        return found[0].encode("latin-1", "replace")
    raise ApiError(400, "malformed_multipart", "the multipart Content-Type has no valid boundary", hint=_FORM_HINT)


def _disposition(value: str) -> dict[str, str]:
    kind = value.partition(";")[0]
    if kind.strip().lower() != "form-data":
        raise _malformed(f"a part's Content-Disposition is {kind.strip()[:40]!r}, not form-data")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(value, len(kind)):
        key = m.group(1).lower()
        if key in params:
            raise _malformed(f"a part's Content-Disposition has the parameter {key!r} twice")
        if key.endswith("*"):
            raise _malformed(f"a part's Content-Disposition has the extended parameter {key!r} (RFC 7578: not used)")
        if len(params) >= MAX_PARAMS:
            raise _malformed(f"a part's Content-Disposition has more than {MAX_PARAMS} parameters")
        quoted, token = m.group(2), m.group(3)
        params[key] = quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else token
    return params


def _part_headers(block: bytes) -> dict[str, str]:
    if b"\r" in block.replace(b"\r\n", b"") or b"\n" in block.replace(b"\r\n", b""):
        raise _malformed("a part header holds a bare CR or LF")
    lines = block.split(b"\r\n")
    if len(lines) > MAX_PART_HEADER_LINES:
        raise _malformed(f"a part has more than {MAX_PART_HEADER_LINES} header lines")
    headers: dict[str, str] = {}
    for line in lines:
        key, colon, value = line.partition(b":")
        if not colon:
            raise _malformed("a part header line has no ':'")
        name = key.strip().decode("latin-1").lower()
        if name in headers:
            raise _malformed(f"a part has the header {name!r} twice")
        headers[name] = value.strip().decode("utf-8", "replace")
    encoding = headers.get("content-transfer-encoding")
    if encoding is not None and encoding.strip().lower() not in TRANSFER_ENCODINGS:
        raise ApiError(
            400,
            "unsupported_transfer_encoding",
            f"a part has Content-Transfer-Encoding {encoding.strip()[:40]!r}; only 7bit, 8bit and binary are read",
            hint="send the file's raw bytes (RFC 7578 deprecates Content-Transfer-Encoding)",
        )
    return headers


def parse_multipart(
    content_type: str | None, body: bytes, boundary: bytes | None = None, *, max_parts: int = MAX_PARTS
) -> list[Part]:
    """Split a complete multipart/form-data body into its parts (``boundary``: already parsed from the type).

    Raises:
        ApiError: 415 not multipart; 400 malformed (no boundary, truncated, bad part headers, an ambiguous
            form); 413 more than ``max_parts`` parts.
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
        if len(parts) >= max_parts:
            raise ApiError(413, "too_many_parts", f"the form has more than {max_parts} parts")
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
        headers = _part_headers(body[start:head_end])
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise _malformed("a part has no Content-Disposition header")
        params = _disposition(disposition)
        data_start = head_end + 4
        data_end = body.find(separator, data_start)
        if data_end < 0:
            raise _malformed("truncated body (no closing boundary)")
        parts.append(
            Part(params.get("name", ""), params.get("filename"), headers.get("content-type"), body[data_start:data_end])
        )
        pos = data_end + len(separator)


async def parse_form(content_type: str | None, body: bytes, *, max_parts: int) -> list[Part]:
    """:func:`parse_multipart` of a whole body; above :data:`OFF_LOOP_BYTES` in a worker thread."""
    boundary = boundary_of(content_type)
    if len(body) <= OFF_LOOP_BYTES:
        return parse_multipart(content_type, body, boundary, max_parts=max_parts)
    return await asyncio.to_thread(parse_multipart, content_type, body, boundary, max_parts=max_parts)


async def read_multipart(
    content_type: str | None, body: AsyncIterator[bytes], *, max_parts: int = MAX_PARTS
) -> list[Part]:
    """Collect a streamed body (its size is capped upstream) and split it with :func:`parse_form`."""
    boundary_of(content_type)  # refuse a non-multipart body before reading it
    chunks = [chunk async for chunk in body]
    return await parse_form(content_type, chunks[0] if len(chunks) == 1 else b"".join(chunks), max_parts=max_parts)
