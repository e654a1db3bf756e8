"""The :class:`Predictor`: a verified bundle on one engine, its evaluation transform and top-k.

A :class:`Predictor` verifies the bundle, refuses an ONNX file with external data (:mod:`imgcls.runtime.onnxfile`),
runs it on the engine asked for (:mod:`imgcls.runtime.engines`: onnxruntime CPU/CUDA/TensorRT, or OpenVINO),
reports what really runs, and applies exactly the training evaluation transform (:mod:`imgcls.data.transform`).
``engine="auto"`` follows the bundle's serving profile (written by ``imgcls bench --pick``) unless the caller
asked for another precision or device, and is onnxruntime otherwise.

Example:
    predictor = Predictor.from_bundle("runs/digits-resnet8", engine="openvino", precision="int8")
    for path, result in predictor.predict_paths(["cat.png", "dog.jpg"], top_k=3):
        print(path, result.label if isinstance(result, Prediction) else result.message)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgcls.bundle import Bundle, InputSpec, load_bundle
from imgcls.data.decode import DEFAULT_MAX_PIXELS, decode_image
from imgcls.data.transform import draft_size, normalize, prepare
from imgcls.errors import BundleError, ImageError, UsageError
from imgcls.prediction import Prediction, top_ids
from imgcls.runtime.engines import Engine, check_engine, create_engine
from imgcls.runtime.onnxfile import load_model_bytes, model_metadata
from imgcls.runtime.profile import resolve_engine

logger = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


class Predictor:
    """A verified bundle compiled on one engine, with the bundle's classes and evaluation transform.

    Attributes:
        bundle: the verified bundle.
        classes: class names, index = class id.
        input: the model's input spec (size, channels, mean/std, interpolation).
        engine: the compiled model (:class:`~imgcls.runtime.engines.Engine`); ``engine.name`` says which.
        provider: what really runs, e.g. ``CPUExecutionProvider`` or ``OpenVINO:CPU:bf16``.
        precision: ``fp32``, ``bf16``, ``int8`` or ``fp16``.
        model_file: the bundle-relative ONNX file in use.
        max_pixels: decoding limit applied by :meth:`decode` and :meth:`predict_paths`.
    """

    def __init__(
        self,
        bundle: Bundle,
        engine: Engine,
        *,
        model_file: str,
        model_bytes: bytes | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_webp: bool = True,
    ) -> None:
        self.bundle = bundle
        self.classes = bundle.classes
        self.input: InputSpec = bundle.input
        self.engine = engine
        self.precision = engine.precision
        self.model_file = model_file
        self.max_pixels = max_pixels
        self.allow_webp = allow_webp
        self.providers: list[str] = list(engine.providers)
        self.provider = self.providers[0]
        self.output_names = [o.name for o in engine.outputs]
        self._logits_name = self.output_names[0]
        # bundles with a drift reference export a second output: the PCA projection of the penultimate features
        self.embedding_output: str | None = "embedding" if "embedding" in self.output_names else None
        self._one_at_a_time = False  # a model with a static batch of 1 (set by the check)
        self._check_signature(model_metadata(model_bytes) if model_bytes is not None else {})

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | Bundle,
        *,
        engine: str = "onnxruntime",
        device: str = "auto",
        precision: str | None = None,
        intra_threads: int | None = None,
        inter_threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_webp: bool = True,
        spin: bool = True,
    ) -> Predictor:
        """Verify the bundle and compile its ONNX model for ``precision`` on ``engine``.

        Args:
            path: a bundle directory (or an already verified :class:`Bundle`).
            engine: ``onnxruntime``, ``openvino``, or ``auto``: the bundle's serving profile (``imgcls bench
                --pick``) when it agrees with ``precision`` and ``device``, else onnxruntime.
            device: ``cpu``; ``cuda`` / ``tensorrt`` (fail unless that provider really loads); ``auto`` (CUDA
                when it loads, else CPU). OpenVINO runs on the CPU.
            precision: ``fp32`` (model.onnx), ``bf16`` (model.onnx in bf16, OpenVINO), ``int8``
                (model.int8.onnx) or ``fp16`` (model.fp16.onnx); None: the profile's with ``auto``, else fp32.
            intra_threads: inference threads (default: the profile's with ``auto``, else the engine's own).
            inter_threads: onnxruntime threads across independent operators (default: onnxruntime's).
            max_pixels: largest image (width × height) :meth:`decode` accepts.
            allow_webp: decode WebP too (the default; JPEG and PNG always).
            spin: let idle inference threads spin-wait for the next call (fastest for back-to-back batches;
                a server turns it off so the spinning does not take CPU from its decoding and HTTP threads).

        Raises:
            BundleError: missing/tampered bundle, no export for ``precision``, external data, wrong input shape.
            DeviceError: ``cuda`` asked for but not usable, bf16 on a CPU without it.
            UsageError: an unknown engine, device or precision, a bad thread count.
            MissingExtraError: ``openvino`` asked for but not installed.
        """
        check_engine(engine, precision or "fp32", device)
        for flag, n in (("intra_threads", intra_threads), ("inter_threads", inter_threads)):
            if n is not None and n < 1:
                raise UsageError(f"{flag} must be at least 1, got {n}")
        if max_pixels < 1:
            raise UsageError(f"max_pixels must be positive, got {max_pixels}")
        bundle = path if isinstance(path, Bundle) else load_bundle(path)
        choice = resolve_engine(bundle, engine=engine, precision=precision, device=device, threads=intra_threads)
        model_file, model_bytes = load_model_bytes(bundle, choice.precision)
        compiled = create_engine(
            model_bytes,
            engine=choice.engine,
            precision=choice.precision,
            device=device,
            threads=choice.threads,
            inter_threads=inter_threads,
            spin=spin,
            label=str(bundle.path / model_file),
        )
        predictor = cls(
            bundle, compiled, model_file=model_file, model_bytes=model_bytes, max_pixels=max_pixels,
            allow_webp=allow_webp,
        )  # fmt: skip
        predictor.choice_reason = choice.reason
        logger.info(
            "loaded %s (%s) on %s %s (%s)", bundle.path / model_file, choice.precision, choice.engine,
            predictor.provider, choice.reason,
        )  # fmt: skip
        return predictor

    choice_reason: str = "asked for"

    def _check_signature(self, metadata: dict[str, str]) -> None:
        """The ONNX input/output shapes and embedded classes agree with the bundle.

        imgcls feeds one input, the normalised ``float32`` image batch: a model with other inputs, or one typed
        ``uint8``/``float16``, failed on the first image with an engine error (onnxruntime) or, OpenVINO casting
        the batch silently, answered on garbage.
        """
        names = [i.name for i in self.engine.inputs]
        if len(names) != 1:
            raise BundleError(
                f"{self.model_file} takes {len(names)} inputs ({', '.join(names)}); imgcls feeds a model one, "
                "the image batch",
                hint=f"re-export it with `imgcls export {self.bundle.path}`",
            )
        inp = self.engine.inputs[0]
        if inp.dtype is not None and inp.dtype != "float32":
            raise BundleError(
                f"{self.model_file} takes {inp.dtype} input {inp.name!r}; imgcls feeds it normalised float32 images "
                f"(N, {self.input.channels}, {self.input.size[0]}, {self.input.size[1]})",
                hint=f"re-export it with `imgcls export {self.bundle.path}` (its fp16 and int8 models keep float32 "
                "inputs)",
            )
        spec = self.input
        want = [spec.channels, spec.size[0], spec.size[1]]
        got = list(inp.shape[1:])
        if len(inp.shape) != 4 or any(isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)):
            raise BundleError(
                f"{self.model_file} expects input {list(inp.shape)}, but the bundle says "
                f"(N, {', '.join(map(str, want))})",
                hint=f"re-export it with `imgcls export {self.bundle.path}`",
            )
        static = inp.shape[0]
        if isinstance(static, int) and static != 1:
            raise BundleError(
                f"{self.model_file} takes batches of exactly {static} images; imgcls runs batches of any size "
                "(the files of a predict, what the server's batcher gathers)",
                hint=f"re-export it with a dynamic batch dimension: `imgcls export {self.bundle.path}`",
            )
        # a static batch of 1 (some exporters' default) ran one image fine and died of the engine's 'invalid
        # dimensions' on two: such a model is run image by image
        self._one_at_a_time = static == 1
        out = self.engine.outputs[0]
        k = out.shape[-1] if out.shape else None
        if isinstance(k, int) and k != len(self.classes):
            raise BundleError(
                f"{self.model_file} outputs {k} classes, but the bundle lists {len(self.classes)}",
                hint=f"re-export it with `imgcls export {self.bundle.path}`",
            )
        embedded = metadata.get("classes")
        if embedded is not None:
            try:
                same = json.loads(embedded) == self.classes
            except (ValueError, RecursionError):
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
            "engine": self.engine.name,
            "engine_version": self.engine.version,
            "precision": self.precision,
            "provider": self.provider,
            "threads": self.engine.threads,
            "classes": len(self.classes),
            "input": self.input.to_dict(),
        }

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (self.input.channels, *self.input.size):
            raise UsageError(
                f"batch has shape {batch.shape}; this model takes (N, {self.input.channels}, "
                f"{self.input.size[0]}, {self.input.size[1]})"
            )
        return batch

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Normalised ``float32`` ``(N, C, H, W)`` -> every output of the model by name (``logits`` first)."""
        batch = self._check_batch(batch)
        if batch.shape[0] == 0:
            return {o.name: np.zeros((0, *[d if isinstance(d, int) else 0 for d in o.shape[1:]]), np.float32)
                    for o in self.engine.outputs}  # fmt: skip
        out = self.run_engine(batch)
        self._check_scores(out[self._logits_name], len(batch))
        return out

    def run_engine(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The engine's outputs for a normalised contiguous ``float32`` ``batch``, unchecked: in one run, or image
        by image for a model with a static batch of 1 (what ``imgcls bench`` times as "model")."""
        if not self._one_at_a_time or len(batch) == 1:
            return self.engine.run(batch)
        runs = [self.engine.run(batch[i : i + 1]) for i in range(len(batch))]
        return {name: np.concatenate([np.asarray(r[name]) for r in runs]) for name in runs[0]}

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Normalised ``float32`` ``(N, C, H, W)`` -> raw ``float32`` logits ``(N, K)``."""
        batch = self._check_batch(batch)
        if batch.shape[0] == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self._check_scores(self.run_engine(batch)[self._logits_name], len(batch))

    def _check_scores(self, logits: Any, n: int) -> np.ndarray:
        """The model's scores as ``float32`` ``(n, classes)``; BundleError for any other shape.

        A model whose class dimension is dynamic (or not declared) passes the load-time check, so this is where a
        graph that gives 12 scores for a bundle of 10 classes is caught: labelled as it is, it died of an
        IndexError, or -- with fewer scores than classes -- answered as if the missing classes did not exist.
        """
        scores = np.asarray(logits, dtype=np.float32)
        if scores.shape != (n, len(self.classes)):
            raise BundleError(
                f"{self.model_file} gave scores of shape {tuple(scores.shape)} for {n} image(s), but the bundle "
                f"names {len(self.classes)} classes: expected ({n}, {len(self.classes)})",
                hint=f"the ONNX model does not belong to this bundle; re-export it with `imgcls export "
                f"{self.bundle.path}`",
            )
        return scores

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

    def infer_with_embedding(self, batch_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``uint8`` ``(N, H, W, C)`` -> (probabilities ``(N, K)``, embedding ``(N, k)`` or None), one model run."""
        if self.embedding_output is None or len(batch_u8) == 0:
            return self.infer_prepared(batch_u8), None
        out = self.outputs(self.to_input(batch_u8))  # the scores' shape is checked there
        logits = np.asarray(out[self._logits_name], dtype=np.float32)
        return softmax(logits), np.asarray(out[self.embedding_output], dtype=np.float32)

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
