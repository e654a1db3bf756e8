"""Where a served request's CPU time goes, by process: the server, its prediction-log writer, and wrk.

Starts `imgcls serve` on a bundle (default: the quickstart-size resnet8 that `benchmarks serve` builds), loads it
with wrk for ``--seconds`` (32 connections, the same 32×32 PNG upload) and reads each process's CPU time from
/proc before and after: CPU µs per request is less disturbed by other jobs on the machine than req/s.

    .venv/bin/python -m benchmarks serve_cpu [-- --bundle DIR --repeats 3 -- EXTRA SERVE FLAGS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.serve import free_port, imgcls_serve, make_bundle, make_png, mean_batch, process, wrk

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def main() -> None:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(prog="python -m benchmarks serve_cpu")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "imgcls-bench-serve")
    ap.add_argument("--bundle", type=Path, help="default: the quickstart-size resnet8 (random weights)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    bundle = a.bundle or make_bundle(a.work / "resnet8-quickstart", "resnet8", channels=1, size=16)
    image = make_png(a.work / "image32.png")
    for _ in range(a.repeats):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with process(imgcls_serve(bundle, port, a.work, *extra), url + "/v1/", a.work / "serve.log") as proc:
            kids = _children(proc.pid)  # the prediction-log writer (or the workers, with --workers)
            server0, kids0, wrk0 = _cpu_s(proc.pid), {k: _cpu_s(k) for k in kids}, os.times()
            result = wrk(url + "/v1/predict", image, 32, a.seconds)
            wrk1 = os.times()
            n = result["requests"]
            server = _cpu_s(proc.pid) - server0
            children = sum(_cpu_s(k) - kids0[k] for k in kids)
            wrk_s = (wrk1.children_user + wrk1.children_system) - (wrk0.children_user + wrk0.children_system)
            batch = mean_batch(port)
        print(
            f"{bundle.name} {' '.join(extra)}: {result['rps']:.0f} req/s; CPU µs per request: server "
            f"{server / n * 1e6:.0f}, its children (log writer) {children / n * 1e6:.0f}, wrk {wrk_s / n * 1e6:.0f}; "
            f"mean batch {batch:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
