"""Integration fixtures: a real GCS emulator behind a precondition-enforcing proxy, and store URIs.

``gcp-storage-emulator`` does not enforce ``ifGenerationMatch`` (a create-only write succeeds twice). So the
client talks to it through :class:`PreconditionProxy`, a small HTTP proxy started here that

- records every request (tests assert that create-only and compare-and-swap writes SEND their precondition),
- enforces ``ifGenerationMatch`` on uploads the way GCS does: under one lock it reads the object's current
  generation from the emulator and answers 412 unless it matches, else forwards the write;
- honours ``startOffset`` and ``endOffset`` on listings (the emulator lists every object): only the names in
  ``[startOffset, endOffset)`` are answered, and the request's record holds how many (``items``).

Tests whose conflict handling relies on this layer say so in their name (``..._enforcing_proxy``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from _ports import free_port
from _store_helpers import BUCKET, run_cli


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class PreconditionProxy(ThreadingHTTPServer):
    """Forwards to the emulator; enforces ifGenerationMatch on uploads; records requests."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.write_lock = threading.Lock()
        self.requests: list[dict[str, str]] = []
        self.rejected = 0
        self.mangle_downloads: str | None = None  # "flip" a byte or "truncate" object downloads (tests only)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def uploads(self, name_contains: str = "") -> list[dict[str, str]]:
        """Recorded upload requests (object name, precondition) whose name contains ``name_contains``."""
        return [r for r in list(self.requests) if r.get("upload") and name_contains in r.get("name", "")]


_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _ProxyHandler(BaseHTTPRequestHandler):
    server: PreconditionProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Content-Length"] = str(len(body))
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        conn.close()
        # links the emulator hands out (mediaLink, resumable-session Location) must lead back through the proxy
        upstream, here = f"127.0.0.1:{self.server.upstream_port}", f"127.0.0.1:{self.server.server_address[1]}"
        if not self.path.startswith("/download/"):
            data = data.replace(upstream.encode(), here.encode())
        out_headers = [(k, v.replace(upstream, here)) for k, v in out_headers]
        return resp.status, out_headers, data

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _current_generation(self, bucket: str, name: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        conn.request("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if resp.status != 200:
            return 0
        try:
            return int(json.loads(data).get("generation", 0))
        except (ValueError, AttributeError):
            return 0

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        record = {"method": self.command, "path": parsed.path, **{f"q_{k}": v for k, v in query.items()}}
        if self.headers.get("Range"):
            record["range"] = self.headers["Range"]
        m = re.match(r"^/upload/storage/v1/b/([^/]+)/o$", parsed.path)
        if m and self.command == "POST":
            name = query.get("name") or _name_from_metadata(body)
            record.update(upload="1", name=name, precondition=query.get("ifGenerationMatch", ""))
        self.server.requests.append(record)
        expected = query.get("ifGenerationMatch")
        if m and self.command == "POST" and expected is not None:
            with self.server.write_lock:
                current = self._current_generation(m.group(1), record["name"])
                if current != int(expected):
                    self.server.rejected += 1
                    err = {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified did not hold.",
                        }
                    }
                    self._reply(412, [("Content-Type", "application/json")], json.dumps(err).encode())
                    return
                status, headers, data = self._forward(body)
        else:
            status, headers, data = self._forward(body)
            if self.command == "GET" and re.match(r"^/storage/v1/b/[^/]+/o$", parsed.path) and status == 200:
                listing = json.loads(data)
                if "startOffset" in query or "endOffset" in query:  # GCS lists the names in [start, end): the
                    low, high = query.get("startOffset", ""), query.get("endOffset")  # emulator ignores both
                    listing["items"] = [
                        o for o in listing.get("items", []) if o["name"] >= low and (high is None or o["name"] < high)
                    ]
                    data = json.dumps(listing).encode()
                record["items"] = str(len(listing.get("items", [])))
            if self.server.mangle_downloads and parsed.path.startswith("/download/") and status == 200 and data:
                if self.server.mangle_downloads == "flip":
                    data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1 :]
                else:
                    data = data[: len(data) // 2]
        record["sent"] = str(len(data))
        self._reply(status, headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle


def _name_from_metadata(body: bytes) -> str:
    """The object name from an upload's JSON metadata (a resumable start's body, or a multipart's first part)."""
    m = re.search(rb"\r\n\r\n(\{.*?\})\r\n--", body, re.S)
    for candidate in (m.group(1) if m else None, body):
        try:
            obj = json.loads(candidate) if candidate else None
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("name"):
            return str(obj["name"])
    return ""


@contextlib.contextmanager
def running_emulator() -> Iterator[PreconditionProxy]:
    """gcp-storage-emulator on 127.0.0.1 (in memory) behind a started PreconditionProxy; stopped on exit. The
    fixture below and ``benchmarks/drift_gcs_listing.py`` both run it."""
    port = free_port()
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    proc = subprocess.Popen(
        [str(exe), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = PreconditionProxy(port)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    try:
        wait_port(port)
        thread.start()
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[PreconditionProxy]:
    """gcp-storage-emulator on 127.0.0.1 (in memory) with bucket imgcls-test, behind a PreconditionProxy."""
    with running_emulator() as proxy:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": proxy.url}
        )
        client.create_bucket(BUCKET)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", proxy.url)
            yield proxy


@pytest.fixture(params=["local", "gcs"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a local folder, or a fresh prefix in the emulated bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("gcs_emulator")
    return f"gs://{BUCKET}/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def cli() -> object:
    """``cli(*args, env=None)``: run ``python -m imgcls`` in a subprocess (exit code, stdout, stderr)."""
    return run_cli


@pytest.fixture
def store_bundle(random_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the session's random bundle (safe to modify) with a stand-in ONNX export.

    The promotion gate lets an alias point only at a version `imgcls serve` would load, and it reads only the
    manifest. The store tests move aliases but never serve these versions, so a one-node ONNX file and an
    ``export`` section stand in for a real export (which needs real images; tests that serve use
    ``exported_digits_bundle``).
    """
    import shutil

    from imgcls.bundle import MANIFEST, write_manifest
    from imgcls.doctor import TINY_ONNX

    dest = tmp_path / "bundle"
    shutil.copytree(random_bundle, dest)
    (dest / "model.onnx").write_bytes(TINY_ONNX)
    meta = json.loads((dest / MANIFEST).read_text())
    meta["export"] = {"stand_in": "tests/integration/conftest.py", "models": {"fp32": {"file": "model.onnx"}}}
    write_manifest(dest, meta, [*meta.pop("files"), "model.onnx"])
    return dest


@pytest.fixture
def read_only_copy(tmp_path: Path) -> Iterator[Callable[[Path], Path]]:
    """``read_only_copy(bundle)``: a copy of ``bundle`` in a folder this process cannot write, a 0555 folder, or for
    root (whom permissions do not stop) a tmpfs mounted read-only; skipped where neither can be made."""
    import os
    import shutil

    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False

    def make(src: Path) -> Path:
        nonlocal mounted
        if os.geteuid() != 0:
            bundle = Path(shutil.copytree(src, folder / "bundle"))
            for p in [folder, *folder.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
            return bundle
        mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)]
        if subprocess.run(mount, capture_output=True).returncode:
            pytest.skip("root, and no read-only file system can be mounted here")
        mounted = True
        bundle = Path(shutil.copytree(src, folder / "bundle"))
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)
        return bundle

    try:
        yield make
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)
        elif os.geteuid() != 0:
            for p in [folder, *folder.rglob("*")]:
                p.chmod(0o755)
