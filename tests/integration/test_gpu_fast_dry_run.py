"""benchmarks/gpu_fast.py on the CPU (``--device cpu``): the scripts behind issue 14's GPU bars must work before a
GPU machine's short lease is spent on them. The figures are not checked (no verdict on the CPU); what is checked is
what the GPU run will report: the FLOPs of a training step, one JSON line per batch size, the DDP pair.

Every run here sees only the packages the lent GPU machine has (``_gpu_machine.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _gpu_machine import gpu_machine_path

ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")
FAST = ["--steps", "1", "--rounds", "1", "--warmup", "1", "--no-compile"]


@pytest.fixture(scope="module")
def device_like_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return gpu_machine_path(tmp_path_factory.mktemp("gpu_machine_site"))


def _gpu_fast(
    path: str, *args: str, timeout: float = 300, seen: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """Run ``python -m benchmarks gpu_fast -- ARGS`` under the blocker; ``seen`` collects the pids it covered."""
    marker = {"GPU_MACHINE_SEEN": str(seen)} if seen is not None else {}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "gpu_fast", "--", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **marker},
    )  # fmt: skip
    events = [json.loads(line[2:]) for line in proc.stdout.splitlines() if line.startswith("@@")]
    return proc, events


def test_the_gpu_machine_lacks_what_the_blocker_says(device_like_path):
    """The blocker itself works: otherwise every test below would pass for the wrong reason."""
    code = "import fastapi"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": device_like_path})  # fmt: skip
    assert proc.returncode == 1 and "No module named 'fastapi' (not on the GPU machine)" in proc.stderr


def test_mfu_dry_run_counts_a_whole_training_step_per_batch_size(device_like_path):
    proc, events = _gpu_fast(device_like_path, "mfu", "--device", "cpu", "--batch", "2,4", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [e["batch"] for e in events] == [2, 4]
    small, large = events
    # CIFAR-stem ResNet-18 at 32×32: 0.56 GMAC forward = 1.11 GFLOP; backward about twice that (the stem's input
    # needs no gradient), so one image costs ~3.33 GFLOP per step. The count is linear in the batch.
    assert 3.2e9 < small["flops_per_step"] / 2 < 3.4e9, small
    assert large["flops_per_step"] == 2 * small["flops_per_step"]
    assert all(e["device"] == "cpu" and e["mfu"] is None and e["bar_met"] is None for e in events)  # no verdict
    assert all(e["step_ms"] > 0 and e["images_per_sec"] > 0 and e["warmup_s"] >= 0 for e in events)


def test_ddp_dry_run_runs_one_and_two_gloo_processes(device_like_path, tmp_path):
    seen = tmp_path / "pids"
    proc, events = _gpu_fast(device_like_path, "ddp", "--device", "cpu", "--batch", "2", *FAST, seen=seen)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the script, two launchers and their 1 + 2 workers: the children kept the GPU machine's path
    assert len(set(seen.read_text().split())) >= 6
    (event,) = events
    assert event["bench"] == "ddp" and event["per_gpu_batch"] == 2 and event["bar_met"] is None
    assert event["one_gpu"] > 0 and event["two_gpu"] > 0


def test_cuda_asked_on_a_machine_without_it_is_refused_in_one_line(device_like_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot happen here")
    proc, events = _gpu_fast(device_like_path, "mfu", "--batch", "2", *FAST, timeout=120)
    assert proc.returncode == 1 and not events
    assert proc.stderr.strip() == "gpu_fast: CUDA is not available here; --device cpu runs the same code as a dry run"


def test_bad_batch_list_is_a_usage_error(device_like_path):
    proc, events = _gpu_fast(device_like_path, "mfu", "--device", "cpu", "--batch", "512,x", timeout=120)
    assert proc.returncode == 1 and not events
    assert "--batch: expected sizes like 512 or 256,512,1024, got '512,x'" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").is_file(), reason="needs Debian's dataset-fashion-mnist"
)
def test_fmnist_dry_run_trains_through_the_cli_and_reads_the_bundle(device_like_path, tmp_path):
    seen = tmp_path / "pids"
    args = ["--device", "cpu", "--src", str(FASHION), "--epochs", "1", "--max-steps", "3", "--no-compile"]
    proc, events = _gpu_fast(device_like_path, "fmnist", *args, timeout=600, seen=seen)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(set(seen.read_text().split())) >= 2  # `imgcls train` ran with the GPU machine's path too
    (event,) = events
    assert event["device"] == "cpu" and event["bar_met"] is None and 0.0 <= event["test_top1"] <= 1.0
    assert event["wall_s"] > 0
    # what the 30 s went on: the training loop apart from start-up, and its first (compiling) epoch
    assert 0 < event["fit_s"] < event["wall_s"] and event["first_epoch_s"] > 0
    assert "epoch 1/1" in proc.stdout + proc.stderr  # imgcls train's progress reaches the step's log
