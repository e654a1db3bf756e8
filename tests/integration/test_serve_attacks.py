"""`imgcls serve` attacked from outside (issue 10): a real uvicorn process on 127.0.0.1, raw sockets.

Each test is one of the issue's numbered attacks; every one is bounded in connections and seconds, and none
asserts a duration (a deadline shows as the answer the server gives: 408, 431, 503, a closed socket).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_serve_process import Server, concurrently, digit_png, post, renamed_copy, serve  # noqa: F401

TOKEN = "attack-test-token"
B = "----imgclsattack"


@pytest.fixture(scope="module")
def server(exported_digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("attacks")
    args = ("--max-queue", "4", "--read-timeout-s", "2", "--max-connections", "24", "--max-header-bytes", "16384")
    # the token as a Kubernetes secret file gives it: with a trailing newline
    with serve(exported_digits_bundle, tmp, *args, env={"IMGCLS_ADMIN_TOKEN": TOKEN + "\n"}) as s:
        yield s


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server: Server, timeout: float = 15) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=timeout)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response (until its Content-Length, or until the server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection without an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request_head(path: str, content_length: int, content_type: str = f"multipart/form-data; boundary={B}") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    ).encode()


def form(parts: list[tuple[str, bytes]], boundary: str = B) -> bytes:
    """Parts given as (raw header block, data)."""
    out = b""
    for headers, data in parts:
        out += f"--{boundary}\r\n".encode() + headers.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    return str(response.json()["error"]["code"])


# 1. slow bodies ------------------------------------------------------------------------------------------


def test_slow_bodies_hold_no_queue_slot_and_get_408(server: Server, digit_png: bytes) -> None:  # noqa: F811
    slow = []
    for _ in range(12):  # three times --max-queue: each one used to hold a queue slot for as long as it liked
        sock = connect(server)
        sock.sendall(request_head("/v1/predict", 1000) + b"--abc")
        slow.append(sock)
    silent = connect(server)  # sends nothing at all
    time.sleep(0.3)  # all of them are being read
    responses = concurrently(4, lambda i: post(server.url, digit_png))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    for sock in slow:  # the body deadline (--read-timeout-s 2) answers them
        status, headers, body = read_response(sock)
        assert status == 408 and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "read_timeout"
        sock.close()
    assert silent.recv(1) == b""  # an idle connection is closed, not kept forever
    silent.close()


def test_a_request_head_sent_slowly_gets_408(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # and never the end of the head
        status, _, body = read_response(sock)
        assert status == 408 and json.loads(body)["error"]["code"] == "read_timeout"


def test_connections_beyond_the_cap_get_503(server: Server) -> None:
    idle = [connect(server) for _ in range(24)]
    try:
        time.sleep(0.2)
        refused = httpx.get(server.url + "/livez", timeout=10)
        assert refused.status_code == 503 and error_of(refused) == "too_many_connections"
        assert refused.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/livez", timeout=10).status_code != 200:  # the server notices the closes
        assert time.monotonic() < deadline
        time.sleep(0.05)


def connection_answers(server: Server) -> dict[str, float]:
    """``imgcls_requests_total{endpoint="connection"}`` by status, from the server's /metrics."""
    prefix = 'imgcls_requests_total{endpoint="connection",status="'
    out = {}
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            status, _, value = line[len(prefix) :].partition('"} ')
            out[status] = float(value)
    return out


def test_answers_the_connection_layer_gives_are_counted_in_the_metrics(server: Server) -> None:
    # the app never sees these requests: /metrics counted none of them, and a 503 ratio alert missed the cap's
    before = connection_answers(server)
    with connect(server) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        assert read_response(sock)[0] == 431
    for _ in range(2):
        with connect(server) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            assert read_response(sock)[0] == 400
    idle = [connect(server) for _ in range(24)]
    try:
        time.sleep(0.2)
        silent = connect(server)  # beyond the cap too, but it asks nothing: it is answered nothing, counted nothing
        assert httpx.get(server.url + "/livez", timeout=10).status_code == 503
        silent.close()
    finally:
        for sock in idle:
            sock.close()
    refused, deadline = 1, time.monotonic() + 10
    while httpx.get(server.url + "/livez", timeout=10).status_code != 200:  # until the server sees the closes
        refused += 1
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = connection_answers(server)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("400", "431", "503")}
    assert delta == {"400": 2, "431": 1, "503": refused}, after


# 2. huge part headers; 10. a form that reads two ways ------------------------------------------------------

_CD = 'Content-Disposition: form-data; name="file"; filename="a.png"'
# an 8 KB part head, in lines under the 4 KB line limit (imgcls.serve.upload.MAX_HEADER_LINE_BYTES)
_PADDED = 'Content-Disposition: form-data; name="x"\r\nX-Pad: ' + "a" * 4000 + "\r\nX-Pad-2: " + "a" * 3900
_NAME_STAR = "Content-Disposition: form-data; name*=UTF-8''file; name=\"other\""
_MALFORMED = "malformed_multipart"
_BASE64 = "\r\nContent-Transfer-Encoding: base64"


@pytest.mark.parametrize(
    ("content_type", "parts", "status", "code", "says"),
    [
        # 2: a thousand parts with 8 KB headers: refused after max files + a margin, not parsed in full
        (None, [(_PADDED, b"x")] * 1000, 413, "too_many_parts", "parts"),
        (None, [(_CD + "".join(f'; p{i}="v"' for i in range(17)), b"x")], 400, _MALFORMED, "16 parameters"),
        (None, [("\r\n".join([_CD] + [f"X-{i}: y" for i in range(9)]), b"x")], 400, _MALFORMED, "header lines"),
        # 10: every place where a proxy in front could read the form another way
        (f"multipart/form-data; boundary={B}; boundary=other", [(_CD, b"x")], 400, "malformed_multipart", "boundary"),
        (None, [(_CD + '; name="files"', b"x")], 400, "malformed_multipart", "'name' twice"),
        (None, [(_NAME_STAR, b"x")], 400, _MALFORMED, "name*"),
        (None, [(_CD, b"x"), (_CD, b"y")], 400, "duplicate_field", "2 'file' fields"),
        (None, [(_CD + "\r\nContent-Disposition: form-data; name=other", b"x")], 400, "malformed_multipart", "twice"),
        (None, [(_CD + _BASE64, b"iVBO")], 400, "unsupported_transfer_encoding", "base64"),
        (None, [(_CD + "\rX-Injected: 1", b"x")], 400, "malformed_multipart", "bare CR"),
    ],
    ids=["1000-parts", "params", "header-lines", "two-boundaries", "two-names", "name-star", "two-files",
         "two-dispositions", "base64", "bare-cr"],
)  # fmt: skip
def test_forms_that_cost_or_read_two_ways_are_refused(
    server: Server, content_type: str | None, parts: list[tuple[str, bytes]], status: int, code: str, says: str
) -> None:
    body = form(parts)
    headers = {"content-type": content_type or f"multipart/form-data; boundary={B}"}
    r = httpx.post(server.url + "/v1/predict", content=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    assert error_of(r) == code and says in r.json()["error"]["message"]


# 3. no header size limit -----------------------------------------------------------------------------------


def test_an_oversized_request_head_gets_431(server: Server) -> None:
    with connect(server) as sock:
        head = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"
        with contextlib.suppress(OSError):  # the server may close before it has read everything
            sock.sendall(head)
        status, headers, body = read_response(sock)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert httpx.get(server.url + "/livez", headers={"X-Ok": "b" * 8000}).status_code == 200  # normal heads pass


def _chunked(body: bytes, size: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))


def test_a_chunked_bodys_oversized_trailer_section_gets_431_and_a_short_one_passes(
    server: Server,
    digit_png: bytes,  # noqa: F811
) -> None:
    """The head limit stopped at the head: a 120 MB trailer after a chunked body's last chunk was concatenated by
    httptools as a header value is, and held the event loop for seconds (/livez took 4.7 s)."""
    body = form(
        [('Content-Disposition: form-data; name="file"; filename="d.png"\r\nContent-Type: image/png', digit_png)]
    )
    head = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
    head += f"Content-Type: multipart/form-data; boundary={B}\r\n\r\n".encode()
    with connect(server) as sock:
        sock.sendall(head + _chunked(body, 7) + b"0\r\nX-Trailer: ")  # 7-byte chunks: framing is no trailer
        started = time.monotonic()
        with contextlib.suppress(OSError):  # the server closes before it has read everything
            for _ in range(200):  # 20 MB
                sock.sendall(b"a" * 100_000)
        status, headers, answer = read_response(sock)
    assert status == 431 and headers["connection"] == "close", answer
    assert json.loads(answer)["error"]["code"] == "headers_too_large" and b"trailer" in answer
    assert time.monotonic() - started < 10  # refused at the limit, not at the body's read deadline
    with connect(server) as sock:  # a trailer of a few bytes, after chunks of every size: an answer
        sock.sendall(head + _chunked(body, 1000) + b"0\r\nX-Checksum: abc\r\n\r\n")
        status, _, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["class_id"] >= 0, answer


def test_pipelined_small_requests_beyond_the_head_limit_in_one_read_are_all_answered(server: Server) -> None:
    one = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    n = 1000  # 36 KB in one send, over --max-header-bytes 16384; each head is 36 bytes
    with connect(server) as sock:
        sock.sendall(one * (n - 1) + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    # every one was a 431 'the request head is larger than 16,384 bytes', none answered
    assert data.count(b"HTTP/1.1 200 OK") == n and b"HTTP/1.1 431" not in data, data[:300]


# 4. admin reload probes the disk; 7. the token mis-compares; 8. /v1/model leaks -----------------------------


def test_admin_reload_stays_inside_the_allowed_models(server: Server, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}  # the server's token has a trailing newline: one normalisation
    for target in ("/etc/nosuch@latest", "/etc", str(tmp_path), "file:///etc/x@latest", "gs://some-bucket/m@prod"):
        r = httpx.post(server.url + "/v1/admin/reload", json={"model": target}, headers=auth, timeout=30)
        assert r.status_code == 403 and error_of(r) == "model_not_allowed", r.text
        for name in ("passwd", "hostname", "ssl"):  # nothing of what /etc holds
            assert name not in r.text
    r = httpx.post(server.url + "/v1/admin/reload", headers=auth, timeout=60)  # the current model again: allowed
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("target", ["\x00", "/tmp/a\x00b", "bun\ndle"])
def test_admin_reload_to_a_reference_with_a_control_character_is_a_422(server: Server, target: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(server.url + "/v1/admin/reload", json={"model": target}, headers=auth, timeout=30)
    assert r.status_code == 422 and error_of(r) == "reload_failed", r.text  # was a 500 for a NUL (realpath)
    assert "control character" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200  # still serving


def test_admin_reload_with_deeply_nested_json_is_a_400(server: Server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/v1/admin/reload", content=b"[" * 100_000, headers=auth, timeout=30)
    assert r.status_code == 400 and error_of(r) == "invalid_json", r.text  # was a 500 (RecursionError)
    assert "nested too deeply" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200


def test_model_info_without_the_token_tells_nothing_of_the_server(server: Server) -> None:
    public = httpx.get(server.url + "/v1/model").json()
    assert set(public) == {
        "name", "version", "sha256", "classes", "input", "engine", "precision", "provider", "limits", "uncertain_below"
    }  # fmt: skip
    assert "/" not in json.dumps(public)  # no server path anywhere
    full = httpx.get(server.url + "/v1/model", headers={"Authorization": f"Bearer  {TOKEN}"}).json()
    assert full["ref"] and "lineage" in full and full["sha256"] == public["sha256"]


def test_a_blank_admin_token_is_refused_at_start(exported_digits_bundle: Path) -> None:
    cmd = [sys.executable, "-m", "imgcls", "serve", "--model", str(exported_digits_bundle), "--log-predictions", "off"]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "IMGCLS_ADMIN_TOKEN": " \n"}
    )
    assert out.returncode == 2 and "IMGCLS_ADMIN_TOKEN" in out.stderr and "Traceback" not in out.stderr


# 5. deploys drop every replica -------------------------------------------------------------------------------


def test_readyz_stays_ready_while_a_reload_loads(
    exported_digits_bundle: Path,
    tmp_path: Path,
    digit_png: bytes,  # noqa: F811
) -> None:
    """A real uvicorn in this process, so that the new model's load can be held open while /readyz is asked."""
    import uvicorn
    from pydantic import SecretStr

    from imgcls.serve.app import create_app
    from imgcls.serve.model import load_served
    from imgcls.serve.protocol import GuardedProtocol
    from imgcls.serve.settings import ServeSettings

    other = renamed_copy(exported_digits_bundle, tmp_path / "other", "digits-next")
    settings = ServeSettings(
        model=str(exported_digits_bundle),
        log_predictions=None,
        access_log=False,
        admin_token=SecretStr(TOKEN),
        allow_models=(str(tmp_path),),
    )
    loading, release = threading.Event(), threading.Event()

    def slow_loader(ref: str):
        if ref == str(other):
            loading.set()
            release.wait(30)
        return load_served(ref, settings)

    app = create_app(settings, loader=slow_loader)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_config=None, http=GuardedProtocol.for_settings(settings), lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        reload: list[httpx.Response] = []
        auth = {"Authorization": f"Bearer {TOKEN}"}
        call = threading.Thread(
            target=lambda: reload.append(
                httpx.post(url + "/v1/admin/reload", json={"model": str(other)}, headers=auth, timeout=60)
            )
        )
        call.start()
        assert loading.wait(30)
        ready = httpx.get(url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["swapping"] is True  # the old model still serves
        assert post(url, digit_png).json()["model"]["name"] == "digits-resnet8"
        release.set()
        call.join(60)
        assert reload[0].status_code == 200 and reload[0].json()["model"]["name"] == "digits-next"
    finally:
        release.set()
        uv.should_exit = True
        thread.join(30)


# 11. SIGTERM gives slow clients a plain-text 500 ---------------------------------------------------------------


def test_a_body_still_arriving_when_the_drain_ends_gets_a_json_503(
    exported_digits_bundle: Path, tmp_path: Path
) -> None:
    with serve(exported_digits_bundle, tmp_path, "--drain-s", "0.5", "--read-timeout-s", "30") as s:
        sock = socket.create_connection(("127.0.0.1", port_of(s)), timeout=30)
        sock.sendall(request_head("/v1/predict", 1000) + b"--abc")
        time.sleep(0.3)
        s.process.send_signal(signal.SIGTERM)
        status, headers, body = read_response(sock)
        sock.close()
        assert status == 503 and headers["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "draining"
        assert s.process.wait(30) == 0


# 12. one large PNG costs seconds and a gigabyte -----------------------------------------------------------------


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.mark.parametrize("kind", ["png16", "webp"])
def test_large_16_bit_pngs_and_webps_cost_memory_by_the_model_not_the_upload(
    exported_digits_bundle: Path,
    tmp_path: Path,
    digit_png: bytes,  # noqa: F811
    kind: str,
) -> None:
    """A WebP's size was not read from its header: four at once were decoded beside each other, outside the
    large-image lane and its pixel budget (+2.4 GB for eight of 1.5 KB each, measured)."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    if kind == "png16":
        arr = np.zeros((6000, 6000), dtype=np.uint16)
        arr[::7] = 40000
        Image.fromarray(arr).save(buf, format="PNG")  # ~75 KB on the wire, 36 M pixels decoded
    else:
        Image.new("RGB", (16383, 2400)).save(buf, format="WEBP", lossless=True)  # 1.5 KB, 39 M pixels decoded
    big = buf.getvalue()
    # four decode threads, as a machine of eight cores has: the small uploads' lane could decode all four at once
    with serve(exported_digits_bundle, tmp_path, "--log-predictions", "off", "--decode-threads", "4") as s:
        pid = s.process.pid
        assert post(s.url, digit_png).status_code == 200
        idle = _kib(pid, "VmRSS")
        responses = concurrently(4, lambda i: post(s.url, big, timeout=120))
        assert [r.status_code for r in responses] == [200] * 4, [r.text[:200] for r in responses]
        peak = _kib(pid, "VmHWM")
    # four 16-bit PNGs at once used to cost ~1.1 GB each (float64 copies of 36 M pixels), one after the other at
    # best; a WebP costs ~620 MB alone (Pillow holds its RGBA frame three times over), 2.4 GB four at once
    limit = 600 if kind == "png16" else 1200
    assert (peak - idle) / 1024 < limit, f"peak RSS {peak / 1024:.0f} MiB, idle {idle / 1024:.0f} MiB"


# 13. requests the HTTP parser refuses got uvicorn's plain text ---------------------------------------------------

_SMUGGLED = b"0\r\n\r\nGET /v1/admin/reload HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # a second request hidden in a body
_POST = b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        (_POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + _SMUGGLED, "Content-Length"),
        (_POST + b"Content-Length: 4\r\nContent-Length: 60\r\n\r\n" + _SMUGGLED, "Duplicate Content-Length"),
        (_POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + _SMUGGLED, "chunk size"),
        (b"FOO /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "method"),
        (b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: a\x01b\r\n\r\n", "header value"),
        (b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n", "invalid url"),  # was 'User callback error'
    ],
    ids=["cl-and-te", "two-cl", "bad-chunk-size", "unknown-method", "control-char", "connect-authority"],
)
def test_requests_the_http_parser_refuses_get_a_json_400_and_a_close(
    server: Server, request_bytes: bytes, says: str
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        status, headers, body = read_response(sock)
        assert sock.recv(65536) == b""  # closed: nothing of a smuggled second request is answered
    assert status == 400 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_http" and says in error["message"], error
    assert "Content-Length" in error["hint"]
    assert httpx.get(server.url + "/livez", timeout=10).status_code == 200


# 14. HEAD on the GET routes was a 405 (an uptime check by HEAD saw the server down) --------------------------------


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/v1/model", "/", "/metrics"])
def test_head_answers_as_get_without_a_body_on_a_kept_alive_connection(server: Server, path: str) -> None:
    with connect(server) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert int(dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])[b"content-length"]) > 0
        assert rest == b""  # no body: the next bytes on the connection are the next answer
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _, body = read_response(sock)
    assert status == 200 and json.loads(body) == {"status": "alive"}
    assert httpx.head(server.url + "/v1/predict", timeout=10).headers["allow"] == "POST"  # still a 405 there


# 15. a client that half-closes after its request (shutdown(SHUT_WR), `nc -N`) got no answer at all --------------


def test_a_request_followed_by_a_half_close_is_answered_then_closed(server: Server, digit_png: bytes) -> None:  # noqa: F811
    body = form([('Content-Disposition: form-data; name="file"; filename="d.png"', digit_png)])
    predict = request_head("/v1/predict", len(body)) + body
    with connect(server) as sock:
        sock.sendall(predict + predict)  # two pipelined, then the end of what this client sends
        sock.shutdown(socket.SHUT_WR)
        answers = [read_response(sock), read_response(sock)]
        assert sock.recv(65536) == b""  # the last answer closes the connection
    assert [status for status, _, _ in answers] == [200, 200], answers
    # The half-close seen before the second answer was written: that answer says "connection: close". Seen after
    # (this client descheduled between its sendall and its shutdown on a loaded machine), the answer was a plain
    # keep-alive one and the EOF then closed the connection: both are answered-then-closed, the recv above.
    assert answers[1][1].get("connection", "close") == "close", answers[1][1]
    assert json.loads(answers[0][2])["label"] == json.loads(answers[1][2])["label"]
    with connect(server) as sock:  # a body cut short by the half-close can never complete: closed, as before
        sock.sendall(predict[:-10])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""


# 16. 'Upgrade: websocket' handed the connection to uvicorn's websocket protocol: a text/plain 403 ---------------


@pytest.mark.parametrize(("path", "status"), [("/livez", 200), ("/nosuch", 404), ("/v1/admin/reload", 401)])
def test_a_websocket_upgrade_is_answered_as_http(server: Server, path: str, status: int) -> None:
    upgrade = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    )
    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{upgrade}\r\n".encode())
        got, headers, body = read_response(sock)
    assert got == status and headers["content-type"] == "application/json", (got, headers, body)
    assert "upgrade" not in headers and json.loads(body)
    assert "WebSocket library" not in server.stderr()


# 17. a trailing slash was a 307 to the client's Host header (an open redirect) -------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/livez/"), ("GET", "/v1/model/"), ("POST", "/v1/predict/")])
def test_a_trailing_slash_is_a_404_naming_the_route_not_a_redirect_to_the_host_header(
    server: Server, method: str, path: str
) -> None:
    with connect(server) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n".encode())
        status, headers, body = read_response(sock)
    assert status == 404 and "location" not in headers, (status, headers)
    error = json.loads(body)["error"]
    assert error["code"] == "not_found" and path in error["message"]
    assert error["hint"] == f"the route is {path.rstrip('/')} (no trailing slash)"


# 18. a compressed body was read as if it were the form ----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_a_body_with_a_content_encoding_is_a_415_naming_it(
    server: Server,
    digit_png: bytes,  # noqa: F811
    path: str,
) -> None:
    import gzip

    field = "file" if path == "/v1/predict" else "files"
    body = form([(f'Content-Disposition: form-data; name="{field}"; filename="d.png"', digit_png)])
    headers = {"content-type": f"multipart/form-data; boundary={B}", "content-encoding": "gzip"}
    r = httpx.post(server.url + path, content=gzip.compress(body), headers=headers, timeout=30)
    assert r.status_code == 415 and error_of(r) == "unsupported_content_encoding", r.text  # was a 400 'no boundary'
    assert "'gzip'" in r.json()["error"]["message"] and r.headers["accept-encoding"] == "identity"
    identity = httpx.post(server.url + path, content=body, headers={**headers, "content-encoding": "identity"})
    assert identity.status_code == 200, identity.text


# 19. two Content-Type headers: /v1/predict read the last, /v1/predict/batch the first -------------------------


@pytest.mark.parametrize(("path", "field"), [("/v1/predict", "file"), ("/v1/predict/batch", "files")])
def test_a_body_with_two_content_types_is_a_400(
    server: Server,
    digit_png: bytes,  # noqa: F811
    path: str,
    field: str,
) -> None:
    body = form([(f'Content-Disposition: form-data; name="{field}"; filename="d.png"', digit_png)])
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=other\r\n"
        f"Content-Type: multipart/form-data; boundary={B}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head.encode() + body)
        status, _, answer = read_response(sock)
    assert status == 400, answer  # /v1/predict answered 200 (the second), /v1/predict/batch 400 (the first)
    error = json.loads(answer)["error"]
    assert error["code"] == "duplicate_header" and "2 Content-Type headers" in error["message"]


def _raw(server: Server, head: str, body: bytes = b"") -> tuple[int, dict]:
    with connect(server) as sock:
        sock.sendall(head.encode() + body)
        status, _, answer = read_response(sock)
    return status, json.loads(answer) if answer else {}


@pytest.mark.parametrize("order", [("gzip", "identity"), ("identity", "gzip")])
def test_two_content_encoding_lines_are_one_list_and_a_coding_in_either_is_a_415(
    server: Server,
    digit_png: bytes,  # noqa: F811
    order: tuple[str, str],
) -> None:
    """Content-Encoding is a list field, its lines one list (RFC 9110): 'gzip' then 'identity' was read as
    identity (the last line won) and the gzip body as a form, the other order as gzip."""
    body = form([(_CD, digit_png)])
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={B}\r\n"
        f"Content-Encoding: {order[0]}\r\nContent-Encoding: {order[1]}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    status, answer = _raw(server, head, body)
    assert status == 415 and answer["error"]["code"] == "unsupported_content_encoding", answer
    assert "'gzip'" in answer["error"]["message"]


@pytest.mark.parametrize("tokens", [("wrong", TOKEN), (TOKEN, "wrong"), (TOKEN, TOKEN)])
def test_two_authorization_headers_on_an_admin_route_are_a_400(server: Server, tokens: tuple[str, str]) -> None:
    """The last Authorization line was the one checked: wrong-then-right was let in, right-then-wrong refused, so
    a proxy that checks (or adds) the first one saw another token than the server."""
    body = b'{"model": "x"}'
    head = (
        "POST /v1/admin/reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {tokens[0]}\r\nAuthorization: Bearer {tokens[1]}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    status, answer = _raw(server, head, body)
    assert status == 400 and answer["error"]["code"] == "duplicate_header", answer
    assert "2 Authorization headers" in answer["error"]["message"]


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [("/v1/admin/reload", "", 401), ("/v1/predict", "Content-Encoding: gzip\r\n", 415)],
)
def test_a_refusal_before_the_body_of_a_client_awaiting_100_continue_closes_the_connection(
    server: Server, path: str, extra: str, status: int
) -> None:
    """The refusal kept the connection open: a client that waits for '100 Continue' and so never sends its body
    had its next request on the connection read as that body (then a 400 'Invalid method')."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={B}\r\n{extra}"
        "Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(head.encode())
        got, headers, _ = read_response(sock)
        assert (got, headers["connection"]) == (status, "close")
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed: no next request is read as this one's body
    with connect(server) as sock:  # a client that sends its body anyway keeps the connection
        sock.sendall(head.replace("Expect: 100-continue\r\n", "").encode() + b"x" * 5000)
        got, headers, _ = read_response(sock)
        assert got == status and headers.get("connection") != "close"


# 20. clients that never read their answers held their connection slots for good -------------------------------


def test_clients_that_stop_reading_their_answers_lose_their_connections(server: Server) -> None:
    stalled = []
    try:
        for _ in range(24):  # --max-connections: every slot
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port_of(server)))
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 400)  # ~5 MB of pages, never read
            stalled.append(sock)
        refused = httpx.get(server.url + "/livez", timeout=10)
        assert refused.status_code == 503 and error_of(refused) == "too_many_connections"
        # the write deadline (--read-timeout-s 2) aborts them and frees the slots; before, every other client
        # got 503 for as long as they stayed
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/livez", timeout=10).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the stalled readers still hold every connection slot"
            time.sleep(0.2)
    finally:
        for sock in stalled:
            sock.close()
