"""`imgcls predict one.png --model B` in a cold process, with the small CPU model (resnet8, digits 16×16).

hyperfine runs the installed console script (warm-up runs first so the file cache is warm, as it is for a
user running the command twice); the figure is the median wall time of the runs. Baselines in the same run:
the bare interpreter, `imgcls --help`, and `python -c "import torch"` (what predict avoids).

Bar: ≤ 1.0 s wall.

    .venv/bin/python -m benchmarks predict_cold_start [-- --runs 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path("runs/bench/predict_cold_start")


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks predict_cold_start")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if shutil.which("hyperfine") is None:
        sys.exit("hyperfine is not installed: apt-get install -y hyperfine")

    import numpy as np
    from PIL import Image

    from benchmarks._trained import train_digits_bundle
    from imgcls.export import export_bundle

    bundle = args.out / "digits-resnet8"
    if not (bundle / "model.onnx").is_file():
        shutil.rmtree(bundle, ignore_errors=True)
        train_digits_bundle(bundle, arch="resnet8", img_size=16, epochs=4, threads=1)
        export_bundle(bundle)
    with np.load(bundle / "samples" / "val.npz") as z:
        one = args.out / "one.png"
        Image.fromarray(z["images"][0][..., 0], "L").save(one)

    bindir = Path(sys.executable).parent
    imgcls = bindir / "imgcls"
    commands = {
        "python -c pass": f"{sys.executable} -c pass",
        "imgcls --help": f"{imgcls} --help",
        "imgcls predict one.png --model B": f"{imgcls} predict {one} --model {bundle}",
        "python -c 'import torch'": f"{sys.executable} -c 'import torch'",
    }
    export = args.out / "hyperfine.json"
    cmd = ["hyperfine", "--warmup", str(args.warmup), "--runs", str(args.runs), "--export-json", str(export), "-N"]
    for name, command in commands.items():
        cmd += ["--command-name", name, command]
    subprocess.run(cmd, check=True)
    results = json.loads(export.read_text())["results"]
    print(f"\nmedians of {args.runs} runs after {args.warmup} warm-up runs")
    print("| command | median wall (s) | mean ± σ (s) |")
    print("|---|---|---|")
    for r in results:
        print(f"| `{r['command']}` | {r['median']:.3f} | {r['mean']:.3f} ± {r['stddev']:.3f} |")


if __name__ == "__main__":
    main()
