"""OpenVINO (CPU) behind the :class:`~imgcls.runtime.engines.Engine` interface, reading the bundle's own ONNX bytes.

The LATENCY hint with one synchronous request per call: the THROUGHPUT hint with one request was 2× slower on
the 2-core Sapphire Rapids VM (docs/benchmarks.md). The inference precision is always set explicitly: OpenVINO's
CPU plugin otherwise runs fp32 models in bf16 on AMX machines, and the accuracy gate must judge what really runs.
``int8`` runs the QDQ model (model.int8.onnx) with its non-quantised layers in f32.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from imgcls.errors import BundleError, DeviceError
from imgcls.runtime.engines import Engine, TensorInfo

# imgcls precision -> OpenVINO INFERENCE_PRECISION_HINT
PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def _shape(port: Any) -> tuple[int | str | None, ...]:
    return tuple(int(d.get_length()) if d.is_static else None for d in port.get_partial_shape())


def _dtype(port: Any) -> str:
    """OpenVINO's ``f32``/``u8``/``f16`` -> numpy's names (``float32``, ``uint8``, ``float16``)."""
    name = str(port.get_element_type().get_type_name())
    kind = {"f": "float", "u": "uint", "i": "int"}.get(name[:1])
    return f"{kind}{name[1:]}" if kind is not None and name[1:].isdigit() else name


class OpenVinoEngine(Engine):
    """An OpenVINO compiled model (CPU plugin)."""

    name = "openvino"

    def __init__(
        self,
        model_bytes: bytes,
        *,
        precision: str,
        threads: int | None = None,
        spin: bool = True,
        label: str = "the model",
    ) -> None:
        from imgcls.deps import require

        ov = require("openvino", feature="the OpenVINO engine")
        core = ov.Core()
        hint = PRECISION_HINT[precision]
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise DeviceError(
                "this CPU has no bf16 support (no AMX / AVX512-BF16), so OpenVINO would run bf16 as f32",
                hint="use --precision fp32 or int8 on this machine",
            )
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if not spin:  # a server shares its cores with decoding and HTTP threads: do not pin inference threads
            config["ENABLE_CPU_PINNING"] = False
        try:
            model = core.read_model(model_bytes)
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own for bad models
            raise BundleError(f"OpenVINO cannot load {label}: {str(exc).strip()[:300]}") from None
        actual = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        actual = {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16"}.get(actual, actual)
        actual = {"float32": "f32", "bfloat16": "bf16", "f32": "f32", "bf16": "bf16"}.get(actual, actual)
        devices = ",".join(self.compiled.get_property("EXECUTION_DEVICES"))
        self.precision = precision
        self.threads = threads
        self.version = str(ov.get_version()).split("-")[0]
        self.inference_precision = actual
        self.providers = [f"OpenVINO:{devices}:{actual}"]
        self.inputs = [TensorInfo(p.get_any_name(), _shape(p), _dtype(p)) for p in self.compiled.inputs]
        self.outputs = [TensorInfo(p.get_any_name(), _shape(p), _dtype(p)) for p in self.compiled.outputs]
        self._local = threading.local()  # an infer request is not thread-safe: one per calling thread

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: batch}, share_inputs=False, share_outputs=False)
        return {o.name: np.asarray(result[i]) for i, o in enumerate(self.outputs)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "inference_precision": self.inference_precision}
