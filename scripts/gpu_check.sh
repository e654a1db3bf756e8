#!/usr/bin/env bash
# Issue 14's GPU checks in ONE call on a lent GPU machine (the device tool), after `bash scripts/gpu_kit.sh` here:
#   run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=600)     # bars, then the gpu tests
#   run(command="bash scripts/gpu_check.sh bars", ...) / "... tests"            # one half
# A session has 15 minutes of device time, the machine's start (a minute or more) included: one full call is
# what fits. The steps run in the order of what matters most (the two one-GPU bars, the gpu tests, then the
# comparisons); each has its own limit, and GPU_CHECK_BUDGET_S (default 540 s) caps them all together: a step
# that would overrun it gets what is left, or is skipped with a line saying so. Every step's log and the
# benchmarks' JSON lines (results.jsonl) land in $OUT (./gpu-check-out off the device tool).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
out=${OUT:-gpu-check-out}
mkdir -p "$out"
py=python3

if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-site .gpu/whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="/tmp/gpu-site:$PWD"
else
  echo "gpu_check: no .gpu/whl (run scripts/gpu_kit.sh here and carry .gpu); trying without" >&2
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled

started=$SECONDS
budget=${GPU_CHECK_BUDGET_S:-540}
status=0
step() {  # step NAME LIMIT_S COMMAND...: run with a limit, log to $out/NAME.log, collect its @@ lines
  local name=$1 limit=$2
  shift 2
  local left=$((budget - (SECONDS - started)))
  if [ "$left" -lt 30 ]; then
    echo "!! $name: skipped, ${left}s of the ${budget}s budget left"
    echo "{\"step\": \"$name\", \"skipped\": \"budget\"}" >>"$out/results.jsonl"
    status=1
    return
  fi
  [ "$limit" -le "$left" ] || limit=$left
  echo "== $name (limit ${limit}s, at $((SECONDS - started))s)"
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  grep '^@@' "$out/$name.log" | sed 's/^@@//' >>"$out/results.jsonl"
  tail -n 6 "$out/$name.log"
  [ "$rc" -eq 0 ] || { echo "!! $name: exit $rc"; status=1; }
}

{
  nvidia-smi -L
  $py -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA", "gpus", torch.cuda.device_count())'
  $py -c 'import pydantic, timm; print("pydantic", pydantic.VERSION, "timm", timm.__version__)'
} 2>&1 | tee "$out/machine.log"

bars() { [ "$what" = all ] || [ "$what" = bars ]; }
tests() { [ "$what" = all ] || [ "$what" = tests ]; }
bars && step mfu 150 $py -m benchmarks gpu_fast -- mfu --batch 512,1024
bars && step fmnist-compiled 90 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist
tests && step gpu-tests 200 $py -m pytest tests/gpu -m gpu -v -p no:cacheprovider --timeout=150  # -v: the names, if it is cut off
bars && step fmnist-eager 70 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist --no-compile
# the recipe measured on the CPU (test 0.9394 in 14 epochs), beside the default one step beyond
bars && step fmnist-w24 60 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist --no-compile --width 24 --epochs 14
bars && step ddp 120 $py -m benchmarks gpu_fast -- ddp  # says "skipped" at once on one GPU
echo "== done in $((SECONDS - started))s; results:"
cat "$out/results.jsonl" 2>/dev/null
exit $status
