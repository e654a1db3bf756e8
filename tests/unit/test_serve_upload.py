"""The server's multipart reader: what it accepts, and the clear 4xx it gives for everything else."""

from __future__ import annotations

import asyncio

import pytest

from imgcls.serve.errors import ApiError
from imgcls.serve.upload import MAX_PARTS, parse_multipart, read_multipart

B = "----imgclstest42"
CT = f"multipart/form-data; boundary={B}"


def form(*parts: tuple[str, str | None, bytes], boundary: str = B) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/png\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def status_of(content_type: str | None, body: bytes) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        parse_multipart(content_type, body)
    return info.value.status, info.value.code


def test_parts_come_back_in_order_with_their_bytes() -> None:
    payload = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    parts = parse_multipart(CT, form(("file", "a.png", payload), ("files", "b c.png", b"x"), ("note", None, b"hi")))
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ("file", "a.png", payload),
        ("files", "b c.png", b"x"),
        ("note", None, b"hi"),
    ]
    assert parts[0].content_type == "image/png"


def test_quoted_boundary_leading_blank_lines_and_escaped_filename() -> None:
    body = b"\r\n\r\n" + form(("file", 'we\\"ird.png', b"data"))
    parts = parse_multipart(f'multipart/form-data; charset=utf-8; boundary="{B}"', body)
    assert parts[0].filename == 'we"ird.png'
    assert parts[0].data == b"data"


def test_a_preamble_is_refused_as_starlette_refuses_it() -> None:
    # RFC 2046 allows a preamble, but python-multipart (Starlette) refuses one: a body that two parsers in
    # front of each other would read differently is refused.
    body = b"a preamble line\r\n" + form(("file", "a.png", b"data"))
    with pytest.raises(ApiError, match="does not start with the boundary"):
        parse_multipart(CT, body)


def test_windows_paths_keep_the_file_name_and_parameters_split_like_starlette() -> None:
    body = form(("file", "C:\\Users\\me\\cat.png", b"x")).replace(b"\\\\", b"\\")
    assert parse_multipart(CT, body)[0].filename == "cat.png"
    ct = f'multipart/form-data; boundary="{B};x"'  # a ';' inside quotes belongs to the boundary
    assert parse_multipart(ct, form(("file", "a.png", b"d"), boundary=B + ";x"))[0].data == b"d"


def test_streamed_chunks_are_joined() -> None:
    body = form(("file", "a.png", b"0123456789" * 100))

    async def chunks():
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    parts = asyncio.run(read_multipart(CT, chunks()))
    assert parts[0].data == b"0123456789" * 100


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [
        (None, 415, "unsupported_media_type"),
        ("image/png", 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("multipart/form-data", 400, "malformed_multipart"),
        ("multipart/form-data; boundary=", 400, "malformed_multipart"),
        ("multipart/form-data; boundary=" + "x" * 300, 400, "malformed_multipart"),
    ],
)
def test_content_types_other_than_multipart_with_a_boundary_are_refused(
    content_type: str | None, status: int, code: str
) -> None:
    assert status_of(content_type, form(("file", "a.png", b"x"))) == (status, code)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"no boundary anywhere",
        form(("file", "a.png", b"x"))[:-8],  # truncated before the closing delimiter
        form(("file", "a.png", b"x")).split(b"\r\n\r\n")[0],  # headers never end
        f"--{B}\r\nContent-Type: image/png\r\n\r\nx\r\n--{B}--\r\n".encode(),  # no Content-Disposition
        f"--{B}\r\nContent-Disposition: attachment\r\n\r\nx\r\n--{B}--\r\n".encode(),  # not form-data
        f"--{B}\r\nbroken header line\r\n\r\nx\r\n--{B}--\r\n".encode(),
        f"--{B}garbage\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{B}--\r\n".encode(),
        f"--{B}\r\nContent-Disposition: form-data; name=file\r\nX-Pad: {'a' * 10_000}\r\n\r\nx\r\n--{B}--\r\n".encode(),
    ],
)
def test_malformed_bodies_are_400(body: bytes) -> None:
    assert status_of(CT, body) == (400, "malformed_multipart")


def test_too_many_parts_is_413() -> None:
    body = form(*[("files", f"{i}.png", b"x") for i in range(MAX_PARTS + 1)])
    assert status_of(CT, body) == (413, "too_many_parts")


def test_a_huge_junk_body_of_near_boundaries_is_refused() -> None:
    body = b"\r\n-" * 2_000_000  # 6 MB of near-boundaries: the quadratic-scan / log-flood pattern
    assert status_of(CT, body) == (400, "malformed_multipart")
