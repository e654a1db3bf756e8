"""Print the pip requirements of imgcls + extras for a container image, with the onnxruntime wheel chosen.

The base install depends on ``onnxruntime-gpu`` on Linux x86_64 (one wheel serves CPU and GPU machines), but a
CPU image should not carry its 255 MB of CUDA kernels: ``--onnxruntime cpu`` swaps it for ``onnxruntime``. The
image then installs these requirements and the imgcls wheel with ``--no-deps``; pyproject.toml stays the one
list of dependencies.

    python3 scripts/image_requirements.py --extras serve,gcs --onnxruntime cpu > requirements.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib  # Python 3.11+: the images' Python

ORT = re.compile(r"^onnxruntime(-gpu)?\b")


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
            wheel = "onnxruntime" if onnxruntime == "cpu" else "onnxruntime-gpu"
            wanted = wheel + (version.group(0) if version else "")
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
    parser.add_argument("--onnxruntime", choices=["cpu", "gpu"], required=True)
    parser.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    args = parser.parse_args()
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    print("\n".join(requirements(args.pyproject, extras, args.onnxruntime)))


if __name__ == "__main__":
    main()
