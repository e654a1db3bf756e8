"""Differential fuzz: the server's hand-written multipart reader against python-multipart (Starlette's parser).

12,000 bodies from a seeded generator (well-formed forms, then the ways clients, proxies and attackers bend
them: quoting, escapes, Windows paths, case, padding, bare CR/LF, boundary look-alikes in the data, truncation,
random byte edits). For every body:

* when imgcls reads it, python-multipart reads it too, to the same parts (name, filename, content type, bytes);
* when imgcls refuses it, python-multipart refuses it too, or the body has one of the properties imgcls
  refuses on purpose (named in ``_deliberate_refusals``; each is a place where two parsers may disagree, so a
  server behind a proxy must not guess). That list is computed from python-multipart's own reading of the body,
  never from imgcls' code, so a new disagreement fails the test.

The reference reading is what Starlette does with python-multipart's ``MultipartParser`` (``request.form()``):
the header parameters through ``parse_options_header``, a part needs a ``name``, names and file names are UTF-8
else Latin-1, the last of a repeated header wins. One addition: a body whose closing delimiter never comes is
refused (python-multipart's ``finalize`` does not check it, and Starlette hands out the parts it saw).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import pytest
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, _parseparam, parse_options_header

from imgcls.serve.errors import ApiError
from imgcls.serve.upload import (
    MAX_HEADER_BYTES,
    MAX_HEADER_LINE_BYTES,
    MAX_PARAMS,
    TRANSFER_ENCODINGS,
    parse_multipart,
)

N_BODIES = 12_000
MAX_PARTS = 6
Parsed = list[tuple[str, str | None, str | None, bytes]]


# --- the reference: python-multipart as Starlette drives it --------------------------------------------------


@dataclass
class RefPart:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)


@dataclass
class RefReading:
    boundary: bytes
    parts: list[RefPart]
    ended: bool


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def reference_read(content_type: str, body: bytes) -> RefReading | None:
    """python-multipart's reading of the body's structure, or None when it raises."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        return None
    parts: list[RefPart] = []
    field_name, value = bytearray(), bytearray()
    ended = False

    def on_part_begin() -> None:
        parts.append(RefPart())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers.append((bytes(field_name).lower(), bytes(value)))
        field_name.clear()
        value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError):
        return None
    if ended and parts and not parts[-1].headers and not parts[-1].data:
        pass  # never happens: python-multipart opens a part only after a delimiter line
    return RefReading(params[b"boundary"], parts, ended)


def reference_parts(reading: RefReading | None) -> Parsed | None:
    """Starlette's form from python-multipart's reading, or None where Starlette (or an unended body) refuses."""
    if reading is None or not reading.ended:
        return None
    out: Parsed = []
    for part in reading.parts:
        headers = dict(part.headers)  # the last of a repeated header wins, as in Starlette
        if b"content-disposition" not in headers:
            return None
        _, options = parse_options_header(headers[b"content-disposition"].decode("latin-1"))
        if b"name" not in options:
            return None
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type")
        out.append(
            (
                _text(options[b"name"]),
                None if filename is None else _text(filename),
                None if content_type is None else content_type.decode("latin-1").strip(" \t"),
                bytes(part.data),
            )
        )
    return out


def _deliberate_refusals(content_type: str, body: bytes, reading: RefReading | None) -> list[str]:
    """The properties of a body, as python-multipart read it, that imgcls refuses on purpose."""
    why = []
    ct_keys = [seg.partition("=")[0] for seg in _parseparam(content_type)[1:]]
    if ct_keys.count("boundary") > 1:
        why.append("two boundary parameters")
    if any("*" in k for k in ct_keys) or len(ct_keys) > MAX_PARAMS:
        why.append("an extended or excess Content-Type parameter")
    if reading is None:
        return why
    if not 1 <= len(reading.boundary) <= 200:
        why.append("a boundary outside 1..200 bytes")
    delimiter = b"--" + reading.boundary
    if not body.lstrip(b"\r\n").startswith(delimiter):
        why.append("text before the first delimiter (python-multipart skips it after a blank line)")
    if len(reading.parts) > MAX_PARTS:
        why.append("more parts than max_parts")
    for part in reading.parts:
        names = [name for name, _ in part.headers]
        if len(set(names)) < len(names):
            why.append("a repeated part header")
        if any(b"\n" in v or b"\r" in v for _, v in part.headers):
            why.append("a bare CR or LF in a part header")
        # python-multipart drops the spaces after the colon: a few bytes of slack
        if any(len(n) + 1 + len(v) > MAX_HEADER_LINE_BYTES - 8 for n, v in part.headers):
            why.append("a header line over the line limit")
        if sum(len(n) + 1 + len(v) + 2 for n, v in part.headers) > MAX_HEADER_BYTES:
            why.append("a header block over the block limit")
        if b"\r\n" + delimiter in part.data:
            why.append("a delimiter line inside the data (python-multipart reads it as data)")
        headers = dict(part.headers)
        cte = headers.get(b"content-transfer-encoding")
        if cte is not None and cte.decode("latin-1").strip().lower() not in TRANSFER_ENCODINGS:
            why.append("a Content-Transfer-Encoding")
        disposition = headers.get(b"content-disposition")
        if disposition is not None:
            kind, *segments = _parseparam(disposition.decode("latin-1"))
            keys = [seg.partition("=")[0] for seg in segments]
            if kind.lower() != "form-data":
                why.append("a Content-Disposition other than form-data")
            if len(set(keys)) < len(keys) or len(keys) > MAX_PARAMS or any("*" in k for k in keys):
                why.append("a repeated, extended or excess Content-Disposition parameter")
    return why


def ours(content_type: str, body: bytes) -> Parsed | ApiError:
    try:
        parts = parse_multipart(content_type, body, max_parts=MAX_PARTS)
    except ApiError as exc:
        return exc
    return [(p.name, p.filename, p.content_type, p.data) for p in parts]


# --- the generator -------------------------------------------------------------------------------------------

BOUNDARIES = ["----imgclsfuzz7", "X", "a'b(c)+_,-./:=?", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "bo undary"]
NAMES = ["file", "files", "note", "", "na;me", 'qu"ote', "ünï", "a b", "FILE"]
FILENAMES = ["a.png", "b c.jpg", 'we"ird.png', "semi;colon.png", "C:\\Users\\x\\cat.png", "\\\\srv\\share\\d.png",
             "back\\slash.png", "ünï.png", "", "..\\..\\etc.png"]  # fmt: skip
DATA_ATOMS = [b"x", b"\r", b"\n", b"\r\n", b"-", b"--", b"\x00", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b" ", b"\t"]


def _quote(rng: random.Random, value: str) -> str:
    style = rng.random()
    if style < 0.55:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'  # curl's escaping
    if style < 0.75:
        return '"' + value.replace('"', "%22") + '"'  # browsers' escaping
    if style < 0.9:
        return value  # a bare token (or not)
    return '"' + value + '"'  # no escaping at all


def _disposition(rng: random.Random) -> str:
    kind = rng.choice(["form-data"] * 12 + ["Form-Data", "attachment", "form-data "])
    params = []
    if rng.random() < 0.93:
        params.append(("name", rng.choice(NAMES)))
    if rng.random() < 0.6:
        params.append(("filename", rng.choice(FILENAMES)))
    if rng.random() < 0.08:
        params.append(rng.choice([("name", "other"), ("filename*", "UTF-8''x.png"), ("name*", "UTF-8''n"),
                                  ("Name", "upper"), ("size", "3"), ("filename", "second.png")]))  # fmt: skip
    rng.shuffle(params)
    out = kind
    for key, value in params:
        sep = rng.choice([";", "; ", ";\t", " ; ", ";"])
        eq = rng.choice(["=", "=", "=", " = ", "= "])
        out += f"{sep}{key}{eq}{_quote(rng, value)}"
    if rng.random() < 0.05:
        out += rng.choice([";", "; ", ";;", "; junk", ' "x"'])
    return out


def _headers(rng: random.Random) -> list[bytes]:
    lines: list[bytes] = []
    if rng.random() < 0.97:
        name = rng.choice([b"Content-Disposition"] * 10 + [b"content-disposition", b"CONTENT-DISPOSITION"])
        lines.append(name + rng.choice([b": ", b":", b":  ", b":\t"]) + _disposition(rng).encode("utf-8"))
    if rng.random() < 0.6:
        ct = rng.choice([b"image/png", b"image/jpeg", b"application/octet-stream", b"image/png ", b"text/plain; a=b"])
        lines.append(rng.choice([b"Content-Type: ", b"content-type:"]) + ct)
    if rng.random() < 0.1:
        lines.append(rng.choice([
            b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: base64", b"X-Extra: 1",
            b"Content-Type: image/gif", b"Content-Disposition: form-data; name=dup", b"Bad Name: x",
            b"NoColon", b": empty-name", b"X-Long: " + b"a" * (MAX_HEADER_LINE_BYTES + rng.randint(-10, 200)),
            b"X-Latin: \xe9t\xe9", b"X-Lf: a\nb",
        ]))  # fmt: skip
    if rng.random() < 0.03:
        lines.extend(b"X-Many-%d: v" % i for i in range(rng.randint(6, 9)))
    rng.shuffle(lines)
    return lines


def _data(rng: random.Random, boundary: bytes) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(rng.randint(0, 64))
    atoms = DATA_ATOMS * 4 + [b"--" + boundary, b"\r\n--" + boundary[:-1], b"\n--" + boundary + b"\r\n"]
    if rng.random() < 0.1:  # the boundary inside the data: a refusal on both sides or imgcls' deliberate one
        atoms.append(b"\r\n--" + boundary + rng.choice([b"x", b"--", b" \r\n", b"\r", b"-x", b"\r\n"]))
    return b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 12)))


def _body(rng: random.Random, boundary: bytes) -> bytes:
    delimiter = b"--" + boundary
    out = rng.choice([b""] * 20 + [b"\r\n", b"\n\n", b"preamble\r\n", b"\r\nx", b"\r\n\r\n"])
    for i in range(rng.choice([0, 1, 1, 1, 2, 2, 3, MAX_PARTS + 1][: 8 if rng.random() < 0.05 else 7])):
        if i:
            out += b"\r\n"
        out += delimiter
        if i and rng.random() < 0.05:
            out += rng.choice([b" ", b"\t", b"  \t"])  # transport padding
        out += rng.choice([b"\r\n"] * 60 + [b"\n", b"\r", b" \r\n"])
        out += b"\r\n".join(_headers(rng)) + rng.choice([b"\r\n\r\n"] * 60 + [b"\n\n", b"\r\n", b"\r\n\r\n\r\n"])
        out += _data(rng, boundary)
    out += b"\r\n" + delimiter + rng.choice([b"--\r\n"] * 10 + [b"--", b"--epilogue\r\nmore", b"-", b"\r\n", b""])
    return out


def _mutate(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.random()
        if op < 0.3:
            del b[i : i + rng.randint(1, 4)]
        elif op < 0.6:
            b[i:i] = rng.choice([b"\r", b"\n", b"\r\n", b"-", b";", b'"', b"\\", b" ", b":", b"\x00"])
        elif op < 0.8:
            b[i] = rng.randrange(256)
        else:
            b = b[: rng.randrange(len(b) + 1)]  # truncated
    return bytes(b)


def _content_type(rng: random.Random, boundary: str) -> str:
    quoted = '"' + boundary + '"'
    return rng.choice(
        [f"multipart/form-data; boundary={boundary}"] * 40
        + [f"multipart/form-data; boundary={quoted}", f"Multipart/Form-Data;boundary={quoted}",
           f"multipart/form-data; charset=utf-8; boundary={quoted}", f"multipart/form-data; boundary={quoted}; x=1",
           f"multipart/form-data; boundary=other; boundary={quoted}", f"multipart/form-data; BOUNDARY={quoted}",
           f'multipart/form-data; boundary="{boundary};tail"', f"multipart/form-data; boundary*={quoted}"]
    )  # fmt: skip


def generated_cases(seed: int, n: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        boundary = rng.choice(BOUNDARIES)
        content_type = _content_type(rng, boundary)
        sent = boundary + ";tail" if ";tail" in content_type else boundary
        body = _body(rng, sent.encode("latin-1"))
        if rng.random() < 0.25:
            body = _mutate(rng, body)
        cases.append((content_type, body))
    return cases


# --- the test ------------------------------------------------------------------------------------------------


def test_the_reader_and_python_multipart_agree_on_generated_bodies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="python_multipart")  # it logs a warning per refused body
    accepted = deliberate = both_refused = 0
    disagreements: list[str] = []
    for content_type, body in generated_cases(seed=20261201, n=N_BODIES):
        mine = ours(content_type, body)
        reading = reference_read(content_type, body)
        theirs = reference_parts(reading)
        if not isinstance(mine, ApiError):
            accepted += 1
            if mine == theirs:
                continue
            found = f"imgcls read {mine!r}, python-multipart {theirs!r}"
        elif theirs is None:
            both_refused += 1
            continue
        elif _deliberate_refusals(content_type, body, reading):
            deliberate += 1
            continue
        else:
            found = f"imgcls refused ({mine.message}), python-multipart read {theirs!r}"
        disagreements.append(f"{found}\n  Content-Type {content_type!r}\n  body {body!r}")
        if len(disagreements) == 5:
            break
    assert not disagreements, "\n".join(disagreements)
    # the generator must reach all three outcomes in earnest, or the comparison proves little
    counts = {"accepted": accepted, "both refused": both_refused, "deliberately refused": deliberate}
    assert accepted > N_BODIES // 5 and both_refused > N_BODIES // 10 and deliberate > N_BODIES // 50, counts
