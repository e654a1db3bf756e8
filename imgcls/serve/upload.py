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

Everything else reads as python-multipart (Starlette's parser) reads it: header parameters are split by the
same rule (:func:`_split_params`), a preamble before the first delimiter is refused, header names are tokens,
a part needs a ``name``, and a form both parsers accept comes out as the same parts.
``tests/unit/test_serve_upload_fuzz.py`` compares the two on 12,000 generated bodies: where they differ, this
reader refuses, and only for one of the reasons above.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from imgcls.serve.errors import ApiError

MAX_PARTS = 1024
"""Parts in one body when the caller gives no ``max_parts``."""
MAX_HEADER_BYTES = 8 * 1024
"""Header block of one part."""
MAX_PART_HEADER_LINES = 8
"""Header lines of one part (Content-Disposition, Content-Type and a few more)."""
MAX_HEADER_LINE_BYTES = 4096
"""One header line of a part (python-multipart, Starlette's parser, refuses lines above 4,224)."""
MAX_PARAMS = 16
"""Parameters of one header (``form-data; name=...; filename=...``; ``multipart/form-data; boundary=...``)."""
OFF_LOOP_BYTES = 256 * 1024
"""Bodies larger than this are parsed in a worker thread (a 1,000-part body took 0.7 s on the loop)."""
TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
_FORM_HINT = "send multipart/form-data with the image in the field 'file', e.g. curl -F file=@cat.png URL"
# RFC 9110 token characters: what a header name may be made of
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass
class Part:
    """One part of a multipart body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def _malformed(why: str) -> ApiError:
    return ApiError(400, "malformed_multipart", f"malformed multipart body: {why}", hint=_FORM_HINT)


def _split_params(value: str) -> list[str]:
    """``value`` split at each ``;`` outside a double-quoted string, keys lower-cased, blanks trimmed.

    The splitting rule of python-multipart's ``parse_options_header`` (its copy of the standard library's
    ``email.message._parseparam``), kept identical so that this reader and Starlette's parser read every header
    the same way: ``tests/unit/test_serve_upload_fuzz.py`` compares the two on generated bodies.
    """
    if '"' not in value or ("\\" not in value and all(p.count('"') % 2 == 0 for p in value.split(";"))):
        return [_trim(piece) for piece in value.split(";")]  # no ';' inside quotes: a plain split is the same
    s = ";" + value
    out: list[str] = []
    start = 0
    while s.find(";", start) == start:
        start += 1
        end = s.find(";", start)
        ind, diff = start, 0
        while end > 0:  # a ';' inside quotes does not split: extend until the quotes balance
            diff += s.count('"', ind, end) - s.count('\\"', ind, end)
            if diff % 2 == 0:
                break
            end, ind = ind, s.find(";", end + 1)
        if end < 0:
            end = len(s)
        out.append(_trim(s[start:end]))
        start = end
    return out


def _trim(segment: str) -> str:
    """``key=value`` with the key lower-cased and the blanks around the ``=`` and the ends removed."""
    key, eq, value = segment.partition("=")
    if not eq:
        return segment.strip(" \t")
    return (key.rstrip(" \t").lower() + "=" + value.lstrip(" \t")).strip(" \t")


def _params(value: str, header: str) -> tuple[str, dict[str, str]]:
    """``(type, {parameter: value})`` of a header; refuses the parameters two parsers may read differently."""
    kind, *segments = _split_params(value)
    if len(segments) > MAX_PARAMS:
        raise _malformed(f"the {header} has more than {MAX_PARAMS} parameters")
    params: dict[str, str] = {}
    for segment in segments:
        key, _, val = segment.partition("=")
        if "*" in key:
            raise _malformed(f"the {header} has the extended parameter {key[:40]!r} (RFC 7578: not used)")
        if key in params:
            raise _malformed(f"the {header} has the parameter {key[:40]!r} twice")
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = val[1:-1].replace("\\\\", "\\").replace('\\"', '"')
        params[key] = val
    return kind.lower(), params


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; ApiError 415 for any other type."""
    if not content_type:
        raise ApiError(415, "unsupported_media_type", "the request has no Content-Type", hint=_FORM_HINT)
    kind = content_type.partition(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the request body is {kind[:100]!r}, not multipart/form-data",
            hint=_FORM_HINT,
        )
    boundary = _params(content_type, "Content-Type")[1].get("boundary", "")
    if 1 <= len(boundary) <= 200:
        return boundary.encode("latin-1", "replace")
    raise ApiError(400, "malformed_multipart", "the multipart Content-Type has no valid boundary", hint=_FORM_HINT)


def _text(value: str) -> str:
    """A parameter's bytes as text: UTF-8 when they are, else Latin-1 (what Starlette does)."""
    raw = value.encode("latin-1")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return value


def _disposition(value: str) -> tuple[str, str | None]:
    """``(name, filename)`` of a part's Content-Disposition (``form-data`` with a ``name``, RFC 7578)."""
    kind, params = _params(value, "Content-Disposition of a part")
    if kind != "form-data":
        raise _malformed(f"a part's Content-Disposition is {kind[:40]!r}, not form-data")
    if "name" not in params:
        raise _malformed("a part's Content-Disposition has no name parameter")
    filename = params.get("filename")
    if filename is not None and (filename[1:3] == ":\\" or filename[:2] == "\\\\"):
        filename = filename.split("\\")[-1]  # a full Windows path (old browsers): the file's name, as Starlette
    return _text(params["name"]), None if filename is None else _text(filename)


def _part_headers(block: bytes) -> dict[str, str]:
    if b"\r" in block.replace(b"\r\n", b"") or b"\n" in block.replace(b"\r\n", b""):
        raise _malformed("a part header holds a bare CR or LF")
    lines = block.split(b"\r\n")
    if len(lines) > MAX_PART_HEADER_LINES:
        raise _malformed(f"a part has more than {MAX_PART_HEADER_LINES} header lines")
    headers: dict[str, str] = {}
    for line in lines:
        if len(line) > MAX_HEADER_LINE_BYTES:
            raise _malformed(f"a part header line is longer than {MAX_HEADER_LINE_BYTES} bytes")
        key, colon, value = line.partition(b":")
        if not colon:
            raise _malformed("a part header line has no ':'")
        if not key or key.translate(None, _TOKEN):  # a space before the colon too: parsers split it differently
            raise _malformed(f"a part header name {key[:40]!r} is not a token")
        name = key.decode("latin-1").lower()
        if name in headers:
            raise _malformed(f"a part has the header {name!r} twice")
        headers[name] = value.strip(b" \t").decode("latin-1")  # bytes as sent; parameters are decoded by _text
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
    # The first delimiter starts the body, after blank lines at most: python-multipart (Starlette's parser)
    # refuses a preamble, and a body two parsers would split differently is refused here too.
    pos = len(body) - len(body.lstrip(b"\r\n"))
    if not body.startswith(delimiter, pos):
        if body.find(delimiter) < 0:
            raise _malformed("the boundary from Content-Type never appears in the body")
        raise _malformed("the body does not start with the boundary (a preamble is not read)")
    pos += len(delimiter)
    if not body.startswith((b"--", b"\r\n"), pos):
        raise _malformed("truncated, or the first boundary line is not followed by CRLF")
    separator = b"\r\n" + delimiter
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # the closing delimiter; an epilogue after it is ignored
        if len(parts) >= max_parts:
            raise ApiError(413, "too_many_parts", f"the form has more than {max_parts} parts")
        # transport padding (spaces and tabs), then CRLF
        eol = body.find(b"\r\n", pos)
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
        name, filename = _disposition(disposition)
        data_start = head_end + 4
        data_end = body.find(separator, data_start)
        if data_end < 0:
            raise _malformed("truncated body (no closing boundary)")
        parts.append(Part(name, filename, headers.get("content-type"), body[data_start:data_end]))
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
