"""onnxruntime sessions with honest provider probing (CPU, CUDA, TensorRT).

onnxruntime-gpu lists CUDA and TensorRT even on a machine without a GPU and falls back to the CPU silently,
so a session's own provider list is what counts: ``--device cuda`` / ``tensorrt`` fail clearly when that
provider did not really load; ``auto`` uses CUDA when it loads and says so.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from imgcls.errors import BundleError, DeviceError
from imgcls.runtime.engines import Engine, TensorInfo

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


def silence_onnxruntime(ort: Any) -> None:
    """3 = ERROR hides the fallback warnings; the failed-CUDA-library line is an ERROR, so CUDA probes use 4."""
    ort.set_default_logger_severity(3)


def make_session(
    model_bytes: bytes,
    device: str = "cpu",
    intra_threads: int | None = None,
    inter_threads: int | None = None,
    *,
    label: str = "the model",
    spin: bool = True,
) -> Any:
    """An onnxruntime ``InferenceSession`` over ``model_bytes`` on ``device`` (``cpu``/``cuda``/``tensorrt``/``auto``).

    Example:
        session = make_session(onnx_bytes, "cpu", label="the exported model")

    Raises:
        BundleError: onnxruntime cannot load the model.
        DeviceError: ``cuda``/``tensorrt`` asked for but it does not really load.
    """
    from imgcls.deps import require

    ort = require("onnxruntime", feature="the ONNX runtime")
    silence_onnxruntime(ort)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_threads:
        options.intra_op_num_threads = intra_threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if inter_threads:
        options.inter_op_num_threads = inter_threads
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL

    def build(providers: list[str]) -> Any:
        try:
            return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            reason = load_failure(exc)
            newer = re.search(r"IR version|[Oo]pset|not a registered", reason) is not None
            raise BundleError(
                f"onnxruntime cannot load {label}: {reason}",
                hint="the file needs operators or versions this onnxruntime lacks: re-export the bundle with "
                "`imgcls export` here, or upgrade onnxruntime (pip install -U onnxruntime)"
                if newer
                else None,
            ) from None

    if device == "cpu":
        return build([CPU])
    available = ort.get_available_providers()
    wanted = TENSORRT if device == "tensorrt" else CUDA
    if wanted not in available:
        if device in ("cuda", "tensorrt"):
            raise DeviceError(
                f"--device {device}: this onnxruntime build has no {wanted} (providers: {', '.join(available)})",
                hint="pip install onnxruntime-gpu (not together with onnxruntime), or use --device cpu",
            )
        return build([CPU])
    # onnxruntime-gpu lists CUDA even without a GPU and falls back to CPU silently: ask, then check.
    driver = cuda_driver_loads()
    if driver:
        preload_cuda_libraries(ort)
    ort.set_default_logger_severity(4)
    try:
        session = build([TENSORRT, CUDA, CPU] if device == "tensorrt" else [CUDA, CPU])
    finally:
        ort.set_default_logger_severity(3)
    if wanted in session.get_providers():
        return session
    if device in ("cuda", "tensorrt"):
        raise DeviceError(
            f"--device {device}: onnxruntime could not start {wanted} here ({_why_not(device, driver)}); "
            f"the session fell back to {', '.join(session.get_providers())}",
            hint=_cuda_fix(ort, device, driver),
        )
    logger.info("CUDA is listed by onnxruntime but did not load; running on CPU")
    return session


def load_failure(exc: BaseException, limit: int = 600) -> str:
    """onnxruntime's reason for refusing a model, without the C++ source location and signature before it.

    'Unsupported model IR version: 99, max supported IR version: 13' comes after ~250 characters of
    '/onnxruntime_src/onnxruntime/core/graph/model.cc:256 onnxruntime::Model::Model(onnx::ModelProto&&, ...)',
    so the first 300 characters of the message ended at 'Unsupported' and the reason was cut off.
    """
    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"^/\S+:\d+ .*?\) (?=\S)", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _why_not(device: str, driver: bool) -> str:
    if not driver:
        return "no NVIDIA driver: libcuda.so.1 does not load"
    if device == "tensorrt":
        return "the TensorRT libraries (libnvinfer) did not load"
    return "the driver loads but the CUDA/cuDNN libraries did not"


def _cuda_fix(ort: Any, device: str, driver: bool) -> str:
    """The fix line: the driver comes from the host (in a container: --gpus all); the CUDA libraries from wheels."""
    if not driver:
        return (
            "on a GPU host the driver comes from the host: `nvidia-smi` must work, and a container needs "
            "`docker run --gpus all` (NVIDIA Container Toolkit) or a nvidia.com/gpu resource; without a GPU use "
            "--device cpu"
        )
    cuda = getattr(getattr(getattr(ort, "capi", None), "build_and_package_info", None), "cuda_version", None)
    built = f"CUDA {cuda}" if cuda else "its CUDA version"
    extra = " and TensorRT (pip install tensorrt)" if device == "tensorrt" else ""
    return (
        f"pip install 'onnxruntime-gpu[cuda,cudnn]' (the CUDA + cuDNN wheels of {built}, which it was built "
        f"for){extra}, check that the driver supports that CUDA (`nvidia-smi`), or use --device cpu"
    )


def cuda_driver_loads() -> bool:
    """Whether the NVIDIA driver library loads: without it no CUDA provider can start (a cheap first check)."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def preload_cuda_libraries(ort: Any) -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN from the nvidia-* wheels when torch (which loads them) is not imported."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # best effort: the session's provider list is the real check
        logger.debug("onnxruntime.preload_dlls failed: %s", exc)


def _dtype(ort_type: str) -> str:
    """onnxruntime's ``tensor(float)`` -> ``float32`` (numpy's names; the other types keep theirs: ``uint8``)."""
    name = ort_type.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(name, name)


class OrtEngine(Engine):
    """An onnxruntime session behind the :class:`Engine` interface."""

    name = "onnxruntime"

    def __init__(
        self,
        model_bytes: bytes,
        *,
        precision: str,
        device: str = "cpu",
        threads: int | None = None,
        inter_threads: int | None = None,
        spin: bool = True,
        label: str = "the model",
    ) -> None:
        import onnxruntime as ort

        self.session = make_session(model_bytes, device, threads, inter_threads, label=label, spin=spin)
        self.precision = precision
        self.threads = threads
        self.version = str(ort.__version__)
        self.providers = list(self.session.get_providers())
        self.inputs = [TensorInfo(i.name, tuple(i.shape), _dtype(i.type)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape), _dtype(o.type)) for o in self.session.get_outputs()]
        self._input = self.inputs[0].name
        self._names = [o.name for o in self.outputs]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._names, {self._input: batch})
        return dict(zip(self._names, values, strict=True))
