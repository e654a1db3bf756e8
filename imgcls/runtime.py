"""The torch-free runtime shared by ``predict``, ``serve`` and ``bench``: bundle -> onnxruntime session -> top-k.

A :class:`Predictor` verifies the bundle, refuses an ONNX file with external data, picks the execution provider
honestly (onnxruntime falls back to CPU silently when CUDA cannot load, so the session's own provider list is
what counts) and applies exactly the training evaluation transform (:mod:`imgcls.data.transform`).

Example:
    predictor = Predictor.from_bundle("runs/digits-resnet8", device="auto", precision="int8")
    for path, result in predictor.predict_paths(["cat.png", "dog.jpg"], top_k=3):
        print(path, result.label if isinstance(result, Prediction) else result.message)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgcls.bundle import Bundle, InputSpec, load_bundle, sha256_bytes
from imgcls.data.decode import DEFAULT_MAX_PIXELS, decode_image
from imgcls.data.transform import draft_size, normalize, prepare
from imgcls.errors import BundleError, DeviceError, ImageError, UsageError
from imgcls.prediction import Prediction, top_ids

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# precision -> the ONNX file `imgcls export` writes into the bundle
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def resolve_model(ref: str | Path) -> Path:
    """The local bundle directory for a ``--model`` argument: a bundle directory, or a model-store reference.

    Store references (``file://…``, ``gs://…``, ``NAME@ALIAS``, ``NAME:VERSION``) are resolved, pulled and
    verified by :func:`imgcls.store.resolve_model`; without the store package, only directories work.
    """
    try:
        from imgcls.store import resolve_model as store_resolve
    except ModuleNotFoundError as exc:
        if exc.name != "imgcls.store":
            raise
        return Path(ref)
    return Path(store_resolve(ref))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


# --- ONNX file checks without the onnx package (a serving machine has only onnxruntime) -------------------


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message; length-delimited values as memoryviews."""
    pos = 0
    value: Any
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


# message -> {field number: child message kind} for the fields that can hold tensors
_TENSOR_PATHS: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def external_data_tensors(model_bytes: bytes) -> int:
    """How many tensors of a serialised ONNX model keep their data outside the file (0 for a self-contained one).

    Raises:
        ValueError: the bytes are not a well-formed protobuf message.
    """
    count = 0
    stack: list[tuple[str, memoryview]] = [("model", memoryview(model_bytes))]
    while stack:
        kind, buf = stack.pop()
        if kind == "tensor":
            for number, wire, value in _fields(buf):
                if (number == 14 and wire == 0 and value == 1) or (number == 13 and wire == 2):
                    count += 1
                    break
            continue
        children = _TENSOR_PATHS[kind]
        for number, wire, value in _fields(buf):
            if wire == 2 and number in children:
                stack.append((children[number], value))
    return count


def _silence_onnxruntime(ort: Any) -> None:
    # 3 = ERROR hides the fallback warnings; the failed-CUDA-library line is an ERROR, so CUDA probes use 4.
    ort.set_default_logger_severity(3)


class Predictor:
    """An onnxruntime session over a verified bundle, with the bundle's classes and evaluation transform.

    Attributes:
        bundle: the verified bundle.
        classes: class names, index = class id.
        input: the model's input spec (size, channels, mean/std, interpolation).
        provider: the execution provider the session really runs on.
        precision: ``fp32``, ``int8`` or ``fp16``.
        model_file: the bundle-relative ONNX file in use.
        max_pixels: decoding limit applied by :meth:`decode` and :meth:`predict_paths`.
    """

    def __init__(
        self,
        bundle: Bundle,
        session: Any,
        *,
        precision: str,
        model_file: str,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_webp: bool = False,
    ) -> None:
        self.bundle = bundle
        self.classes = bundle.classes
        self.input: InputSpec = bundle.input
        self.precision = precision
        self.model_file = model_file
        self.max_pixels = max_pixels
        self.allow_webp = allow_webp
        self._session = session
        self.providers: list[str] = list(session.get_providers())
        self.provider = self.providers[0]
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | Bundle,
        *,
        device: str = "auto",
        precision: str = "fp32",
        intra_threads: int | None = None,
        inter_threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_webp: bool = False,
        spin: bool = True,
    ) -> Predictor:
        """Verify the bundle and build the onnxruntime session for ``precision`` on ``device``.

        Args:
            path: a bundle directory (or an already verified :class:`Bundle`).
            device: ``cpu``; ``cuda`` (fails unless CUDA really loads); ``auto`` (CUDA when it loads, else CPU).
            precision: which exported model to run: ``fp32`` (model.onnx), ``int8`` or ``fp16``.
            intra_threads: threads inside one operator (default: onnxruntime's, one per core).
            inter_threads: threads across independent operators (default: onnxruntime's).
            max_pixels: largest image (width × height) :meth:`decode` accepts.
            allow_webp: also decode WebP.
            spin: let idle onnxruntime threads spin-wait for the next call (fastest for back-to-back batches;
                a server turns it off so the spinning does not take CPU from its decoding and HTTP threads).

        Raises:
            BundleError: missing/tampered bundle, no export for ``precision``, external data, wrong input shape.
            DeviceError: ``cuda`` asked for but not usable.
            UsageError: an unknown device or precision, a bad thread count.
        """
        if device not in DEVICES:
            raise UsageError(f"unknown device {device!r}", hint=f"use one of: {', '.join(DEVICES)}")
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
        for flag, n in (("intra_threads", intra_threads), ("inter_threads", inter_threads)):
            if n is not None and n < 1:
                raise UsageError(f"{flag} must be at least 1, got {n}")
        if max_pixels < 1:
            raise UsageError(f"max_pixels must be positive, got {max_pixels}")
        bundle = path if isinstance(path, Bundle) else load_bundle(path)
        model_file = model_file_for(bundle, precision)
        model_bytes = _read_verified(bundle, model_file)
        try:
            n_external = external_data_tensors(model_bytes)
        except ValueError as exc:
            raise BundleError(f"{bundle.path / model_file} is not a valid ONNX file ({exc})") from None
        if n_external:
            raise BundleError(
                f"{bundle.path / model_file} keeps {n_external} tensor(s) as external data; "
                "imgcls only runs self-contained ONNX files",
                hint=f"re-export it with `imgcls export {bundle.path}`",
            )
        session = _make_session(
            model_bytes, device, intra_threads, inter_threads, label=str(bundle.path / model_file), spin=spin
        )
        predictor = cls(
            bundle, session, precision=precision, model_file=model_file, max_pixels=max_pixels, allow_webp=allow_webp
        )
        predictor._check_signature()
        logger.info("loaded %s (%s) on %s", bundle.path / model_file, precision, predictor.provider)
        return predictor

    def _check_signature(self) -> None:
        """The ONNX input/output shapes and embedded classes agree with the bundle."""
        inp = self._session.get_inputs()[0]
        spec = self.input
        want = [spec.channels, spec.size[0], spec.size[1]]
        got = list(inp.shape[1:])
        if len(inp.shape) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)):
            raise BundleError(
                f"{self.model_file} expects input {inp.shape}, but the bundle says (N, {', '.join(map(str, want))})",
                hint=f"re-export it with `imgcls export {self.bundle.path}`",
            )
        out = self._session.get_outputs()[0]
        k = out.shape[-1] if out.shape else None
        if isinstance(k, int) and k != len(self.classes):
            raise BundleError(
                f"{self.model_file} outputs {k} classes, but the bundle lists {len(self.classes)}",
                hint=f"re-export it with `imgcls export {self.bundle.path}`",
            )
        embedded = self._session.get_modelmeta().custom_metadata_map.get("classes")
        if embedded is not None:
            import json

            try:
                same = json.loads(embedded) == self.classes
            except ValueError:
                same = False
            if not same:
                raise BundleError(
                    f"{self.model_file} was exported with other class names than the bundle lists",
                    hint=f"re-export it with `imgcls export {self.bundle.path}`",
                )

    # --- inference ----------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What runs: for logs, ``/info`` endpoints and benchmark reports."""
        return {
            "bundle": self.bundle.name,
            "bundle_digest": self.bundle.digest,
            "model_file": self.model_file,
            "model_sha256": self.bundle.files[self.model_file],
            "precision": self.precision,
            "provider": self.provider,
            "classes": len(self.classes),
            "input": self.input.to_dict(),
        }

    def decode(self, source: bytes | str | Path) -> Image.Image:
        """Decode image bytes or a file with this predictor's limits (raises :class:`ImageError`).

        A JPEG is decoded at the smallest reduced scale that keeps twice the model's input size
        (:func:`~imgcls.data.decode.decode_image`'s ``draft``): the resize that follows still has pixels to
        average, and the decode's cost follows the model instead of the upload.
        """
        return decode_image(
            source, max_pixels=self.max_pixels, allow_webp=self.allow_webp, draft=draft_size(self.input)
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """A decoded image to ``uint8`` ``(H, W, C)``: the first half of the evaluation transform."""
        try:
            return prepare(image, self.input)
        except (OSError, ValueError, TypeError) as exc:  # a mode Pillow cannot convert
            raise ImageError(f"cannot convert a {image.mode} image ({exc})", code="unsupported_format") from None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Normalised ``float32`` ``(N, C, H, W)`` -> raw ``float32`` logits ``(N, K)``."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (self.input.channels, *self.input.size):
            raise UsageError(
                f"batch has shape {batch.shape}; this model takes (N, {self.input.channels}, "
                f"{self.input.size[0]}, {self.input.size[1]})"
            )
        if batch.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        (out,) = self._session.run([self._output_name], {self._input_name: batch})
        return np.asarray(out, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Normalised ``float32`` ``(N, C, H, W)`` -> probabilities ``(N, K)``."""
        return softmax(self.logits(batch))

    def to_input(self, batch_u8: np.ndarray) -> np.ndarray:
        """``uint8`` ``(N, H, W, C)`` -> the model's normalised ``float32`` ``(N, C, H, W)`` input."""
        try:
            return normalize(np.asarray(batch_u8), self.input)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def infer_prepared(self, batch_u8: np.ndarray) -> np.ndarray:
        """``uint8`` ``(N, H, W, C)`` (the output of :meth:`prepare`, stacked) -> probabilities ``(N, K)``."""
        return self.infer(self.to_input(batch_u8))

    def read(self, path: str | Path) -> np.ndarray:
        """Decode and prepare one image file: ``uint8`` ``(H, W, C)`` (raises :class:`ImageError`)."""
        return self.prepare(self.decode(path))

    def top_k(self, probabilities: np.ndarray, k: int = 5) -> list[Prediction]:
        """Probabilities ``(N, K)`` -> one :class:`Prediction` per row, top-k best first (ties: lower id first)."""
        if k < 1:
            raise UsageError(f"top-k must be at least 1, got {k}")
        order = top_ids(probabilities, k)
        return [Prediction.from_probabilities(self.classes, p, i) for p, i in zip(probabilities, order, strict=True)]

    def predict_images(self, images: Sequence[Image.Image], top_k: int = 5) -> list[Prediction]:
        """Decoded images (any mode and size) -> predictions, in order."""
        if not images:
            return []
        batch = np.stack([self.prepare(img) for img in images])
        return self.top_k(self.infer_prepared(batch), top_k)

    def predict_paths(
        self, paths: Iterable[str | Path], top_k: int = 5, batch_size: int = 32
    ) -> Iterator[tuple[Path, Prediction | ImageError]]:
        """Decode, batch and predict image files, yielding ``(path, Prediction | ImageError)`` in input order.

        A file that cannot be read or decoded yields its :class:`ImageError`; the others go on.
        """
        if batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {batch_size}")
        if top_k < 1:
            raise UsageError(f"top-k must be at least 1, got {top_k}")
        pending: list[tuple[Path, np.ndarray | ImageError]] = []
        n_ok = 0
        for p in paths:
            path = Path(p)
            item: np.ndarray | ImageError
            try:
                item = self.read(path)
                n_ok += 1
            except ImageError as exc:
                item = exc
            pending.append((path, item))
            if n_ok >= batch_size:
                yield from self._flush(pending, top_k)
                pending, n_ok = [], 0
        yield from self._flush(pending, top_k)

    def _flush(
        self, pending: list[tuple[Path, np.ndarray | ImageError]], top_k: int
    ) -> Iterator[tuple[Path, Prediction | ImageError]]:
        arrays = [item for _, item in pending if isinstance(item, np.ndarray)]
        predictions = iter(self.top_k(self.infer_prepared(np.stack(arrays)), top_k) if arrays else [])
        for path, item in pending:
            yield path, (item if isinstance(item, ImageError) else next(predictions))


def model_file_for(bundle: Bundle, precision: str) -> str:
    """The bundle-relative ONNX file for ``precision``; BundleError with the export command when absent."""
    export = bundle.meta.get("export") or {}
    entry = (export.get("models") or {}).get(precision) or {}
    rel = str(entry.get("file") or MODEL_FILES[precision])
    if not bundle.has(rel):
        flag = {"fp32": "", "int8": " --int8", "fp16": " --fp16"}[precision]
        raise BundleError(
            f"bundle {bundle.path} has no {precision} ONNX model ({rel})",
            hint=f"run `imgcls export {bundle.path}{flag}` first",
        )
    return rel


def _read_verified(bundle: Bundle, rel: str) -> bytes:
    """The file's bytes, checked against the manifest: the bytes hashed are the bytes run."""
    data = bundle.file(rel).read_bytes()
    if sha256_bytes(data) != bundle.files[rel]:
        raise BundleError(
            f"bundle {bundle.path} failed verification: {rel} changed since it was exported",
            hint="the file was modified or corrupted; export, pull or train the bundle again",
        )
    return data


def _make_session(
    model_bytes: bytes,
    device: str,
    intra_threads: int | None,
    inter_threads: int | None,
    *,
    label: str,
    spin: bool = True,
) -> Any:
    from imgcls.deps import require

    ort = require("onnxruntime", feature="the ONNX runtime")
    _silence_onnxruntime(ort)
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
            raise BundleError(f"onnxruntime cannot load {label}: {str(exc).strip()[:300]}") from None

    if device == "cpu":
        return build([CPU])
    available = ort.get_available_providers()
    if CUDA not in available:
        if device == "cuda":
            raise DeviceError(
                f"--device cuda: this onnxruntime build has no CUDA support (providers: {', '.join(available)})",
                hint="pip install onnxruntime-gpu (not together with onnxruntime), or use --device cpu",
            )
        return build([CPU])
    # onnxruntime-gpu lists CUDA even without a GPU and falls back to CPU silently: ask, then check.
    driver = _cuda_driver_loads()
    if driver:
        _preload_cuda_libraries(ort)
    ort.set_default_logger_severity(4)
    try:
        session = build([CUDA, CPU])
    finally:
        ort.set_default_logger_severity(3)
    if CUDA in session.get_providers():
        return session
    if device == "cuda":
        why = "the CUDA/cuDNN libraries did not load" if driver else "no NVIDIA driver (libcuda.so.1) on this machine"
        raise DeviceError(
            f"--device cuda: onnxruntime could not start CUDA here ({why}); "
            f"the session fell back to {', '.join(session.get_providers())}",
            hint="check `nvidia-smi` and the CUDA 12/13 + cuDNN 9 libraries, or use --device cpu",
        )
    logger.info("CUDA is listed by onnxruntime but did not load; running on CPU")
    return session


def _cuda_driver_loads() -> bool:
    """Whether the NVIDIA driver library loads: without it no CUDA provider can start (a cheap first check)."""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _preload_cuda_libraries(ort: Any) -> None:
    """Let onnxruntime-gpu find CUDA/cuDNN from the nvidia-* wheels when torch (which loads them) is not imported."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # best effort: the session's provider list is the real check
        logger.debug("onnxruntime.preload_dlls failed: %s", exc)
