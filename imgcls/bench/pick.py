"""``bench --pick``: the fastest gated engine into the bundle's serving profile; ``--slo-p99-ms``: the batching.

The SLO sweep starts ``imgcls serve`` on 127.0.0.1 (a temporary port, prediction log off) for each max batch ×
max delay, loads it with the closed-loop Python client, and keeps the setting with the most req/s whose p99
meets the SLO (and that answered every request). When no setting meets it, nothing is written: the caller
(``imgcls bench --pick --slo-p99-ms``) says so and exits 1 with the bundle unchanged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from imgcls.errors import GateError, ImgclsError, UsageError

SLO_BATCHES = (1, 8, 32)
SLO_DELAYS_MS = (0.0, 2.0, 5.0)


def profile_from(report: dict[str, Any]) -> Any:
    """The :class:`~imgcls.runtime.profile.ServingProfile` for a report's pick.

    Raises:
        GateError: nothing passed the accuracy gate, so nothing may be picked.
    """
    from imgcls.runtime.profile import ServingProfile

    pick = report.get("pick")
    if not pick:
        failed = [f"{r['engine']} {r['precision']}: {r['error']}" for r in report["results"] if r.get("error")]
        raise GateError(
            "nothing to pick: no engine × precision passed the accuracy gate and was timed",
            hint="; ".join(failed)[:400] or "run bench without --engine/--precision filters",
        )
    machine = report["machine"]
    return ServingProfile(
        engine=pick["engine"],
        precision=pick["precision"],
        threads=pick["threads"],
        machine={"cpu": machine.get("cpu"), "isa": machine.get("isa"), "cores": machine.get("cores")},
        measured={k: pick[k] for k in ("batch", "img_per_s", "p99_ms", "top1_agreement", "max_abs_prob_diff")},
        created=report["created"],
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_line(log: Any) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Any, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ImgclsError(
                f"the temporary server exited with status {proc.returncode} before it was ready: {_last_line(log)}"
            )
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise ImgclsError(f"the temporary server on port {port} was not ready after {timeout:.0f} s")


def slo_sweep(
    bundle_path: Path,
    profile: Any,
    image: Path,
    *,
    slo_p99_ms: float,
    concurrency: int = 32,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    batches: tuple[int, ...] = SLO_BATCHES,
    delays_ms: tuple[float, ...] = SLO_DELAYS_MS,
    on_row: Any = None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(best {max_batch, max_delay_ms, req_per_s, p99_ms} meeting the SLO or None, every row)``.

    Raises:
        UsageError: a non-positive SLO, an empty or out-of-range grid.
        ImgclsError: a temporary server that did not start.
    """
    from imgcls.bench.http import run_http_bench

    check_slo_grid(slo_p99_ms, batches, delays_ms)
    rows = []
    # a batch of one never waits: it is tried once, with no delay
    settings = sorted({(b, 0.0 if b == 1 else float(d)) for b in batches for d in delays_ms})
    for max_batch, delay in settings:
        port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "imgcls",
            "serve",
            "--model",
            str(bundle_path),
            "--port",
            str(port),
            "--engine",
            profile.engine,
            "--precision",
            profile.precision,
            "--max-batch",
            str(max_batch),
            "--max-delay-ms",
            str(delay),
            "--log-predictions",
            "off",
            "--no-access-log",
        ]
        if profile.threads:
            cmd += ["--intra-threads", str(profile.threads)]
        # the server's stderr goes to a file: a pipe nobody reads would block a chatty server
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())
            try:
                _wait_ready(port, proc, log)
                report = run_http_bench(
                    f"http://127.0.0.1:{port}/v1/predict",
                    image,
                    concurrency=[concurrency],
                    duration_s=duration_s,
                    warmup_s=warmup_s,
                    client="python",
                )
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        r = report["results"][0]
        row = {
            "max_batch": max_batch,
            "max_delay_ms": delay,
            "req_per_s": r["req_per_s"],
            "p99_ms": r["p99_ms"],
            "errors": r["errors"],
            "meets_slo": r["p99_ms"] <= slo_p99_ms and not r["errors"],
        }
        rows.append(row)
        if on_row:
            on_row(row)
    ok = [r for r in rows if r["meets_slo"]]
    return (max(ok, key=lambda r: r["req_per_s"]) if ok else None), rows


def check_slo_grid(slo_p99_ms: float, batches: tuple[int, ...], delays_ms: tuple[float, ...]) -> None:
    """Refuse an SLO sweep that cannot run, before anything is measured.

    Raises:
        UsageError: a non-positive SLO, an empty grid, a max batch outside 1–1024 or a negative delay.
    """
    if not slo_p99_ms > 0:
        raise UsageError(f"--slo-p99-ms must be positive, got {slo_p99_ms:g}")
    if not batches or min(batches) < 1 or max(batches) > 1024:
        raise UsageError(f"--slo-max-batch: sizes from 1 to 1024, got {list(batches)}")
    if not delays_ms or min(delays_ms) < 0:
        raise UsageError(f"--slo-max-delay-ms: delays of 0 ms or more, got {list(delays_ms)}")


def write_pick(bundle_path: Path, profile: Any) -> None:
    """Store the profile in the bundle (atomic edit; the manifest keeps verifying)."""
    from imgcls.runtime.profile import write_serving_profile

    write_serving_profile(bundle_path, profile)
