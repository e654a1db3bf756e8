#!/usr/bin/env bash
# Make .gpu/, what a lent GPU machine lacks for scripts/gpu_check.sh, on this machine, before the device call:
#   .gpu/whl/            pydantic and what it needs, as CPython 3.12 manylinux wheels (the GPU machine's Python has
#                        torch, timm, typer, rich, numpy, pillow, pyyaml, safetensors, onnx and pytest, not pydantic)
#   .gpu/fashion-mnist/  the Debian package's four .gz files (~30 MB), for `gpu_fast fmnist`
# .gpu/ is ignored by git (.git/info/exclude) and travels only where the call names it: carry [".gpu"].
# The versions are those of this environment's pydantic, so the GPU run parses configs as the tests here do.
#   bash scripts/gpu_kit.sh [PYTHON]      # PYTHON: the interpreter whose pydantic to copy (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-python3}
kit=.gpu
grep -qxF "/$kit/" .git/info/exclude 2>/dev/null || echo "/$kit/" >>.git/info/exclude
rm -rf "$kit" && mkdir -p "$kit/whl" "$kit/fashion-mnist"

pins=$("$python" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version

names = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"]
try:
    print(" ".join(f"{n}=={version(n)}" for n in names))
except PackageNotFoundError as e:
    raise SystemExit(f"gpu_kit: {e.name} is not installed in this Python; install imgcls first (pip install -e .)")
EOF
)
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# shellcheck disable=SC2086  # $pins is a list of requirement words
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$kit/whl" $pins

src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  echo "gpu_kit: $src is missing: apt-get install -y dataset-fashion-mnist (the fmnist bar needs it)" >&2
  exit 1
fi
cp "$src"/*-ubyte.gz "$kit/fashion-mnist/"
du -sh "$kit" | sed 's/^/gpu_kit: /'
ls "$kit/whl" | sed 's/^/  /'
echo 'gpu_kit: now ONE device call: run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=600)'
