"""`imgcls --help` cold wall time (bar: <= 0.5 s, without importing torch).

Command: python -m benchmarks cli_help   (uses hyperfine when installed, else a Python timing loop)
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    cmd = [sys.executable, "-m", "imgcls", "--help"]
    if shutil.which("hyperfine"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run(
                ["hyperfine", "--warmup", "2", "--runs", "20", "--export-json", f.name, "-N", " ".join(cmd)],
                check=True,
                capture_output=True,
            )
            with open(f.name) as fh:
                res = json.load(fh)["results"][0]
        median = res["median"]
        print(f"imgcls --help: median {median:.3f} s over {len(res['times'])} runs (hyperfine)")
    else:
        times = []
        for _ in range(20):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        median = statistics.median(times)
        print(f"imgcls --help: median {median:.3f} s over 20 runs")
    print(f"bar <= 0.5 s: {'PASS' if median <= 0.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
