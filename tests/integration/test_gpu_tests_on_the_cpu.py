"""tests/gpu rehearsed on the CPU (``IMGCLS_TEST_DEVICE=cpu``), with only the GPU machine's packages importable.

A GPU is lent to few sessions and for 15 minutes: a GPU test broken since the last one (a renamed field, an import
the machine lacks) would spend that lease on a traceback. This runs the same tests, with the same assertions, on the
CPU: the CUDA kernels are not exercised, everything around them is.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _gpu_machine import ROOT, gpu_machine_path

pytestmark = pytest.mark.slow


def test_the_gpu_tests_pass_on_the_cpu_with_the_gpu_machines_packages(tmp_path: Path) -> None:
    seen = tmp_path / "pids"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-p", "no:cacheprovider", "--timeout=900"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PYTHONPATH": gpu_machine_path(tmp_path / "site"), "IMGCLS_TEST_DEVICE": "cpu",
             "GPU_MACHINE_SEEN": str(seen), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 7 and " skipped" not in proc.stdout, tail  # none skipped on the CPU
    assert len(set(seen.read_text().split())) >= 3  # pytest and the CLI runs' children, all under the blocker
