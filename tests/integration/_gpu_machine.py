"""The lent GPU machine's Python, imitated here: a ``sitecustomize`` that makes every package imgcls depends on but
that machine lacks (ENVIRONMENT.md, "GPU checks"; the device tool's KINDS.md) fail to import, in the process that
puts it on its PYTHONPATH and in every child that keeps that path. So an import of the serving stack, W&B or Optuna
creeping into the training path fails here, not in a GPU lease.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# In imgcls' dependencies but not on the GPU machine (pydantic is not there either: scripts/gpu_kit.sh carries it).
NOT_ON_THE_GPU_MACHINE = (
    "fastapi", "starlette", "uvicorn", "httptools", "multipart", "python_multipart", "orjson", "wandb", "evidently",
    "google.cloud", "gcp_storage_emulator", "optuna", "openvino", "onnxruntime.capi.onnxruntime_providers_cuda",
)  # fmt: skip
SITECUSTOMIZE = f"""
import importlib.abc, os, sys

class _NotOnTheGpuMachine(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == m or name.startswith(m + ".") for m in {NOT_ON_THE_GPU_MACHINE!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU machine)", name=name)
        return None

sys.meta_path.insert(0, _NotOnTheGpuMachine())
if os.environ.get("GPU_MACHINE_SEEN"):  # each process that ran under the blocker leaves its pid
    with open(os.environ["GPU_MACHINE_SEEN"], "a") as seen:
        seen.write(f"{{os.getpid()}}\\n")
"""


def gpu_machine_path(folder: Path) -> str:
    """Write the ``sitecustomize`` into ``folder``; returns the PYTHONPATH (it, then this checkout) to run under."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return f"{folder}{os.pathsep}{ROOT}"
