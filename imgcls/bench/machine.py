"""The machine record every benchmark carries: CPU model, ISA flags, GPU, engine versions, load."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import Any

from imgcls.runtime.machine import cpu_count, cpu_model, isa_flags


def gpu_name() -> str | None:
    """The NVIDIA GPU's name (``nvidia-smi``), or None."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) if names and out.returncode == 0 else None


def engine_versions() -> dict[str, str | None]:
    """Versions of the engines importable here (None: not installed)."""
    import importlib.metadata as md

    versions: dict[str, str | None] = {}
    for engine, dists in {"onnxruntime": ("onnxruntime-gpu", "onnxruntime"), "openvino": ("openvino",)}.items():
        versions[engine] = None
        for dist in dists:
            try:
                versions[engine] = md.version(dist)
                break
            except md.PackageNotFoundError:
                continue
    return versions


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_record() -> dict[str, Any]:
    """``{cpu, isa, cores, gpu, engines, python, platform, load_average}``."""
    return {
        "cpu": cpu_model(),
        "isa": isa_flags(),
        "cores": cpu_count(),
        "gpu": gpu_name(),
        "engines": engine_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }
