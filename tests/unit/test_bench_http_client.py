"""The `bench --url` client's reading of answers, against small real HTTP servers on 127.0.0.1.

Before: the probe read the first segment of the answer with one ``read()`` and parsed it itself, so a chunked or
long error body came back as ``1f4\\r\\n{"error"...`` cut at a segment, and the load loop counted every answer
that carried ``Connection: close`` as ``error:ConnectionResetError`` although the server had answered 200.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from imgcls.bench.http import make_target, probe, run_python_load
from imgcls.errors import UsageError


@contextmanager
def server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/predict"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _drain(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))


class ChunkedError(_Handler):
    """A 422 whose JSON body (~300 KB, many TCP segments) comes chunked, the way a streaming proxy sends it."""

    def do_POST(self) -> None:
        self._drain()
        body = json.dumps({"error": {"code": "bad", "message": "the image is upside down", "pad": "x" * 300_000}})
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        data = body.encode()
        for i in range(0, len(data), 4096):
            piece = data[i : i + 4096]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


class OkThenClose(_Handler):
    """Answers 200 and closes the connection after every request (a server with keep-alive off)."""

    def do_POST(self) -> None:
        self._drain()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"{}")
        self.close_connection = True


class HangUp(_Handler):
    """Reads the request and closes without a byte of answer."""

    def do_POST(self) -> None:
        self._drain()
        self.close_connection = True


class Http10(_Handler):
    """Python's http.server as it comes: HTTP/1.0, no Connection header, closes after every answer."""

    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        self._drain()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class EarlyHints(_Handler):
    """A ``103 Early Hints`` before every answer (RFC 8297), in the same write."""

    def do_POST(self) -> None:
        self._drain()
        hints = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        self.wfile.write(hints + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


class CloseDelimitedError(_Handler):
    """An HTTP/1.0 422 with no Content-Length: its body ends when the server closes."""

    protocol_version = "HTTP/1.0"

    def do_POST(self) -> None:
        self._drain()
        self.send_response(422)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error": {"code": "bad", "message": "the image is upside down"}}).encode())


class DeepError(_Handler):
    """A 422 whose JSON body is nested deeper than json's parser goes."""

    def do_POST(self) -> None:
        self._drain()
        body = b"[" * 100_000 + b"]" * 100_000
        self.send_response(422)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class EndlessHead(_Handler):
    """A 200 whose head goes on for 1 MB of header lines (a server, or a proxy, gone wrong) before its body."""

    def do_POST(self) -> None:
        self._drain()
        self.send_response(200)
        for i in range(10_000):
            self.send_header(f"X-Pad-{i}", "x" * 90)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.mark.parametrize("handler", [Http10, EarlyHints], ids=["http-1.0", "early-hints"])
def test_http_1_0_answers_and_interim_1xx_answers_count_as_answered(handler: type[BaseHTTPRequestHandler]) -> None:
    # before: every other request to an HTTP/1.0 server was error:ConnectionError (sent on the connection it had
    # closed), and every 103 was taken for an answer (half the requests '103', the 200 read as the next one's)
    with server(handler) as url:
        target = make_target(url, b"\x89PNG")
        probe(target)  # 200: no error
        row = run_python_load(target, kind="closed", value=2, duration_s=1.0, warmup_s=0.2, processes=1)
    assert row["errors"] == 0, row["errors_by_status"]
    assert row["requests"] > 0 and row["req_per_s"] > 0


def test_the_probe_reads_an_error_body_that_ends_with_the_connection() -> None:
    with server(CloseDelimitedError) as url, pytest.raises(UsageError) as err:
        probe(make_target(url, b"\x89PNG"))
    said = str(err.value).splitlines()[0]
    assert said == f"--url {url}: the server answered 422 to one request: the image is upside down"


def test_the_probe_reads_a_chunked_error_body_whole_and_shows_its_message() -> None:
    with server(ChunkedError) as url, pytest.raises(UsageError) as err:
        probe(make_target(url, b"\x89PNG"))
    assert (
        str(err.value).splitlines()[0]
        == f"--url {url}: the server answered 422 to one request: the image is upside down"
    )


def test_an_error_body_nested_too_deeply_is_shown_as_text() -> None:
    # json's RecursionError escaped the probe: "unexpected RecursionError" instead of what the server answered
    with server(DeepError) as url, pytest.raises(UsageError, match=r"the server answered 422 to one request: \[\[\["):
        probe(make_target(url, b"\x89PNG"))


def test_a_server_that_hangs_up_without_answering_is_named_as_such() -> None:
    with server(HangUp) as url, pytest.raises(UsageError, match="closed the connection without answering"):
        probe(make_target(url, b"\x89PNG"))


def test_an_answer_whose_head_never_ends_is_refused_not_read_for_ever() -> None:
    # each header line was read and parsed for as long as the server sent them: 1 MB of them counted as a 200
    with server(EndlessHead) as url:
        target = make_target(url, b"\x89PNG")
        with pytest.raises(UsageError, match=r"an answer whose head is over 65,536 bytes to one request"):
            probe(target)
        row = run_python_load(target, kind="closed", value=1, duration_s=0.5, warmup_s=0.0, processes=1)
    assert row["requests"] > 0 and row["errors"] == row["requests"], row


def test_answers_that_close_the_connection_count_as_answered_not_as_errors() -> None:
    with server(OkThenClose) as url:
        target = make_target(url, b"\x89PNG")
        probe(target)  # 200: no error
        row = run_python_load(target, kind="closed", value=2, duration_s=1.0, warmup_s=0.2, processes=1)
    assert row["errors"] == 0, row["errors_by_status"]
    assert row["requests"] > 0 and row["req_per_s"] > 0
