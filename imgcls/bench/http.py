"""Load against a running server: a closed-loop concurrency sweep and an open-loop Poisson rate.

Closed loop: ``concurrency`` connections each send the next request as soon as the previous answer arrives.
Open loop: requests are scheduled at Poisson arrival times for ``rate`` req/s and each one's latency counts from
its INTENDED send time, so a server (or client) that falls behind shows as queueing instead of hiding it
(coordinated omission). The client is several processes (one Python process tops out near a few hundred
req/s per core), each an asyncio loop over raw HTTP/1.1 keep-alive connections; it drives ``wrk`` instead for the
closed loop when ``wrk`` is installed and asked for. The report says which client ran, and warns when the client
was the bottleneck (its processes kept their cores busy, or open-loop sends fell behind schedule).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from imgcls.bench.timing import percentiles_ms
from imgcls.errors import UsageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
BOTTLENECK_CPU = 0.85  # client processes busier than this share of their wall time: the client limits
REQUEST_TIMEOUT_S = 30.0  # one request's answer (wrk's --timeout too); then it counts as an error
MAX_ANSWER_BYTES = 64 << 20  # a body larger than this is not a prediction: the client stops reading it
MAX_HEAD_BYTES = 64 << 10  # the status lines and headers of one answer (1xx answers included)
MAX_INTERIM_ANSWERS = 16  # 1xx answers (103 Early Hints) read past before one request's answer
MAX_CONNECTIONS = 10_000  # a closed-loop level; each is a socket (and a file descriptor) of the client
MAX_RATE = 100_000.0  # req/s of an open-loop level: far above what a client on one machine can schedule
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # the upload every request sends (the server's own limit is lower)


class AnswerTooLarge(ValueError):
    """The server's answer has a body over :data:`MAX_ANSWER_BYTES`, or a head over :data:`MAX_HEAD_BYTES`."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    body: bytes
    content_type: str
    url: str


def make_target(url: str, image: bytes, *, field: str = "file", filename: str = "image.png") -> Target:
    """A multipart POST of ``image`` to ``url`` (http only).

    Raises:
        UsageError: not an http:// URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UsageError(f"--url {url!r} must be an http://HOST:PORT/PATH URL")
    boundary = f"imgclsbench{uuid.uuid4().hex[:12]}"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.hostname, parts.port or 80, path, body, f"multipart/form-data; boundary={boundary}", url)


def _request_bytes(t: Target) -> bytes:
    head = (
        f"POST {t.path} HTTP/1.1\r\nHost: {t.host}:{t.port}\r\nContent-Type: {t.content_type}\r\n"
        f"Content-Length: {len(t.body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + t.body


async def _open(t: Target) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(t.host, t.port)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> tuple[int, bytes, bool]:
    """Send one request and read its whole response (Content-Length, chunked, or until the server closes).

    Interim 1xx answers (``103 Early Hints``, ``100 Continue``) are read past: each one was taken for the answer,
    and the real answer then for the next request's. An HTTP/1.0 answer keeps the connection only with
    ``Connection: keep-alive``: a plain HTTP/1.0 server (Python's ``http.server``) closes after each answer, and
    the next request on that connection counted as an error.

    Returns:
        The HTTP status, the body, and whether the server keeps the connection open.
    """
    writer.write(payload)
    await writer.drain()
    head = 0  # bytes of status lines and headers: a server sending header lines for ever is cut off there
    for _ in range(MAX_INTERIM_ANSWERS + 1):
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        head += len(status_line)
        version, status = status_line.split(b" ", 2)[:2]
        code = int(status)
        length: int | None = None
        chunked = close = keep = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            head += len(line)
            if head > MAX_HEAD_BYTES:
                raise AnswerTooLarge(f"an answer whose head is over {MAX_HEAD_BYTES:,} bytes")
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                length = int(value.strip())
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection":
                close = close or b"close" in value.lower()
                keep = keep or b"keep-alive" in value.lower()
        if not 100 <= code < 200 or code == 101:
            break
    else:
        raise ValueError(f"more than {MAX_INTERIM_ANSWERS} interim 1xx answers to one request")
    keep_alive = not close and (version.upper() != b"HTTP/1.0" or keep)
    if length is not None and length > MAX_ANSWER_BYTES:
        raise AnswerTooLarge(f"an answer of {length:,} bytes")
    body = b""
    if chunked:
        chunks = []
        length = 0
        while True:
            size = int((await reader.readline()).strip().split(b";")[0], 16)
            length += size
            if length > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"an answer of over {MAX_ANSWER_BYTES:,} bytes")
            chunks.append((await reader.readexactly(size + 2))[:size])
            if size == 0:
                break
        body = b"".join(chunks)
    elif length:
        body = await reader.readexactly(length)
    elif length is None and code not in (204, 304):  # no length: the body ends when the server closes
        chunks = []
        length = 0
        while chunk := await reader.read(65536):
            length += len(chunk)
            if length > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"an answer of over {MAX_ANSWER_BYTES:,} bytes")
            chunks.append(chunk)
        body, keep_alive = b"".join(chunks), False
    return code, body, keep_alive


def _worker(
    kind: str, t: Target, share: float, duration_s: float, warmup_s: float, seed: int, start_at: float, queue: Any
) -> None:
    """One client process: ``share`` connections (closed) or req/s (open); puts its results on ``queue``."""
    result = asyncio.run(_run_worker(kind, t, share, duration_s, warmup_s, seed, start_at))
    queue.put(result)


async def _run_worker(
    kind: str, t: Target, share: float, duration_s: float, warmup_s: float, seed: int, start_at: float
) -> dict[str, Any]:
    payload = _request_bytes(t)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    behind: list[float] = []
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    measure_from = t0 + warmup_s
    end = measure_from + duration_s

    async def one(conn: list[Any], intended: float) -> None:
        try:
            if conn[0] is None:
                conn[0] = await asyncio.wait_for(_open(t), REQUEST_TIMEOUT_S)
            status, _, keep_alive = await asyncio.wait_for(
                _exchange(conn[0][0], conn[0][1], payload), REQUEST_TIMEOUT_S
            )
            key = str(status)
            if not keep_alive:  # answered, and the server closes: the next request opens a new connection
                conn[0][1].close()
                conn[0] = None
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            key = f"error:{type(exc).__name__}"
            if conn[0] is not None:
                conn[0][1].close()
            conn[0] = None
        done = time.perf_counter()
        if intended >= measure_from and done <= end + 30:
            latencies.append(done - intended)
            statuses[key] += 1

    if kind == "closed":

        async def loop(conn: list[Any]) -> None:
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                await one(conn, now)

        conns = [[None] for _ in range(int(share))]
        await asyncio.gather(*(loop(c) for c in conns))
    else:
        rng = random.Random(seed)
        idle: list[list[Any]] = []
        tasks: set[asyncio.Task[None]] = set()
        next_at = t0 + rng.expovariate(share)

        async def fire(intended: float) -> None:
            conn = idle.pop() if idle else [None]
            try:
                await one(conn, intended)
            finally:
                idle.append(conn)

        while next_at < end:
            now = time.perf_counter()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            late = time.perf_counter() - next_at
            if next_at >= measure_from:
                behind.append(late)
            task = asyncio.create_task(fire(next_at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += rng.expovariate(share)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
    wall = time.perf_counter() - t0
    return {
        "latencies": latencies,
        "statuses": dict(statuses),
        "cpu_fraction": (time.process_time() - cpu0) / wall if wall else 0.0,
        "send_lag_p99_ms": float(np.percentile(behind, 99) * 1000) if behind else 0.0,
    }


def _split(total: float, parts: int) -> list[float]:
    base = total / parts
    return [base] * parts


def run_python_load(
    t: Target, *, kind: str, value: float, duration_s: float, warmup_s: float, processes: int
) -> dict[str, Any]:
    """One closed-loop level (``value`` connections) or open-loop rate (``value`` req/s) with the Python client."""
    processes = max(1, min(processes, int(value) if kind == "closed" else processes))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start_at = time.time() + 0.5 + 0.2 * processes  # spawned interpreters start together
    if kind == "closed":
        shares = [float(len(chunk)) for chunk in np.array_split(np.arange(int(value)), processes)]
    else:
        shares = _split(value, processes)
    procs = [
        ctx.Process(target=_worker, args=(kind, t, s, duration_s, warmup_s, 1000 + i, start_at, queue))
        for i, s in enumerate(shares)
    ]
    for p in procs:
        p.start()
    results = _collect(queue, procs, deadline=time.time() + duration_s + warmup_s + REQUEST_TIMEOUT_S + 60)
    for p in procs:
        p.join(timeout=10)
    latencies = np.concatenate([np.asarray(r["latencies"]) for r in results]) if results else np.zeros(0)
    statuses: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
    ok = sum(n for k, n in statuses.items() if k.startswith("2"))
    errors = {k: n for k, n in statuses.items() if not k.startswith("2")}
    cpu = max((r["cpu_fraction"] for r in results), default=0.0)
    lag = max((r["send_lag_p99_ms"] for r in results), default=0.0)
    row: dict[str, Any] = {
        "client": f"python ({processes} process{'es' if processes > 1 else ''})",
        "requests": int(sum(statuses.values())),
        "req_per_s": ok / duration_s,
        **percentiles_ms(latencies),
        "errors": int(sum(errors.values())),
        "errors_by_status": errors,
        "client_cpu_fraction": round(cpu, 3),
    }
    warnings = []
    if cpu > BOTTLENECK_CPU:
        warnings.append(f"the client was the bottleneck: a client process was busy {cpu:.0%} of the time")
    if kind == "open":
        row["send_lag_p99_ms"] = lag
        achieved = row["requests"] / duration_s
        if lag > 5.0 or achieved < 0.9 * value:
            warnings.append(
                f"the client could not keep the schedule (p99 send lag {lag:.1f} ms, {achieved:.0f} of "
                f"{value:g} req/s sent)"
            )
    row["warnings"] = warnings
    return row


def _collect(queue: Any, procs: list[Any], *, deadline: float) -> list[dict[str, Any]]:
    """Every client process's result; ImgclsError as soon as one died without one, or at ``deadline``."""
    import queue as queue_mod

    from imgcls.errors import ImgclsError

    results: list[dict[str, Any]] = []
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=0.5))
            continue
        except queue_mod.Empty:
            pass
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead or time.time() > deadline:
            for p in procs:
                p.terminate()
            what = f"died (exit {dead[0]})" if dead else "did not finish in time"
            raise ImgclsError(f"a load client process {what}; no figures were taken", exit_code=1)
    return results


def check_load(concurrency: list[int] | None, rates: list[float] | None) -> None:
    """Refuse load levels that cannot be run: no connection, a rate that is not a positive finite number, more
    connections than this process may open.

    Raises:
        UsageError: naming the level and the range.
    """
    import math
    import resource

    for c in concurrency or []:
        if not 1 <= c <= MAX_CONNECTIONS:
            raise UsageError(f"--concurrency {c}: give connection counts from 1 to {MAX_CONNECTIONS:,}")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = max(concurrency or [0])
    if soft != resource.RLIM_INFINITY and most + 64 > soft:
        raise UsageError(
            f"--concurrency {most}: this process may open {soft} files, and each connection is one",
            hint=f"raise the limit (ulimit -n {most + 1024}) or use fewer connections",
        )
    for r in rates or []:
        if not (math.isfinite(r) and 0 < r <= MAX_RATE):
            raise UsageError(f"--rate {r:g}: give request rates above 0 and at most {MAX_RATE:,.0f} req/s")


def probe(t: Target) -> None:
    """Send one request and refuse to load a server that does not answer it with 2xx: a wrong URL, a server
    that is not running or an image it refuses would otherwise give a whole table of errors and exit 0.

    Raises:
        UsageError: naming what the server answered, or why it could not be reached.
    """

    async def once() -> tuple[int, bytes]:
        reader, writer = await asyncio.wait_for(_open(t), REQUEST_TIMEOUT_S)
        try:
            payload = _request_bytes(t).replace(b"Connection: keep-alive", b"Connection: close")
            status, body, _ = await asyncio.wait_for(_exchange(reader, writer, payload), REQUEST_TIMEOUT_S)
        finally:
            writer.close()
        return status, body

    try:
        status, body = asyncio.run(once())
    except TimeoutError:
        raise UsageError(
            f"--url {t.url}: no answer to one request within {REQUEST_TIMEOUT_S:g} s", hint="is the server stuck?"
        ) from None
    except OSError as exc:
        if exc.errno is None:  # _exchange's ConnectionError: connected, then closed with no answer
            raise UsageError(f"--url {t.url}: the server closed the connection without answering") from None
        raise UsageError(
            f"--url {t.url}: cannot connect to {t.host}:{t.port} ({os.strerror(exc.errno) if exc.errno else exc})",
            hint="start the server (imgcls serve --model BUNDLE) or check the host and port",
        ) from None
    except asyncio.IncompleteReadError:
        raise UsageError(f"--url {t.url}: the server closed the connection in the middle of its answer") from None
    except AnswerTooLarge as exc:
        raise UsageError(f"--url {t.url}: {exc} to one request; a predict URL answers a small JSON") from None
    except (ValueError, IndexError):
        raise UsageError(f"--url {t.url}: the answer to one request is not HTTP") from None
    if 200 <= status < 300:
        return
    try:  # imgcls serve's errors are {"error": {"code", "message"}}
        said = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError, RecursionError):
        said = body[:200].decode("utf-8", "replace").strip()
    raise UsageError(
        f"--url {t.url}: the server answered {status} to one request{': ' + said if said else ''}",
        hint="give the server's predict URL (http://HOST:PORT/v1/predict) and an --image it accepts",
    )


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(t: Target, *, connections: int, duration_s: float, threads: int = 1) -> dict[str, Any]:
    """One closed-loop level driven by ``wrk`` (C; not the bottleneck here): req/s, percentiles, errors."""
    with tempfile.NamedTemporaryFile(suffix=".body", delete=False) as body_file:
        body_file.write(t.body)
    lua = f"""
local f = assert(io.open({json.dumps(body_file.name)}, "rb")); local data = f:read("*all"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = {json.dumps(t.content_type)}
wrk.body = data
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('IMGCLS {{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
    .. '"max_us": %d, "mean_us": %.1f, "non2xx": %d, "socket_errors": %d}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "30s",
                "-s",
                script.name,
                t.url,
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 60,
        )
    finally:
        os.unlink(script.name)
        os.unlink(body_file.name)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("IMGCLS ")), None)
    if out.returncode != 0 or line is None:
        raise UsageError(f"wrk failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()[:300]}")
    d = json.loads(line[len("IMGCLS ") :])
    seconds = d["duration_us"] / 1e6
    errors = d["non2xx"] + d["socket_errors"]
    return {
        "client": f"wrk ({threads} thread{'s' if threads > 1 else ''})",
        "requests": d["requests"],
        "req_per_s": (d["requests"] - d["non2xx"]) / seconds,
        "p50_ms": d["p50_us"] / 1000,
        "p95_ms": d["p95_us"] / 1000,
        "p99_ms": d["p99_us"] / 1000,
        "max_ms": d["max_us"] / 1000,
        "mean_ms": d["mean_us"] / 1000,
        "errors": errors,
        "errors_by_status": {k: v for k, v in {"non-2xx": d["non2xx"], "socket": d["socket_errors"]}.items() if v},
        "warnings": [],
    }


def run_http_bench(
    url: str,
    image: Path,
    *,
    concurrency: list[int] | None = None,
    rates: list[float] | None = None,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
    processes: int | None = None,
    client: str = "auto",
    field: str = "file",
    loopback_only: bool = False,
    on_row: Any = None,
) -> dict[str, Any]:
    """The HTTP report: one row per concurrency level (closed loop) and per rate (open loop).

    Args:
        client: ``python`` (several processes), ``wrk`` (closed loop only), or ``auto`` (wrk for the closed loop
            when it is installed, else python; the open loop is always the Python client, which schedules it).

    Raises:
        UsageError: a bad URL or image, no load given, wrk asked for but missing.
    """
    from imgcls.bench.machine import machine_record
    from imgcls.data.decode import read_image_file
    from imgcls.errors import ImageError

    try:
        data = read_image_file(image, max_bytes=MAX_IMAGE_BYTES)  # a regular file (a FIFO blocked), bounded
    except ImageError as exc:
        raise UsageError(f"--image {exc.message}", hint=exc.hint) from None
    t = make_target(url, data, field=field)
    if loopback_only and t.host not in LOOPBACK:
        raise UsageError(f"--url {url}: only loopback targets here")
    if client not in ("auto", "python", "wrk"):
        raise UsageError(f"--client {client!r} must be auto, python or wrk")
    if client == "wrk" and not wrk_available():
        raise UsageError("--client wrk: wrk is not installed", hint="apt-get install -y wrk, or --client python")
    if not concurrency and not rates:
        concurrency = [1, 8, 32]
    check_load(concurrency, rates)
    probe(t)
    procs = processes or max(1, min(4, os.cpu_count() or 1))
    use_wrk = client == "wrk" or (client == "auto" and wrk_available())
    emit = on_row or (lambda row: None)
    rows = []
    for c in concurrency or []:
        if use_wrk:
            row = run_wrk(t, connections=c, duration_s=duration_s)
        else:
            row = run_python_load(t, kind="closed", value=c, duration_s=duration_s, warmup_s=warmup_s, processes=procs)
        row = {"mode": "closed", "concurrency": c, "rate": None, **row}
        rows.append(row)
        emit(row)
    for r in rates or []:
        row = run_python_load(t, kind="open", value=r, duration_s=duration_s, warmup_s=warmup_s, processes=procs)
        row = {"mode": "open", "concurrency": None, "rate": r, **row}
        rows.append(row)
        emit(row)
    return {
        "schema": "imgcls.bench.http/1",
        "kind": "http",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": url,
        "image": {"path": str(image), "bytes": len(data)},
        "duration_s": duration_s,
        "method": "closed loop: each connection sends its next request when the answer arrives; open loop: Poisson "
        "arrivals, latency from the intended send time; percentiles unclipped",
        "machine": machine_record(),
        "results": rows,
    }
