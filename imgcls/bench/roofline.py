"""How far from the hardware's limit a model runs: FLOPs counted from the ONNX graph, GEMM peaks per dtype.

FLOPs are counted for one image (batch dimension fixed to 1) over Conv, ConvTranspose, Gemm and MatMul,
2 per multiply-add, with shapes from ONNX shape inference (needs the ``onnx`` package, in ``imgcls[train]``;
without it bench says so and reports no GFLOP/s). Peaks are measured here, now: fp32 with numpy's BLAS
(all cores), bf16 and int8 with a 2048² MatMul in OpenVINO (f32 inputs, bf16 precision hint; FakeQuantize'd
to int8), each timed for about half a second after a warm-up.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

GEMM_N = 2048


def count_flops(model_bytes: bytes) -> tuple[float | None, str]:
    """``(FLOPs per image, note)``; None with the reason when they cannot be counted here."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError:
        return None, "FLOPs not counted: the onnx package is not installed (pip install 'imgcls[train]')"
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits = {t.name: list(t.dims) for t in graph.initializer}
    for inp in graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception as exc:  # onnx raises its own errors for graphs it cannot infer
        return None, f"FLOPs not counted: ONNX shape inference failed ({str(exc)[:120]})"
    shapes: dict[str, list[int]] = dict(inits)
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [int(d.dim_value) for d in dims]
    # QDQ models: a weight reaches its Conv through DequantizeLinear; follow it to the initializer's shape
    for node in inferred.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    flops = 0.0
    missing = 0
    for node in inferred.graph.node:
        op = node.op_type
        if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul"):
            continue
        if op.startswith("QLinear"):
            ins = [node.input[0], node.input[3]]
        else:
            ins = list(node.input[:2])
        out = shapes.get(node.output[0])
        w = shapes.get(ins[1])
        if out is None or w is None:
            missing += 1
            continue
        if op in ("Conv", "QLinearConv"):
            macs = float(np.prod(out)) * float(np.prod(w[1:]))  # out elements × (Cin/groups × kh × kw)
        elif op == "ConvTranspose":
            x = shapes.get(ins[0])
            if x is None:
                missing += 1
                continue
            macs = float(np.prod(x)) * float(np.prod(w[1:]))
        else:  # (…, M, K) @ (K, N) -> (…, M, N)
            k = w[-2] if len(w) >= 2 else w[0]
            if op == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                k = w[1] if trans_b else w[0]
            macs = float(np.prod(out)) * float(k)
        flops += 2.0 * macs
    note = "counted from the ONNX graph (Conv, Gemm, MatMul; 2 FLOPs per multiply-add)"
    if missing:
        note += f"; {missing} node(s) without inferred shapes left out"
    return flops, note


def _rate(fn: Any, flops: float, seconds: float = 0.5) -> float:
    for _ in range(2):
        fn()
    start = time.perf_counter()
    n = 0
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return flops * n / elapsed / 1e9


def gemm_peaks(threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Measured GEMM GFLOP/s per dtype: ``{"fp32": {"gflops": .., "how": ..}, "bf16": .., "int8": ..}``."""
    n = GEMM_N
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32) - 0.5
    b = rng.random((n, n), dtype=np.float32) - 0.5
    peaks: dict[str, dict[str, Any]] = {
        "fp32": {"gflops": _rate(lambda: a @ b, flops), "how": f"numpy matmul {n}² fp32 (its BLAS, all cores)"}
    }
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        note = "not measured: OpenVINO is not installed (pip install 'imgcls[openvino]')"
        peaks["bf16"] = {"gflops": None, "how": note}
        peaks["int8"] = {"gflops": None, "how": note}
        return peaks
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for dtype in ("bf16", "int8"):
        if dtype == "bf16" and "BF16" not in caps:
            peaks[dtype] = {"gflops": None, "how": "this CPU has no bf16"}
            continue
        x = ops.parameter([n, n], ov.Type.f32, name="x")
        w = ops.constant(b)
        if dtype == "int8":
            lo, hi = ops.constant(np.float32(-1.0)), ops.constant(np.float32(1.0))
            mm = ops.matmul(
                ops.fake_quantize(x, lo, hi, lo, hi, 256), ops.fake_quantize(w, lo, hi, lo, hi, 255), False, False
            )
        else:
            mm = ops.matmul(x, w, False, False)
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if dtype == "bf16" else "f32",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        request = core.compile_model(ov.Model([mm], [x]), "CPU", config).create_infer_request()
        peaks[dtype] = {
            "gflops": _rate(lambda r=request: r.infer({0: a}), flops),
            "how": f"OpenVINO {n}² MatMul, {'bf16 precision hint' if dtype == 'bf16' else 'FakeQuantize int8'}"
            + (f", {threads} threads" if threads else ", all cores"),
        }
    return peaks
