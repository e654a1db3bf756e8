"""Which int8 recipe is fastest on this CPU: every static-quantization variant onnxruntime offers, side by side.

Runs on the CIFAR-stem ResNet-18 that ``benchmarks export_runtime`` trains and exports (run that first): the
same fp32 ONNX, ``quant_pre_process``, then ``quantize_static`` (MinMax, 256 calibration images from the
training split) with each variant; onnxruntime img/s at batch 64 in interleaved rounds (medians) and the
validation top-1 of each. The first row is the recipe ``imgcls export --int8`` uses.

    .venv/bin/python -m benchmarks int8_variants [-- --rounds 5 --threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.export_runtime import OUT, _rate


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks int8_variants")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=4, help="batches per variant per round")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--bundle", type=Path, default=OUT / "resnet18-cifar-stem-digits32")
    args = parser.parse_args()
    if not (args.bundle / "model.onnx").is_file():
        raise SystemExit(f"{args.bundle} has no model.onnx: run `python -m benchmarks export_runtime` first")

    import onnxruntime as ort
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from imgcls.bundle import load_bundle
    from imgcls.data.transform import normalize
    from imgcls.export import _Calibration, _calibration_images, evaluation_data

    ort.set_default_logger_severity(3)
    bundle = load_bundle(args.bundle)
    data = evaluation_data(bundle)
    calib = normalize(_calibration_images(data, 256, 0), bundle.input)
    val_x, val_y = normalize(data.val_images, bundle.input), data.val_labels
    base: dict[str, Any] = {
        "quant_format": q.QuantFormat.QDQ, "activation_type": q.QuantType.QUInt8,
        "weight_type": q.QuantType.QInt8, "per_channel": True, "reduce_range": True,
    }  # fmt: skip
    variants: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
        "imgcls: QDQ u8/s8 per-channel, reduce_range": (base, {}),
        "per-tensor weights": ({**base, "per_channel": False}, {}),
        "QOperator format": ({**base, "quant_format": q.QuantFormat.QOperator}, {}),
        "s8 activations (S8S8)": ({**base, "activation_type": q.QuantType.QInt8}, {}),
        "u8 weights (U8U8)": ({**base, "weight_type": q.QuantType.QUInt8, "reduce_range": False}, {}),
        "full 8-bit weights (no reduce_range)": ({**base, "reduce_range": False}, {}),
        "full 8-bit + session.x64quantprecision=1": (
            {**base, "reduce_range": False},
            {"session.x64quantprecision": "1"},
        ),
    }

    def session(path: Path, config: dict[str, str]) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    sessions: dict[str, Any] = {"onnxruntime fp32 (reference)": session(args.bundle / "model.onnx", {})}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pre = work / "pre.onnx"
        quant_pre_process(str(args.bundle / "model.onnx"), str(pre), skip_symbolic_shape=True)
        for i, (name, (kwargs, config)) in enumerate(variants.items()):
            out = work / f"v{i}.onnx"
            q.quantize_static(
                str(pre), str(out), _Calibration("images", calib), calibrate_method=q.CalibrationMethod.MinMax, **kwargs
            )
            sessions[name] = session(out, config)

    x = np.ascontiguousarray(val_x[:64])
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order every round
            s = sessions[name]
            rates[name].append(_rate(lambda b, s=s: s.run(None, {"images": b}), x, args.iters))
    print(f"\nCIFAR-stem ResNet-18, batch 64, {args.threads} threads, medians of {args.rounds} rounds")
    print("| variant | img/s | val top-1 |\n|---|---|---|")
    for name, s in sessions.items():
        preds = np.concatenate(
            [s.run(None, {"images": val_x[i : i + 64]})[0].argmax(1) for i in range(0, len(val_x), 64)]
        )
        print(f"| {name} | {statistics.median(rates[name]):.0f} | {float((preds == val_y).mean()):.2%} |")


if __name__ == "__main__":
    main()
