"""`imgcls serve` under attack (issue 10): the bars, side by side in one run.

usage: python -m benchmarks serve_hardening [-- --rounds 3 --seconds 10 --connections 32 --quick]

- slow bodies: 256 connections send their head and 5 body bytes of 1,000, then nothing; meanwhile 20 normal
  requests (one at a time) must each be answered 200 within 2 s;
- huge part headers: 4 clients loop 1,000-part bodies with 8 KB part headers for ``--seconds``; meanwhile
  ``/livez`` is asked every 20 ms: its p99 must stay <= 50 ms;
- HTTP-bound: the small CPU model (resnet8, 1×28×28, random weights) with 28×28 PNG uploads must reach >= 50 %
  of the echo endpoint's req/s (wrk via ../shared/bench/wrkload.sh, medians of ``--rounds`` alternating rounds);
- large PNGs: eight concurrent 6000×6000 16-bit PNG uploads; the server's peak RSS must stay <= 600 MB above
  idle, and a 32×32 request sent meanwhile must be answered within 1 s.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.serve import free_port, imgcls_serve, loadavg, make_bundle, peer_round, process, wrk

B = "----imgclsbench"


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr = np.zeros(size[::-1], dtype=np.uint16)
        arr[::7] = 40000
        img = Image.fromarray(arr)
    else:
        img = Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _form(parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for head, data in parts:
        out += f"--{B}\r\n{head}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{B}--\r\n".encode()


def _post(port: int, body: bytes, path: str = "/v1/predict", timeout: float = 60) -> tuple[int, float]:
    """One request on a fresh connection: (status, seconds)."""
    import http.client

    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": f"multipart/form-data; boundary={B}"})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    finally:
        conn.close()


def _get(port: int, path: str) -> tuple[int, float]:
    import http.client

    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    finally:
        conn.close()


def _file_form(data: bytes) -> bytes:
    return _form([('Content-Disposition: form-data; name="file"; filename="x.png"\r\nContent-Type: image/png', data)])


def slow_bodies(bundle: Path, work: Path, small: bytes, n_slow: int = 256, n_normal: int = 20) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(imgcls_serve(bundle, port, work, "--log-predictions", "off"), url + "/v1/", work / "serve.log"):
        head = (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={B}\r\n"
            "Content-Length: 1000\r\n\r\n--abc"
        ).encode()
        socks = []
        for _ in range(n_slow):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(head)
            socks.append(s)
        time.sleep(0.5)
        results = [_post(port, _file_form(small)) for _ in range(n_normal)]
        for s in socks:
            s.close()
    statuses = [st for st, _ in results]
    worst = max(t for _, t in results)
    return {
        "slow_connections": n_slow,
        "normal_requests": n_normal,
        "all_200": statuses == [200] * n_normal,
        "max_latency_s": round(worst, 3),
        "bar_met": statuses == [200] * n_normal and worst <= 2.0,
    }


def huge_part_headers(bundle: Path, work: Path, seconds: int, clients: int = 4) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    body = _form([('Content-Disposition: form-data; name="x"\r\nX-Pad: ' + "a" * 8000, b"x")] * 1000)

    def probe(seconds: float) -> list[float]:
        times: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            times.append(_get(port, "/livez")[1])
            time.sleep(0.02)
        return sorted(times)

    def p99(times: list[float]) -> float:
        return times[min(len(times) - 1, int(0.99 * len(times)))] * 1000

    with process(imgcls_serve(bundle, port, work, "--log-predictions", "off"), url + "/v1/", work / "serve.log"):
        quiet = probe(seconds)  # the same probe without the attack: what the machine's load alone costs
        stop = threading.Event()
        sent: list[int] = []

        def attacker() -> None:
            while not stop.is_set():
                sent.append(_post(port, body)[0])

        threads = [threading.Thread(target=attacker) for _ in range(clients)]
        for t in threads:
            t.start()
        probes = probe(seconds)
        stop.set()
        for t in threads:
            t.join(60)
    return {
        "attack_bodies": len(sent),
        "attack_body_mb": round(len(body) / 1e6, 2),
        "attack_statuses": sorted(set(sent)),
        "livez_probes": len(probes),
        "livez_p50_ms": round(statistics.median(probes) * 1000, 1),
        "livez_p99_ms": round(p99(probes), 1),
        "livez_without_attack_p50_ms": round(statistics.median(quiet) * 1000, 1),
        "livez_without_attack_p99_ms": round(p99(quiet), 1),
        "bar_met": p99(probes) <= 50.0,
    }


def http_bound(bundle: Path, work: Path, image: Path, rounds: int, seconds: int, conns: int) -> dict[str, Any]:
    rows = []
    for _ in range(rounds):  # alternating: each round runs both, so a comparison shares the machine's state
        echo = peer_round("echo_server.py", [], "/predict", image, work, conns, seconds)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with process(imgcls_serve(bundle, port, work), url + "/v1/", work / "serve.log"):
            served = wrk(url + "/v1/predict", image, conns, seconds)
        rows.append({"echo": echo, "serve": served, "ratio": round(served["rps"] / echo["rps"], 3)})
    echo_med = statistics.median(r["echo"]["rps"] for r in rows)
    serve_med = statistics.median(r["serve"]["rps"] for r in rows)
    return {
        "rounds": rows,
        "echo_rps_median": echo_med,
        "serve_rps_median": serve_med,
        "ratio_of_medians": round(serve_med / echo_med, 3),
        "bar_met": serve_med / echo_med >= 0.5,
    }


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def large_pngs(bundle: Path, work: Path, small: bytes, n: int = 8) -> dict[str, Any]:
    big = _file_form(_png((6000, 6000), "I;16"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(imgcls_serve(bundle, port, work, "--log-predictions", "off"), url + "/v1/", work / "serve.log") as p:
        _post(port, _file_form(small))
        idle = _rss_kib(p.pid, "VmRSS")
        results: list[tuple[int, float]] = []
        threads = [threading.Thread(target=lambda: results.append(_post(port, big, timeout=300))) for _ in range(n)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(0.3)  # the large ones are arriving / decoding
        small_status, small_s = _post(port, _file_form(small))
        for t in threads:
            t.join(300)
        total = time.perf_counter() - start
        peak = _rss_kib(p.pid, "VmHWM")
    above = (peak - idle) / 1024
    return {
        "large_uploads": n,
        "large_statuses": sorted({s for s, _ in results}),
        "large_total_s": round(total, 2),
        "large_max_s": round(max(t for _, t in results), 2),
        "idle_rss_mib": round(idle / 1024),
        "peak_rss_above_idle_mib": round(above),
        "small_status": small_status,
        "small_latency_s": round(small_s, 3),
        "bar_met": above <= 600 and small_status == 200 and small_s <= 1.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks serve_hardening")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgcls-bench-hardening")
    ap.add_argument("--only", choices=["slow", "headers", "http", "large"], action="append")
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke run, not figures to quote)")
    a = ap.parse_args(sys.argv[1:])
    if a.quick:
        a.rounds, a.seconds = 1, 3
    work = a.work
    work.mkdir(parents=True, exist_ok=True)
    bundle = make_bundle(work / "resnet8-28", "resnet8", channels=1, size=28)
    small = _png((32, 32))
    image = work / "digit28.png"
    image.write_bytes(_png((28, 28)))
    isa = sorted(
        {f for f in Path("/proc/cpuinfo").read_text().split() if f in ("avx2", "avx512f", "avx512_vnni", "amx_int8")}
    )
    only = set(a.only or ["slow", "headers", "http", "large"])
    out: dict[str, Any] = {"isa": isa, "loadavg_before": loadavg()}
    if "slow" in only:
        out["slow_bodies"] = slow_bodies(bundle, work, small)
        print(json.dumps({"slow_bodies": out["slow_bodies"], "loadavg": loadavg()}), flush=True)
    if "headers" in only:
        out["huge_part_headers"] = huge_part_headers(bundle, work, a.seconds)
        print(json.dumps({"huge_part_headers": out["huge_part_headers"], "loadavg": loadavg()}), flush=True)
    if "large" in only:
        out["large_pngs"] = large_pngs(bundle, work, small)
        print(json.dumps({"large_pngs": out["large_pngs"], "loadavg": loadavg()}), flush=True)
    if "http" in only:
        out["http_bound"] = http_bound(bundle, work, image, a.rounds, a.seconds, a.connections)
        print(json.dumps({"http_bound": out["http_bound"], "loadavg": loadavg()}), flush=True)
    out["loadavg_after"] = loadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
