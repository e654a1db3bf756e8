"""Export and runtime bars: CIFAR-stem ResNet-18 at 32×32, batch 64, on this machine's CPU cores.

Side by side in one process, in interleaved rounds (the engine order rotates every round), medians of the
rounds: torch eager vs onnxruntime fp32 vs onnxruntime int8 (static QDQ), in images/s. The int8 top-1 drop is
measured on a briefly trained model: the CIFAR-stem ResNet-18 trained on the real digits (scikit-learn's
1,797 images, upscaled to 32×32 RGB) for a few epochs on the CPU, exported with `imgcls export --int8`, and
evaluated on the digits test + validation splits (images the model never trained on).

Bars: onnxruntime fp32 ≥ 1.3× torch eager; int8 ≥ 4× torch eager with a top-1 drop ≤ 1 point.

    .venv/bin/python -m benchmarks export_runtime [-- --epochs 3 --rounds 7 --retrain]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("runs/bench/export_runtime")


def _rate(fn: Any, x: Any, iters: int) -> float:
    fn(x)  # warm the caches / allocator for this round
    start = time.perf_counter()
    for _ in range(iters):
        fn(x)
    return iters * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks export_runtime")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs on digits (CPU)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median reported)")
    parser.add_argument("--iters", type=int, default=4, help="batches per engine per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads for every engine")
    parser.add_argument("--retrain", action="store_true", help="train again even if a bundle is cached")
    parser.add_argument("--reexport", action="store_true", help="export again even if the bundle has an export")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch

    from benchmarks._trained import train_digits_bundle
    from imgcls.bundle import load_bundle
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.export import export_bundle
    from imgcls.models.io import load_model
    from imgcls.runtime import Predictor

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    bundle_dir = args.out / "resnet18-cifar-stem-digits32"
    trained = args.out / "train.json"
    if args.retrain or not (bundle_dir / "bundle.json").is_file():
        shutil.rmtree(bundle_dir, ignore_errors=True)
        args.reexport = True
        print(f"training the CIFAR-stem ResNet-18 on digits at 32×32 RGB for {args.epochs} epochs …", flush=True)
        summary = train_digits_bundle(
            bundle_dir, arch="resnet18", img_size=32, channels=3, epochs=args.epochs, lr=2e-3, threads=args.threads
        )
        trained.write_text(json.dumps(summary, indent=2))
    train_summary = json.loads(trained.read_text()) if trained.is_file() else {}

    section = load_bundle(bundle_dir).meta.export
    if args.reexport or section is None or "int8" not in section.models:
        start = time.perf_counter()
        section = export_bundle(bundle_dir, int8=True).section
        export_seconds: float | None = time.perf_counter() - start
    else:
        export_seconds = None  # reused the export of an earlier run
    models = section.to_dict()["models"]

    bundle = load_bundle(bundle_dir)
    assert bundle.meta.lineage.config is not None
    ds = load_dataset(DataConfig(**bundle.meta.lineage.config["data"]), seed=0)
    assert ds.test is not None
    held_out = np.concatenate([ds.test.images, ds.val.images])
    held_labels = np.concatenate([ds.test.labels, ds.val.labels])

    model = load_model(bundle)
    fp32 = Predictor.from_bundle(bundle_dir, device="cpu", intra_threads=args.threads)
    int8 = Predictor.from_bundle(bundle_dir, device="cpu", precision="int8", intra_threads=args.threads)
    top1 = {}
    for name, p in (("fp32", fp32), ("int8", int8)):
        top1[name] = float((p.infer_prepared(held_out).argmax(1) == held_labels).mean())
    with torch.inference_mode():
        torch_pred = model(torch.from_numpy(fp32.to_input(held_out))).argmax(1).numpy()
    top1["torch"] = float((torch_pred == held_labels).mean())

    reps = int(np.ceil(args.batch / len(held_out)))
    x = fp32.to_input(np.concatenate([held_out] * reps)[: args.batch])

    def torch_eager(batch: np.ndarray) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(batch))

    engines = {"torch eager": torch_eager, "onnxruntime fp32": fp32.logits, "onnxruntime int8": int8.logits}
    rates: dict[str, list[float]] = {name: [] for name in engines}
    names = list(engines)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            rates[name].append(_rate(engines[name], x, args.iters))
    median = {name: statistics.median(v) for name, v in rates.items()}
    base = median["torch eager"]

    result = {
        "machine": f"{os.cpu_count()} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "threads": args.threads,
        "batch": args.batch,
        "rounds": args.rounds,
        "iters_per_round": args.iters,
        "img_per_s_median": median,
        "img_per_s_all": rates,
        "speedup_vs_torch": {name: v / base for name, v in median.items()},
        "held_out_images": len(held_labels),
        "held_out_top1": top1,
        "int8_top1_drop_points": (top1["fp32"] - top1["int8"]) * 100,
        "export_gate": {
            "fp32_parity": models["fp32"]["parity"],
            "val_top1_fp32": models["int8"]["fp32_val_top1"],
            "val_top1_int8": models["int8"]["val_top1"],
            "val_drop_points": models["int8"]["top1_drop_points"],
        },
        "export_seconds": export_seconds,
        "training": train_summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    written = args.out / f"result-{args.threads}threads.json"
    written.write_text(json.dumps(result, indent=2))
    print(f"\nCIFAR-stem ResNet-18, 32×32, batch {args.batch}, {args.threads} threads, medians of {args.rounds} rounds")
    print(f"({result['machine']})")
    print("| engine | img/s (median) | × torch eager | held-out top-1 |")
    print("|---|---|---|---|")
    for name, key in (("torch eager", "torch"), ("onnxruntime fp32", "fp32"), ("onnxruntime int8", "int8")):
        print(f"| {name} | {median[name]:,.0f} | {median[name] / base:.2f} | {top1[key]:.2%} |")
    print(
        f"\nint8 top-1 drop on {len(held_labels)} held-out images: {result['int8_top1_drop_points']:.2f} points; "
        f"export gate (val): {models['int8']['top1_drop_points']:.2f} points; "
        f"fp32 parity max|Δ| {models['fp32']['parity']['batch_32']['max_abs_logit_diff']:.1e}"
    )
    took = f"{export_seconds:.1f} s" if export_seconds is not None else "reused (pass --reexport to time it)"
    print(f"export (fp32 + int8, gates included): {took}; training: {train_summary}")
    print(f"written: {written}")


if __name__ == "__main__":
    main()
