"""Training throughput of imgcls' small CPU network: images per second through the real training step.

    .venv/bin/python -m benchmarks train_throughput [-- --model resnet8 --rounds 7 --steps 12]

One step = the loop's batch augmentation (random crop + flip on uint8, normalise, channels-last), forward,
label-smoothed cross-entropy, backward and a Nesterov SGD step, exactly as :func:`imgcls.train.fit` runs it.
Each figure is one fresh process timing ``--steps`` steps after 3 warm-up steps; ``--rounds`` rounds interleave
the variants (all cores with passive OpenMP waiting as ``imgcls train`` sets it, all cores with libgomp's default
spinning, one thread) for 32×32 RGB (the bar: ≥ 1,000 img/s on two cores) and 28×28 gray (Fashion-MNIST).
Reported: median and best over the rounds, and the load average (the machines are shared: other people's jobs
slow the figures down).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def _step_rate(model_name: str, size: int, channels: int, batch: int, steps: int, rounds: int, threads: int) -> dict:
    import torch

    from imgcls.bundle import InputSpec
    from imgcls.config import AugmentConfig, RunConfig
    from imgcls.models import create_model
    from imgcls.train.augment import BatchAugment
    from imgcls.train.factory import build_optimizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = InputSpec(size=(size, size), channels=channels, mean=(0.5,) * channels, std=(0.25,) * channels)
    model = create_model(model_name, num_classes=10, in_chans=channels, img_size=size)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(RunConfig(), model)
    augment = BatchAugment(AugmentConfig(crop_padding=2, hflip=True), spec, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * 4, size, size, channels), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (batch * 4,), generator=gen)

    def step(i: int) -> None:
        sl = slice((i % 4) * batch, (i % 4 + 1) * batch)
        x, y = augment(images[sl], labels[sl], gen)
        loss = torch.nn.functional.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(3):  # oneDNN primitive creation, allocator warm-up
        step(i)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(steps):
            step(i)
        rates.append(batch * steps / (time.perf_counter() - start))
    return {
        "model": model_name,
        "input": f"{size}x{size}x{channels}",
        "batch": batch,
        "threads": threads,
        "params": sum(p.numel() for p in model.parameters()),
        "median_img_s": round(statistics.median(rates)),
        "best_img_s": round(max(rates)),
    }


VARIANTS = (  # (label, threads: 0 = all cores, OMP_WAIT_POLICY or None for libgomp's default)
    ("all cores, passive wait (imgcls train)", 0, "PASSIVE"),
    ("all cores, OpenMP default (spin)", 0, None),
    ("1 thread", 1, None),
)


def _child(args: argparse.Namespace) -> None:
    size, channels = (int(v) for v in args.shape.split("x"))
    threads = args.threads or len(os.sched_getaffinity(0))
    row = _step_rate(args.model, size, channels, args.batch, args.steps, 1, threads)
    print("@@" + json.dumps(row), flush=True)


def main() -> None:
    import subprocess
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="train_throughput")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--shape", default="32x3")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    root = Path(__file__).resolve().parents[1]
    print(f"load average before: {os.getloadavg()}", flush=True)
    rates: dict[tuple[str, str], list[int]] = {}
    for rnd in range(args.rounds):  # variants interleaved in every round: the load changes from minute to minute
        for shape in ("32x3", "28x1"):
            for label, threads, policy in VARIANTS:
                env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
                if policy:
                    env["OMP_WAIT_POLICY"] = policy
                cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--child", "--model", args.model,
                       "--batch", str(args.batch), "--steps", str(args.steps), "--shape", shape,
                       "--threads", str(threads)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, check=True).stdout
                row = json.loads(next(line[2:] for line in out.splitlines() if line.startswith("@@")))
                rates.setdefault((shape, label), []).append(row["median_img_s"])
                print(f"round {rnd + 1}: {shape} {label}: {row['median_img_s']} img/s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"| model | input | batch | threads / wait policy | median img/s ({args.rounds} rounds) | best | all |")
    print("|---|---|---|---|---|---|---|")
    for (shape, label), values in rates.items():
        size, channels = shape.split("x")
        print(
            f"| {args.model} | {size}×{size}×{channels} | {args.batch} | {label} | "
            f"{round(statistics.median(values)):,} | {max(values):,} | {', '.join(map(str, values))} |"
        )


if __name__ == "__main__":
    main()
