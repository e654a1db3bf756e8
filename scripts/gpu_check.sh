#!/usr/bin/env bash
# Issue 14's GPU checks in one call on a lent GPU machine (the device tool), after `bash scripts/gpu_kit.sh` here:
#   run(command="bash scripts/gpu_check.sh bars", carry=[".gpu"], timeout_s=600)       # the benchmarks (~5 min)
#   run(command="bash scripts/gpu_check.sh tests", carry=[".gpu"], timeout_s=400)      # at once: the gpu tests
#   run(command="bash scripts/gpu_check.sh", ...)                                       # both (may outrun 600 s)
# Each step has its own time limit, so one hang cannot eat the lease; every step's log and the benchmarks' JSON
# lines (results.jsonl) land in $OUT (or ./gpu-check-out off the device tool). The lease is short (15 min of device
# time, start-up included): keep this script's total under the call's timeout.
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
status=0
step() {  # step NAME LIMIT_S COMMAND...: run with a limit, log to $out/NAME.log, collect its @@ lines
  local name=$1 limit=$2
  shift 2
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

if [ "$what" = all ] || [ "$what" = bars ]; then
  step mfu 180 $py -m benchmarks gpu_fast -- mfu --batch 512,1024
  step fmnist-eager 80 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist --no-compile
  step fmnist-compiled 100 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist
  # the recipe measured on the CPU (test 0.9394 in 14 epochs), for comparison with the default one step beyond
  step fmnist-w24 80 $py -m benchmarks gpu_fast -- fmnist --src .gpu/fashion-mnist --no-compile --width 24 --epochs 14
  step ddp 120 $py -m benchmarks gpu_fast -- ddp  # says "skipped" on one GPU
fi
if [ "$what" = all ] || [ "$what" = tests ]; then
  step gpu-tests 240 $py -m pytest tests/gpu -m gpu -q -p no:cacheprovider --timeout=200
fi
echo "== done in $((SECONDS - started))s; results:"
cat "$out/results.jsonl" 2>/dev/null
exit $status
