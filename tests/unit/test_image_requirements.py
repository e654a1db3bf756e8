"""scripts/image_requirements.py: the requirement list each image installs, with its onnxruntime wheel chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirements(*args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "image_requirements.py"), *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def onnxruntime_lines(reqs: list[str]) -> list[str]:
    return [r for r in reqs if r.startswith("onnxruntime")]


def test_cpu_image_gets_the_cpu_wheel() -> None:
    reqs = requirements("--extras", "serve,gcs", "--onnxruntime", "cpu")
    assert [r.split(">=")[0] for r in onnxruntime_lines(reqs)] == ["onnxruntime"]
    assert "fastapi>=0.115" in reqs and not any(r.startswith("torch") for r in reqs)


def test_gpu_serving_image_gets_the_cuda_and_cudnn_wheels_of_onnxruntime_gpu() -> None:
    """The [cuda,cudnn] extras exist since onnxruntime-gpu 1.21: the floor is raised so pip cannot pick an older one."""
    reqs = requirements("--extras", "serve,gcs", "--onnxruntime", "gpu-wheels")
    assert onnxruntime_lines(reqs) == ["onnxruntime-gpu[cuda,cudnn]>=1.21"]
    assert not any(r.startswith("torch") for r in reqs)


def test_train_image_keeps_plain_onnxruntime_gpu_beside_torch() -> None:
    reqs = requirements("--extras", "train,gcs,monitor", "--onnxruntime", "gpu")
    assert [r.split(">=")[0] for r in onnxruntime_lines(reqs)] == ["onnxruntime-gpu"]
    assert any(r.startswith("torch>=") for r in reqs)
