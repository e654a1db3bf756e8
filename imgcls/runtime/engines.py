"""One interface over the inference engines: onnxruntime (CPU, CUDA, TensorRT) and OpenVINO (CPU).

Every engine runs the bundle's own ONNX bytes (already verified) and returns ALL the model's outputs by name,
so a model with more outputs than ``logits`` (an embedding, say) needs no engine change. What an engine
reports in :attr:`Engine.providers` is what really runs: onnxruntime's session providers after its silent
CUDA fallback, and OpenVINO's execution devices with the inference precision it actually uses (its CPU plugin
runs fp32 models in bf16 by default on AMX machines, so imgcls always sets the precision hint explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgcls.errors import UsageError

ENGINES = ("auto", "onnxruntime", "openvino")
# engine -> precisions it runs; bf16 is the fp32 model run in bf16 (OpenVINO's precision hint, AMX/AVX512-BF16)
ENGINE_PRECISIONS = {"onnxruntime": ("fp32", "int8", "fp16"), "openvino": ("fp32", "bf16", "int8")}
PRECISIONS = ("fp32", "bf16", "int8", "fp16")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: its name, shape (``None`` or a name for a dynamic dimension) and element type
    (numpy's name, e.g. ``float32``; None where the engine does not say)."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str | None = None


class Engine:
    """A compiled model on one engine. Subclasses set the attributes and implement :meth:`run`.

    Attributes:
        name: ``onnxruntime`` or ``openvino``.
        precision: the precision asked for (``fp32``, ``bf16``, ``int8``, ``fp16``).
        providers: what really runs, best first (onnxruntime providers, or ``OpenVINO:CPU:bf16``).
        inputs: the model's inputs (imgcls models have one, the image batch).
        outputs: the model's outputs, in the model's order (the first is the logits).
        threads: the thread count asked for (None: the engine's default).
        version: the engine's version.
    """

    name: str = ""
    precision: str = "fp32"
    providers: list[str]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    threads: int | None = None
    version: str = ""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``float32`` ``(N, C, H, W)`` -> every output of the model, by name."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "version": self.version,
            "precision": self.precision,
            "providers": list(self.providers),
            "threads": self.threads,
        }


def check_engine(engine: str, precision: str, device: str) -> None:
    """Refuse an engine/precision/device combination that cannot run, naming what can.

    Raises:
        UsageError: unknown engine, precision or device, or a precision the engine does not run.
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}", hint=f"use one of: {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}", hint=f"use one of: {', '.join(DEVICES)}")
    if engine != "auto" and precision not in ENGINE_PRECISIONS[engine]:
        others = [e for e, ps in ENGINE_PRECISIONS.items() if precision in ps]
        raise UsageError(
            f"engine {engine} does not run {precision} (it runs {', '.join(ENGINE_PRECISIONS[engine])})",
            hint=f"use --engine {others[0]}" if others else None,
        )
    if engine == "openvino" and device in ("cuda", "tensorrt"):
        raise UsageError(
            f"engine openvino runs on the CPU here; --device {device} needs --engine onnxruntime",
            hint="use --device cpu with --engine openvino",
        )


def create_engine(
    model_bytes: bytes,
    *,
    engine: str,
    precision: str,
    device: str = "cpu",
    threads: int | None = None,
    inter_threads: int | None = None,
    spin: bool = True,
    label: str = "the model",
) -> Engine:
    """Compile verified ONNX bytes on ``engine`` (``onnxruntime`` or ``openvino``; resolve ``auto`` first).

    Raises:
        UsageError: a bad combination (:func:`check_engine`).
        MissingExtraError: the engine's package is not installed.
        DeviceError: the device asked for cannot run.
        BundleError: the engine cannot load the model.
    """
    check_engine(engine, precision, device)
    if engine == "onnxruntime":
        from imgcls.runtime.ort import OrtEngine

        return OrtEngine(
            model_bytes,
            precision=precision,
            device=device,
            threads=threads,
            inter_threads=inter_threads,
            spin=spin,
            label=label,
        )
    if engine == "openvino":
        from imgcls.runtime.ov import OpenVinoEngine

        return OpenVinoEngine(model_bytes, precision=precision, threads=threads, spin=spin, label=label)
    raise UsageError(f"engine {engine!r} must be resolved to a real engine before it is created")


def engine_available(engine: str) -> bool:
    """Whether the engine's Python package imports here."""
    import importlib.util

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino"}.get(engine)
    return module is not None and importlib.util.find_spec(module) is not None
