"""Print the pip requirements of imgcls + extras for a container image, with the onnxruntime wheel chosen.

The base install depends on ``onnxruntime-gpu`` on Linux x86_64 (one wheel serves CPU and GPU machines), but a
CPU image should not carry its 255 MB of CUDA kernels: ``--onnxruntime cpu`` swaps it for ``onnxruntime``. The
image then installs these requirements and the imgcls wheel with ``--no-deps``; pyproject.toml stays the one
list of dependencies. ``--onnxruntime gpu-wheels`` asks for ``onnxruntime-gpu[cuda,cudnn]``: NVIDIA's CUDA runtime,
cuBLAS, cuFFT, cuRAND, NVRTC and cuDNN wheels of the CUDA major that onnxruntime-gpu wheel was built for (extras
since 1.21, so the floor is raised to 1.21), which lets a GPU image build on a plain Python base.

    python3 scripts/image_requirements.py --extras serve,gcs --onnxruntime cpu > requirements.txt
    python3 scripts/image_requirements.py --extras serve,gcs --onnxruntime gpu-wheels > requirements-gpu.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib  # Python 3.11+: the images' Python

ORT = re.compile(r"^onnxruntime(-gpu)?\b")
WHEELS_EXTRAS_SINCE = (1, 21)  # onnxruntime-gpu's [cuda,cudnn] extras


def _ort_requirement(version: str | None, onnxruntime: str) -> str:
    """The onnxruntime requirement for this image: ``version`` is pyproject's specifier (``>=1.20``) or None."""
    if onnxruntime == "cpu":
        return "onnxruntime" + (version or "")
    if onnxruntime == "gpu":
        return "onnxruntime-gpu" + (version or "")
    floor = ">={}.{}".format(*WHEELS_EXTRAS_SINCE)
    if version:
        numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:2])
        if not version.startswith(">=") or numbers >= WHEELS_EXTRAS_SINCE:
            floor = version
    return "onnxruntime-gpu[cuda,cudnn]" + floor


def requirements(pyproject: Path, extras: list[str], onnxruntime: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    seen: set[str] = set()

    def add(req: str) -> None:
        self_ref = re.match(rf"^{project['name']}\[([^\]]+)\]$", req.strip())
        if self_ref:
            for extra in self_ref.group(1).split(","):
                add_extra(extra.strip())
        elif ORT.match(req):
            version = re.search(r"(>=|==|~=)[^;,\s]+", req)
            wanted = _ort_requirement(version.group(0) if version else None, onnxruntime)
            if wanted not in out:
                out.append(wanted)
        elif req not in out:
            out.append(req)

    def add_extra(extra: str) -> None:
        optional_extra = extra.endswith("?")  # "openvino?": only where pyproject defines it
        extra = extra.rstrip("?")
        if extra in seen:
            return
        if extra not in optional:
            if optional_extra:
                return
            sys.exit(f"unknown extra {extra!r}; pyproject.toml defines {', '.join(optional)}")
        seen.add(extra)
        for req in optional[extra]:
            add(req)

    for req in project["dependencies"]:
        add(req)
    for extra in extras:
        add_extra(extra)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras; NAME? only if defined")
    parser.add_argument("--onnxruntime", choices=["cpu", "gpu", "gpu-wheels"], required=True)
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    args = parser.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(args.pyproject, extras, args.onnxruntime)))


if __name__ == "__main__":
    main()
