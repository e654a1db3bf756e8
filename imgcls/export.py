"""torch -> ONNX with gates: fp32 parity, int8 static quantization (QDQ), fp16 for GPU serving.

Everything is built and checked in a temporary directory first; only when every requested gate passes are
the model files and the ``export`` section swapped into the bundle at once (:func:`imgcls.bundle.edit_bundle`).
A failed gate raises :class:`~imgcls.errors.GateError` and leaves the bundle exactly as it was.

Gates, on real images (the bundle's dataset rebuilt from its lineage, else ``samples/*.npz`` saved in the
bundle at train time):

* fp32: torch vs onnxruntime at batch 1 and batch 32, max |Δlogit| ≤ 1e-4 and 100 % top-1 agreement;
* int8: static QDQ quantization calibrated on ``calib_size`` training images; validation top-1 may drop
  at most 1.0 point below the fp32 ONNX model's;
* fp16 (float16 weights and activations, float32 inputs/outputs): fp16 keeps ~3 significant digits, so the
  tolerance is looser: max |Δlogit| ≤ 1 % of the largest |logit| (at least 0.01) and ≥ 99 % top-1 agreement.

Example:
    report = export_bundle("runs/digits-resnet8", int8=True)
    print(report.section.models["int8"].top1_drop_points)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import (
    WEIGHTS,
    Bundle,
    ExportedModel,
    ExportSection,
    Lineage,
    check_editable,
    edit_bundle,
    load_bundle,
    sha256_file,
)
from imgcls.data.transform import normalize
from imgcls.deps import require
from imgcls.errors import ConflictError, GateError, ImgclsError, UsageError
from imgcls.runtime.onnxfile import MODEL_FILES, external_data_tensors

logger = logging.getLogger(__name__)

FP32_MAX_ABS_DIFF = 1e-4
FP32_MIN_AGREEMENT = 1.0
INT8_MAX_TOP1_DROP_POINTS = 1.0
FP16_MAX_REL_DIFF = 0.01  # of max(1, largest |logit|)
FP16_MIN_AGREEMENT = 0.99
EMBEDDING_MAX_REL_DIFF = 1e-3  # fp32 graph vs torch, of max(1, the projection's std)
DEFAULT_CALIB_SIZE = 256
PARITY_BATCH1_IMAGES = 64  # images run one at a time (batch 1)
PARITY_IMAGES = 256  # images run in batches of 32
MAX_EVAL_IMAGES = 10_000  # validation images for the accuracy figures
SAMPLES = {"train": "samples/train.npz", "val": "samples/val.npz"}


@dataclass
class EvalData:
    """Real images to check an export on: uint8 (N, H, W, C) prepared by the evaluation transform."""

    val_images: np.ndarray
    val_labels: np.ndarray | None
    train_images: np.ndarray | None  # calibration images for int8
    source: str  # where the validation images come from
    calib_source: str  # where the calibration images come from


@dataclass
class ExportReport:
    """What an export wrote: the bundle, the new ``export`` section and the model files."""

    bundle: Path
    section: ExportSection
    files: list[str] = field(default_factory=list)


# --- real images for the gates ---------------------------------------------------------------------------


def lineage_data(lineage: Lineage) -> tuple[dict[str, Any], int] | None:
    """The data config and seed training used, from the lineage (``config`` = the resolved run config)."""
    config = lineage.config
    if config is not None and isinstance(config.get("data"), dict):
        train = config.get("train")
        seed = train.get("seed", 0) if isinstance(train, dict) else 0
        return dict(config["data"]), int(seed or 0)
    extra = lineage.model_extra or {}  # hand-made bundles: lineage.data + lineage.seed
    if isinstance(extra.get("data"), dict):
        return dict(extra["data"]), int(extra.get("seed", 0) or 0)
    return None


def _from_dataset(bundle: Bundle) -> EvalData | None:
    """Rebuild the bundle's dataset from its lineage when the data is at hand (never downloads)."""
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset

    lineage = bundle.meta.lineage
    found = lineage_data(lineage)
    if found is None:
        return None
    data, seed = found
    try:
        cfg = DataConfig.model_validate({**data, "download": False})
        ds = load_dataset(cfg, seed=seed)
    except (ImgclsError, OSError, ValueError) as exc:
        logger.info("dataset of %s not at hand (%s); looking for samples in the bundle", bundle.path, exc)
        return None
    if ds.input.size != bundle.input.size or ds.input.channels != bundle.input.channels:
        logger.info("rebuilt dataset has another input shape than the bundle; ignoring it")
        return None
    want = lineage.dataset.fingerprint if lineage.dataset is not None else None
    if want and want != ds.fingerprint:
        logger.info("rebuilt dataset differs from the one trained on (fingerprint); ignoring it")
        return None
    return EvalData(
        ds.val.images,
        ds.val.labels,
        ds.train.images,
        f"dataset {ds.name} (val split)",
        f"dataset {ds.name} (train split)",
    )


def _load_npz(bundle: Bundle, rel: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    if not bundle.has(rel):
        return None
    try:
        with np.load(bundle.file(rel), allow_pickle=False) as z:
            images = z["images"] if "images" in z else z["x"]
            labels = z["labels"] if "labels" in z else z.get("y")
            images, labels = np.asarray(images), None if labels is None else np.asarray(labels)
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{bundle.path / rel} is not a readable samples file ({exc})") from None
    spec = bundle.input
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*spec.size, spec.channels):
        raise UsageError(
            f"{bundle.path / rel} holds {images.dtype} {images.shape}; expected uint8 (N, {spec.size[0]}, "
            f"{spec.size[1]}, {spec.channels}) prepared images"
        )
    return images, None if labels is None else labels.astype(np.int64)


def evaluation_data(bundle: Bundle) -> EvalData:
    """Real images for the gates: the dataset when at hand, else the samples saved in the bundle.

    Raises:
        UsageError: neither is available.
    """
    found = _from_dataset(bundle)
    if found is not None:
        return found
    val = _load_npz(bundle, SAMPLES["val"])
    train = _load_npz(bundle, SAMPLES["train"])
    if val is not None:
        calib_source = f"bundle {SAMPLES['train']}" if train else f"bundle {SAMPLES['val']}"
        return EvalData(val[0], val[1], train[0] if train else None, f"bundle {SAMPLES['val']}", calib_source)
    raise UsageError(
        f"no real images to check the export of {bundle.path} on: its dataset is not at hand and it holds no "
        f"{SAMPLES['val']}",
        hint="make the training dataset available (see bundle.json's lineage), or re-train with `imgcls train`, "
        "which saves sample images into the bundle",
    )


# --- export and gates ------------------------------------------------------------------------------------


def _torch_logits(model: Any, x: np.ndarray, batch: int) -> np.ndarray:
    torch = require("torch")
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(model(torch.from_numpy(x[i : i + batch])).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _ort_logits(session: Any, x: np.ndarray, batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


def _session(model_bytes: bytes) -> Any:
    from imgcls.runtime.ort import make_session

    return make_session(model_bytes, "cpu", label="the exported model")


def _compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    return {
        "images": len(reference),
        "max_abs_logit_diff": float(np.abs(reference - candidate).max()),
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).mean()),
    }


def _top1(session: Any, x: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or not len(labels):
        return None
    return float((_ort_logits(session, x, 64).argmax(1) == labels).mean())


def _to_onnx(model: Any, bundle: Bundle, opset: int | None, work: Path, *, with_embedding: bool = False) -> bytes:
    """torch.onnx dynamo export, self-contained, dynamic batch, metadata embedded, onnx.checker'd."""
    torch = require("torch")
    onnx = require("onnx", feature="imgcls export")
    spec = bundle.input
    example = torch.zeros(2, spec.channels, *spec.size)
    raw = work / "raw.onnx"
    kwargs: dict[str, Any] = {"opset_version": opset} if opset is not None else {}
    try:
        torch.onnx.export(
            model,
            (example,),
            str(raw),
            dynamo=True,
            external_data=False,
            verbose=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            input_names=["images"],
            output_names=["logits", "embedding"] if with_embedding else ["logits"],
            **kwargs,
        )
    except Exception as exc:  # the exporter raises many types; the user needs the summary line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImgclsError(
            f"torch.onnx.export failed for {bundle.model['arch']}: {first[:300]}",
            hint="try another --opset, or run with --verbose for the exporter's report",
        ) from exc
    proto = onnx.load(str(raw), load_external_data=False)
    meta = {
        "classes": json.dumps(bundle.classes),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "size": json.dumps(list(spec.size)),
        "channels": str(spec.channels),
        "interpolation": spec.interpolation,
        "input_layout": "NCHW float32, normalised: (x / 255 - mean) / std",
        "bundle_name": bundle.name,
        "weights_sha256": bundle.files[WEIGHTS],
        "arch": str(bundle.model["arch"]),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"imgcls bundle {bundle.name}: {bundle.model['arch']}, {len(bundle.classes)} classes"
    data = proto.SerializeToString()
    try:
        onnx.checker.check_model(onnx.load_model_from_string(data), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ImgclsError(f"the exported ONNX model does not pass onnx.checker: {str(exc)[:300]}") from None
    if external_data_tensors(data):
        raise ImgclsError("the exporter wrote external data although external_data=False was asked")
    return data


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


class _Calibration:
    """onnxruntime CalibrationDataReader over normalised images, in batches."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 32) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: x[i : i + batch]} for i in range(0, len(x), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _quantize_int8(fp32: bytes, calib: np.ndarray, work: Path) -> bytes:
    """Static QDQ quantization (uint8 activations, int8 per-channel 7-bit-range weights) after quant_pre_process."""
    quantization = require("onnxruntime.quantization", feature="imgcls export --int8")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, pre, out = work / "fp32.onnx", work / "pre.onnx", work / "int8.onnx"
    src.write_bytes(fp32)
    with _quiet_root_logger():  # onnxruntime.quantization warns on the root logger about unfused BatchNorms
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(pre),
            str(out),
            _Calibration("images", calib),
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: without it the u8×s8 kernels saturate their int16 sums on x86 and a CIFAR-stem
            # ResNet-18 lost ~10 top-1 points here; with it, 0.3 points at the same speed.
            reduce_range=True,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            use_external_data_format=False,
            # the embedding projection stays float: quantized, its output fell on a grid of ~6 % of its spread
            # (digits), a shift the drift tests would see as drift between the fp32 reference and int8 traffic
            nodes_to_exclude=_embedding_nodes(pre),
        )
    data = out.read_bytes()
    if external_data_tensors(data):
        raise ImgclsError("the int8 model came out with external data")
    return data


def _embedding_nodes(path: Path) -> list[str]:
    """Names of the nodes between the penultimate features and the ``embedding`` output (Sub, MatMul)."""
    onnx = require("onnx")
    graph = onnx.load(str(path), load_external_data=False).graph
    if not any(o.name == "embedding" for o in graph.output):
        return []
    logits_inputs = {i for n in graph.node if "logits" in n.output for i in n.input}
    producer = {o: n for n in graph.node for o in n.output}
    names, todo = [], ["embedding"]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in names:
            continue
        names.append(node.name)
        todo.extend(i for i in node.input if i not in logits_inputs)
    return names


def _convert_fp16(fp32: bytes) -> bytes:
    onnx = require("onnx", feature="imgcls export --fp16")
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load_model_from_string(fp32), keep_io_types=True)
    return proto.SerializeToString()


@dataclass
class _Built:
    """One precision's ONNX file, its ``export.models`` entry and the gate failures it met."""

    blob: bytes
    entry: dict[str, Any]
    failures: list[str]


@dataclass
class _Context:
    """What every precision's export is checked against."""

    model: Any  # the torch model
    data: EvalData
    val_x: np.ndarray
    val_y: np.ndarray | None
    parity_x: np.ndarray
    torch_b1: np.ndarray
    torch_b32: np.ndarray
    torch_embedding: np.ndarray | None  # the reference's projection of parity_x (None: no drift reference)
    spec: Any = None  # the bundle's InputSpec


def _embedding_check(ctx: _Context, session: Any) -> dict[str, float] | None:
    """How far the graph's ``embedding`` output is from the torch projection (None without one)."""
    if ctx.torch_embedding is None:
        return None
    name = session.get_inputs()[0].name
    emb = np.concatenate(
        [session.run(["embedding"], {name: ctx.parity_x[i : i + 32]})[0] for i in range(0, len(ctx.parity_x), 32)]
    )
    spread = float(ctx.torch_embedding.std()) or 1.0
    diff = np.abs(emb - ctx.torch_embedding)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "reference_std": spread}


def export_fp32(ctx: _Context, bundle: Bundle, graph_model: Any, opset: int | None, work: Path) -> _Built:
    """``model.onnx``: the dynamo export, gated on logit parity with torch at batch 1 and 32."""
    fp32 = _to_onnx(graph_model, bundle, opset, work, with_embedding=ctx.torch_embedding is not None)
    session = _session(fp32)
    parity = {
        "batch_1": _compare(ctx.torch_b1, _ort_logits(session, ctx.parity_x[:PARITY_BATCH1_IMAGES], 1)),
        "batch_32": _compare(ctx.torch_b32, _ort_logits(session, ctx.parity_x, 32)),
    }
    entry: dict[str, Any] = {
        "file": MODEL_FILES["fp32"],
        "parity": parity,
        "tolerance": {"max_abs_logit_diff": FP32_MAX_ABS_DIFF, "min_top1_agreement": FP32_MIN_AGREEMENT},
        "val_top1": _top1(session, ctx.val_x, ctx.val_y),
    }
    failures = []
    for name, p in parity.items():
        if p["max_abs_logit_diff"] > FP32_MAX_ABS_DIFF or p["top1_agreement"] < FP32_MIN_AGREEMENT:
            failures.append(
                f"fp32 parity at {name.replace('_', ' ')}: max |Δlogit| {p['max_abs_logit_diff']:.2e} "
                f"(≤ {FP32_MAX_ABS_DIFF:.0e}), top-1 agreement {p['top1_agreement']:.2%} (100 %)"
            )
    emb = _embedding_check(ctx, session)
    if emb is not None:
        entry["embedding_parity"] = emb
        if emb["max_abs_diff"] > EMBEDDING_MAX_REL_DIFF * max(1.0, emb["reference_std"]):
            failures.append(f"fp32 embedding output: max |Δ| {emb['max_abs_diff']:.2e} from the torch projection")
    return _Built(fp32, entry, failures)


def export_int8(ctx: _Context, fp32: bytes, fp32_top1: float | None, calib_size: int, seed: int, work: Path) -> _Built:
    """``model.int8.onnx``: static QDQ quantization of the fp32 graph, gated on the validation top-1 drop."""
    spec_x = _calibration_images(ctx.data, calib_size, seed)
    int8_bytes = _quantize_int8(fp32, normalize(spec_x, ctx.spec), work)
    session = _session(int8_bytes)
    int8_top1 = _top1(session, ctx.val_x, ctx.val_y)
    assert fp32_top1 is not None and int8_top1 is not None
    n = len(ctx.val_x)
    if n * INT8_MAX_TOP1_DROP_POINTS < 100:  # one image more or less right is over the tolerance
        logger.warning(
            "the int8 gate measures top-1 on only %d validation image(s) of %s: one image moves it by %.1f points, "
            "more than the %g it allows, so its pass says little; give it more (a larger data.val_fraction at "
            "training, or the dataset at hand) before serving int8",
            n, ctx.data.source, 100.0 / n, INT8_MAX_TOP1_DROP_POINTS,
        )  # fmt: skip
    drop = round((fp32_top1 - int8_top1) * 100.0, 4)
    entry: dict[str, Any] = {
        "file": MODEL_FILES["int8"],
        "quantization": {
            "method": "static",
            "format": "QDQ",
            "activations": "uint8",
            "weights": "int8, per channel, reduced (7-bit) range",
            "calibration": "minmax",
            "calib_images": len(spec_x),
            "calib_source": ctx.data.calib_source,
        },
        "val_top1": int8_top1,
        "fp32_val_top1": fp32_top1,
        "top1_drop_points": drop,
        "tolerance": {"max_top1_drop_points": INT8_MAX_TOP1_DROP_POINTS},
    }
    emb = _embedding_check(ctx, session)
    if emb is not None:
        entry["embedding_parity"] = emb  # recorded, not gated: quantization moves it by a fraction of its spread
    failures = []
    if drop > INT8_MAX_TOP1_DROP_POINTS:
        failures.append(
            f"int8 top-1 {int8_top1:.2%} vs fp32 {fp32_top1:.2%}: a drop of {drop:.2f} points "
            f"(≤ {INT8_MAX_TOP1_DROP_POINTS})"
        )
    return _Built(int8_bytes, entry, failures)


def export_fp16(ctx: _Context, fp32: bytes) -> _Built:
    """``model.fp16.onnx``: float16 weights and activations, gated on a looser logit parity."""
    fp16_bytes = _convert_fp16(fp32)
    session = _session(fp16_bytes)
    cmp = _compare(ctx.torch_b32, _ort_logits(session, ctx.parity_x, 32))
    allowed = FP16_MAX_REL_DIFF * max(1.0, float(np.abs(ctx.torch_b32).max()))
    entry = {
        "file": MODEL_FILES["fp16"],
        "parity": {"batch_32": cmp},
        "tolerance": {
            "max_abs_logit_diff": allowed,
            "rule": f"{FP16_MAX_REL_DIFF} × max(1, largest |logit|)",
            "min_top1_agreement": FP16_MIN_AGREEMENT,
        },
        "val_top1": _top1(session, ctx.val_x, ctx.val_y),
        "checked_on": session.get_providers()[0],
    }
    failures = []
    if cmp["max_abs_logit_diff"] > allowed or cmp["top1_agreement"] < FP16_MIN_AGREEMENT:
        failures.append(
            f"fp16 parity: max |Δlogit| {cmp['max_abs_logit_diff']:.2e} (≤ {allowed:.2e}), "
            f"top-1 agreement {cmp['top1_agreement']:.2%} (≥ {FP16_MIN_AGREEMENT:.0%})"
        )
    return _Built(fp16_bytes, entry, failures)


def export_bundle(
    bundle_dir: str | Path,
    *,
    int8: bool = False,
    fp16: bool = False,
    opset: int | None = None,
    calib_size: int = DEFAULT_CALIB_SIZE,
    seed: int = 0,
) -> ExportReport:
    """Export a bundle's model to ONNX, run the gates, and swap the files into the bundle atomically.

    A bundle with a drift reference gets graphs with a second output, ``embedding``: the penultimate features
    projected onto the reference's PCA components (:mod:`imgcls.drift.reference`).

    Args:
        bundle_dir: the bundle directory.
        int8: also write ``model.int8.onnx`` (static QDQ quantization, top-1 drop gate).
        fp16: also write ``model.fp16.onnx`` (for GPU serving, looser parity tolerance).
        opset: ONNX opset (default: the exporter's).
        calib_size: training images used to calibrate int8.
        seed: picks the calibration images.

    Raises:
        GateError: a gate failed; the bundle is unchanged.
        UsageError: bad arguments or no real images to check on.
        BundleError: the bundle is missing or fails verification.
    """
    if opset is not None and not 7 <= opset <= 30:
        raise UsageError(f"--opset {opset} is out of range", hint="use an opset between 17 and 23, or leave it out")
    if calib_size < 1:
        raise UsageError(f"--calib-size must be at least 1, got {calib_size}")
    bundle = load_bundle(bundle_dir)
    check_editable(bundle.path, "imgcls export")  # a read-only bundle failed after the whole export, not before
    spec = bundle.input
    data = evaluation_data(bundle)  # before the heavy imports: a usage error comes fast
    if int8 and data.val_labels is None:
        raise UsageError(f"--int8 needs labelled validation images; {data.source} has no labels")
    torch = require("torch", feature="imgcls export")
    onnx = require("onnx", feature="imgcls export")
    import onnxruntime

    from imgcls.drift.reference import projection
    from imgcls.models.features import embedding_module
    from imgcls.models.io import load_model

    model = load_model(bundle)
    val_x = normalize(data.val_images[:MAX_EVAL_IMAGES], spec)
    val_y = None if data.val_labels is None else data.val_labels[:MAX_EVAL_IMAGES]
    parity_x = val_x[:PARITY_IMAGES]
    pca = projection(bundle)
    graph_model = model if pca is None else embedding_module(model, *pca)
    torch_embedding = None
    if pca is not None:
        with torch.inference_mode():
            torch_embedding = graph_model(torch.from_numpy(parity_x))[1].numpy()
    ctx = _Context(
        model,
        data,
        val_x,
        val_y,
        parity_x,
        _torch_logits(model, parity_x[:PARITY_BATCH1_IMAGES], 1),
        _torch_logits(model, parity_x, 32),
        torch_embedding,
        spec,
    )
    built: dict[str, _Built] = {}
    with tempfile.TemporaryDirectory(prefix="imgcls-export-") as tmp:
        work = Path(tmp)
        built["fp32"] = fp32 = export_fp32(ctx, bundle, graph_model, opset, work)
        if int8 and not fp32.failures:
            built["int8"] = export_int8(ctx, fp32.blob, fp32.entry["val_top1"], calib_size, seed, work)
        if fp16 and not fp32.failures:
            built["fp16"] = export_fp16(ctx, fp32.blob)
    failures = [f for b in built.values() for f in b.failures]
    if failures:
        if failures[0].startswith("int8"):
            hint = "serve the fp32 model (export without --int8), or calibrate on more images (--calib-size)"
        else:
            hint = (
                "the ONNX graph computes something else than the torch model: look for random or data-dependent "
                "ops in forward() (run with --verbose), or try another --opset"
            )
        raise GateError(
            f"export of {bundle.path} failed its gate: " + "; ".join(failures) + "; the bundle was not changed",
            hint=hint,
        )

    proto = onnx.load_model_from_string(fp32.blob)
    section = ExportSection(
        exporter="torch.onnx.export(dynamo=True)",
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        onnxruntime_version=onnxruntime.__version__,
        input_name="images",
        output_name="logits",
        embedding_output=None if pca is None else "embedding",
        dynamic_batch=True,
        weights_sha256=bundle.files[WEIGHTS],
        checked_on={"source": data.source, "val_images": len(val_x), "parity_images": len(parity_x)},
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        models={precision: ExportedModel.model_validate(b.entry) for precision, b in built.items()},
    )
    written = [MODEL_FILES[p] for p in built]
    with edit_bundle(bundle.path) as edit:
        if sha256_file(edit.stage / WEIGHTS) != bundle.files[WEIGHTS]:
            raise ConflictError(f"{bundle.path} changed while it was being exported", hint="export it again")
        kept = _untouched_precisions(edit.meta.export, edit.files, weights=bundle.files[WEIGHTS], redone=set(built))
        for precision, b in built.items():
            edit.write(MODEL_FILES[precision], b.blob)
        for rel in set(MODEL_FILES.values()) - set(written) - {m.file for m in kept.values()}:
            edit.remove(rel)
        section.models = {p: section.models.get(p) or kept[p] for p in MODEL_FILES if p in section.models or p in kept}
        edit.meta.export = section
    return ExportReport(bundle=bundle.path, section=section, files=written)


def _untouched_precisions(
    previous: ExportSection | None, files: list[str], *, weights: str, redone: set[str]
) -> dict[str, ExportedModel]:
    """Precisions exported before and not redone now: kept when they were exported from these same weights."""
    if previous is None or previous.weights_sha256 != weights:
        return {}
    return {p: m for p, m in previous.models.items() if p not in redone and m.file in files}


def _calibration_images(data: EvalData, calib_size: int, seed: int) -> np.ndarray:
    pool = data.train_images if data.train_images is not None else data.val_images
    if data.train_images is None:
        logger.warning("no training images at hand: calibrating int8 on validation images")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(pool))[:calib_size]
    return pool[np.sort(idx)]
