"""imgcls.runtime.Predictor on hand-built ONNX models (no torch): providers, verification, batching, top-k, and
the proof that the runtime feeds the model exactly what training evaluates on."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from imgcls.bundle import InputSpec, write_manifest
from imgcls.errors import BundleError, DeviceError, ImageError, UsageError
from imgcls.runtime import Prediction, Predictor, external_data_tensors, softmax

ROOT = Path(__file__).resolve().parents[2]
SPEC = InputSpec(size=(6, 5), channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
CLASSES = ["cat", "dog", "bird", "fish"]


def linear_model(spec: InputSpec, k: int, seed: int = 0, *, classes: list[str] | None = None) -> onnx.ModelProto:
    """images (N, C, H, W) -> Flatten -> MatMul + Add -> logits (N, k)."""
    rng = np.random.default_rng(seed)
    d = spec.channels * spec.size[0] * spec.size[1]
    w = numpy_helper.from_array(rng.normal(0, 0.5, (d, k)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (k,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    return _model(nodes, [w, b], spec, k, classes)


def identity_model(spec: InputSpec) -> onnx.ModelProto:
    """logits = the flattened input: what the session was fed, value for value."""
    d = spec.channels * spec.size[0] * spec.size[1]
    return _model([helper.make_node("Flatten", ["images"], ["logits"], axis=1)], [], spec, d, None)


def _model(nodes: list, inits: list, spec: InputSpec, k: int, classes: list[str] | None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", spec.channels, *spec.size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    if classes is not None:
        helper.set_model_props(model, {"classes": json.dumps(classes)})
    onnx.checker.check_model(model)
    return model


def make_bundle(
    root: Path,
    models: dict[str, onnx.ModelProto],
    *,
    spec: InputSpec = SPEC,
    classes: list[str] = CLASSES,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A bundle holding only ONNX files (enough for the runtime): precision -> model."""
    from imgcls.runtime import MODEL_FILES

    root.mkdir(parents=True, exist_ok=True)
    files = []
    for precision, proto in models.items():
        (root / MODEL_FILES[precision]).write_bytes(proto.SerializeToString())
        files.append(MODEL_FILES[precision])
    for rel, data in (extra or {}).items():
        (root / rel).write_bytes(data)
        files.append(rel)
    meta = {
        "name": "handmade",
        "classes": classes,
        "input": spec.to_dict(),
        "model": {"arch": "handmade"},
        "export": {"models": {p: {"file": MODEL_FILES[p]} for p in models}},
    }
    write_manifest(root, meta, files)
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_bundle(
        tmp_path / "b", {"fp32": linear_model(SPEC, 4, classes=CLASSES), "int8": linear_model(SPEC, 4, 1)}
    )


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def rand_image(seed: int, size: tuple[int, int] = (17, 11), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


# --- providers ---------------------------------------------------------------------------------------------


def _cuda_really_loads() -> bool:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    sess = ort.InferenceSession(
        linear_model(SPEC, 4).SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    return "CUDAExecutionProvider" in sess.get_providers()


def test_cpu_device_runs_on_the_cpu_provider(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, device="cpu")
    assert p.provider == "CPUExecutionProvider"
    assert p.describe()["provider"] == "CPUExecutionProvider"


def test_silent_cuda_fallback_is_detected(bundle: Path) -> None:
    """onnxruntime-gpu lists CUDA without a GPU and falls back silently; the Predictor reports the truth."""
    import onnxruntime as ort

    if _cuda_really_loads():
        pytest.skip("CUDA loads here: the fallback case needs a machine without a usable GPU")
    auto = Predictor.from_bundle(bundle, device="auto")
    assert auto.provider == "CPUExecutionProvider"
    assert "CUDAExecutionProvider" not in auto.providers
    with pytest.raises(DeviceError) as info:
        Predictor.from_bundle(bundle, device="cuda")
    assert info.value.exit_code == 2
    assert "cuda" in info.value.message.lower() and "--device cpu" in (info.value.hint or "")
    from imgcls.runtime.ort import cuda_driver_loads

    if not cuda_driver_loads():  # e.g. the serve-gpu image without --gpus: name the driver and the container fix
        assert "libcuda.so.1" in info.value.message
        assert "docker run --gpus all" in (info.value.hint or "")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # the raw onnxruntime behaviour the Predictor guards against: asked for CUDA, silently on CPU
        raw = ort.InferenceSession(
            (bundle / "model.onnx").read_bytes(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
        )
        assert raw.get_providers() == ["CPUExecutionProvider"]
        assert "fell back" in info.value.message


def test_cuda_provider_used_when_it_loads(bundle: Path) -> None:
    if not _cuda_really_loads():
        pytest.skip("no usable CUDA for onnxruntime here")
    assert Predictor.from_bundle(bundle, device="cuda").provider == "CUDAExecutionProvider"
    assert Predictor.from_bundle(bundle, device="auto").provider == "CUDAExecutionProvider"


def test_onnxruntime_noise_is_silenced(bundle: Path) -> None:
    code = (
        "from imgcls.runtime import Predictor; import sys\n"
        f"p = Predictor.from_bundle({str(bundle)!r}, device='auto')\n"
        "print(p.provider)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_thread_counts_are_applied_and_checked(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, device="cpu", intra_threads=1, inter_threads=1)
    assert p.infer(np.zeros((2, 3, 6, 5), np.float32)).shape == (2, 4)
    with pytest.raises(UsageError, match="intra_threads"):
        Predictor.from_bundle(bundle, intra_threads=0)


@pytest.mark.parametrize(("kwargs", "match"), [({"device": "tpu"}, "device"), ({"precision": "int4"}, "precision")])
def test_unknown_device_or_precision_is_a_usage_error(bundle: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Predictor.from_bundle(bundle, **kwargs)


# --- verification ------------------------------------------------------------------------------------------


def test_tampered_model_onnx_is_refused(bundle: Path) -> None:
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="failed verification") as info:
        Predictor.from_bundle(bundle)
    assert info.value.exit_code == 2


def test_missing_precision_names_the_export_command(tmp_path: Path) -> None:
    only_fp32 = make_bundle(tmp_path / "b", {"fp32": linear_model(SPEC, 4)})
    with pytest.raises(BundleError) as info:
        Predictor.from_bundle(only_fp32, precision="int8")
    assert "int8" in info.value.message
    assert f"imgcls export {only_fp32} --int8" in (info.value.hint or "")


def test_model_with_external_data_is_refused_even_with_valid_hashes(tmp_path: Path) -> None:
    from onnx.external_data_helper import convert_model_to_external_data

    model = linear_model(SPEC, 4)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    root = tmp_path / "ext"
    root.mkdir()
    onnx.save_model(model, str(root / "model.onnx"))  # writes model.onnx.data beside it
    assert (root / "model.onnx.data").is_file()
    meta = {"name": "ext", "classes": CLASSES, "input": SPEC.to_dict(), "model": {"arch": "x"}}
    write_manifest(root, meta, ["model.onnx", "model.onnx.data"])
    with pytest.raises(BundleError, match="external data"):
        Predictor.from_bundle(root)


def test_external_data_is_found_in_initializers_and_attributes() -> None:
    from onnx.external_data_helper import convert_model_to_external_data

    assert external_data_tensors(linear_model(SPEC, 4).SerializeToString()) == 0
    model = linear_model(SPEC, 4)
    convert_model_to_external_data(model, location="x.data", size_threshold=0)
    assert external_data_tensors(model.SerializeToString()) == 2
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((64, 64), np.float32)))
    graph = helper.make_graph(
        [const, helper.make_node("Identity", ["c"], ["out"])],
        "g",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [64, 64])],
    )
    with_attr = helper.make_model(graph)
    convert_model_to_external_data(with_attr, location="y.data", size_threshold=0, convert_attribute=True)
    assert external_data_tensors(with_attr.SerializeToString()) == 1
    with pytest.raises(ValueError):
        external_data_tensors(b"\x0a\xff\xff\xff")  # a length running past the end


def test_input_shape_mismatch_is_refused(tmp_path: Path) -> None:
    other = InputSpec(size=(8, 8), channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    root = make_bundle(tmp_path / "b", {"fp32": linear_model(other, 4)}, spec=SPEC)
    with pytest.raises(BundleError, match="expects input"):
        Predictor.from_bundle(root)


def test_embedded_class_names_must_match_the_bundle(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", {"fp32": linear_model(SPEC, 4, classes=["a", "b", "c", "d"])})
    with pytest.raises(BundleError, match="class names"):
        Predictor.from_bundle(root)


def undeclared_scores_model(spec: InputSpec, k: int) -> onnx.ModelProto:
    """linear_model with its scores reshaped to (1, -1) and a dynamic declared output shape: what the graph computes per
    image shows only when it runs (k scores for one image, n*k in one row for a batch of n)."""
    model = linear_model(spec, k)
    graph = model.graph
    graph.node[-1].output[0] = "raw"
    graph.node.append(helper.make_node("Reshape", ["raw", "row"], ["logits"]))
    graph.initializer.append(numpy_helper.from_array(np.array([1, -1], np.int64), "row"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", "scores"]))
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("k", [6, 3], ids=["more-scores-than-classes", "fewer-scores-than-classes"])
def test_a_model_giving_another_number_of_scores_than_classes_is_a_clear_error(tmp_path: Path, k: int) -> None:
    """The class dimension is only known at run time: predict labelled 6 scores with 4 classes (IndexError) and
    3 scores as if the fourth class did not exist (a wrong answer, exit 0)."""
    root = make_bundle(tmp_path / "b", {"fp32": undeclared_scores_model(SPEC, k)})
    (tmp_path / "x.png").write_bytes(png(rand_image(0)))
    predictor = Predictor.from_bundle(root, device="cpu")
    with pytest.raises(BundleError, match=rf"shape \(1, {k}\) for 1 image\(s\), but the bundle names 4 classes"):
        list(predictor.predict_paths([tmp_path / "x.png"]))
    run = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", "-m", str(root), str(tmp_path / "x.png"), "-f", "json"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""  # no label at all rather than a wrong one
    assert f"gave scores of shape (1, {k})" in run.stderr and "re-export it" in run.stderr
    assert "Traceback" not in run.stderr and "unexpected" not in run.stderr


def test_a_model_that_mixes_the_images_of_a_batch_is_a_clear_error(tmp_path: Path) -> None:
    """One row for a batch of two: each image's prediction would be read from the other's scores."""
    root = make_bundle(tmp_path / "b", {"fp32": undeclared_scores_model(SPEC, 4)})
    predictor = Predictor.from_bundle(root, device="cpu")
    assert predictor.predict_images([rand_image(0)], top_k=1)[0].label in CLASSES  # one image: (1, 4), fine
    with pytest.raises(BundleError, match=r"shape \(1, 8\) for 2 image\(s\)"):
        predictor.predict_images([rand_image(0), rand_image(1)])


def typed_input_model(spec: InputSpec, k: int, elem_type: int) -> onnx.ModelProto:
    """linear_model whose input is ``elem_type`` (cast to float inside, as an exporter of raw pixels does)."""
    model = linear_model(spec, k)
    graph = model.graph
    graph.input[0].type.tensor_type.elem_type = elem_type
    graph.input[0].name = "pixels"
    graph.node.insert(0, helper.make_node("Cast", ["pixels"], ["images"], to=TensorProto.FLOAT))
    onnx.checker.check_model(model)
    return model


def two_input_model(spec: InputSpec, k: int) -> onnx.ModelProto:
    """linear_model with a second input added to its logits (a mask, a temperature: anything imgcls does not feed)."""
    model = linear_model(spec, k)
    graph = model.graph
    graph.node[-1].output[0] = "raw"
    graph.node.append(helper.make_node("Add", ["raw", "bias"], ["logits"]))
    graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, ["batch", k]))
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: typed_input_model(SPEC, 4, TensorProto.UINT8), "takes uint8 input 'pixels'; imgcls feeds it"),
        (lambda: typed_input_model(SPEC, 4, TensorProto.FLOAT16), "takes float16 input 'pixels'"),
        (lambda: two_input_model(SPEC, 4), r"takes 2 inputs \(images, bias\)"),
    ],
    ids=["uint8", "float16", "two-inputs"],
)  # fmt: skip
def test_a_model_with_inputs_imgcls_does_not_feed_is_refused_when_it_loads(
    tmp_path: Path, model: object, message: str, engine: str
) -> None:
    """onnxruntime failed on the first image ('unexpected InvalidArgument', exit 1, 'report it'); OpenVINO cast the
    normalised batch to uint8 silently and answered on garbage."""
    pytest.importorskip(engine)
    root = make_bundle(tmp_path / "b", {"fp32": model()})  # type: ignore[operator]
    (tmp_path / "x.png").write_bytes(png(rand_image(0)))
    run = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", "-m", str(root), str(tmp_path / "x.png"), "--engine", engine],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""
    import re

    assert re.search(message, run.stderr), run.stderr
    assert "re-export it" in run.stderr and "unexpected" not in run.stderr and "Traceback" not in run.stderr


def test_float32_inputs_are_what_both_engines_report() -> None:
    """The element type each engine reports for imgcls' own models: the check above must not refuse them."""
    from imgcls.runtime.engines import create_engine

    data = linear_model(SPEC, 4).SerializeToString()
    for engine in ("onnxruntime", "openvino"):
        pytest.importorskip(engine)
        compiled = create_engine(data, engine=engine, precision="fp32", device="cpu")
        assert [(i.name, i.dtype) for i in compiled.inputs] == [("images", "float32")]
        assert [o.dtype for o in compiled.outputs] == ["float32"]


def static_batch_model(spec: InputSpec, k: int, batch: int) -> onnx.ModelProto:
    """linear_model with a fixed batch dimension (some exporters' default: a dummy input of one image)."""
    model = linear_model(spec, k)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_a_model_with_a_static_batch_of_one_predicts_any_number_of_images(tmp_path: Path, engine: str) -> None:
    """It predicted one file, and died of 'unexpected InvalidArgument: Got invalid dimensions for input' (exit 1)
    on two."""
    pytest.importorskip(engine)
    fixed = make_bundle(tmp_path / "fixed", {"fp32": static_batch_model(SPEC, 4, 1)})
    dynamic = make_bundle(tmp_path / "dynamic", {"fp32": linear_model(SPEC, 4)})
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(rand_image(i)))
    got = [r for _, r in Predictor.from_bundle(fixed, engine=engine, device="cpu").predict_paths(paths, top_k=2)]
    want = [r for _, r in Predictor.from_bundle(dynamic, engine=engine, device="cpu").predict_paths(paths, top_k=2)]
    assert all(isinstance(r, Prediction) for r in got)
    assert [r.label for r in got] == [r.label for r in want]  # type: ignore[union-attr]
    np.testing.assert_allclose(
        [r.confidence for r in got],
        [r.confidence for r in want],
        rtol=1e-5,  # type: ignore[union-attr]
    )


def test_a_model_with_a_static_batch_of_several_images_is_refused_when_it_loads(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", {"fp32": static_batch_model(SPEC, 4, 8)})
    with pytest.raises(BundleError, match="takes batches of exactly 8 images") as info:
        Predictor.from_bundle(root, device="cpu")
    assert "dynamic batch dimension" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [({"ir_version": 99}, "Unsupported model IR version: 99, max supported IR version"), ({"opset": 99}, "Opset 99")],
    ids=["ir-version", "opset"],
)
def test_a_model_newer_than_this_onnxruntime_is_refused_with_the_reason(
    tmp_path: Path, stamp: dict[str, int], reason: str
) -> None:
    """The first 300 characters of onnxruntime's message were its C++ source location and signature: the error
    ended at '...ModelOptions&) Unsupported ' and never said what was unsupported."""
    model = linear_model(SPEC, 4)
    if "ir_version" in stamp:
        model.ir_version = stamp["ir_version"]
    else:
        model.opset_import[0].version = stamp["opset"]
    root = make_bundle(tmp_path / "b", {"fp32": model})
    with pytest.raises(BundleError, match="onnxruntime cannot load") as info:
        Predictor.from_bundle(root, device="cpu")
    assert reason in info.value.message and "onnxruntime_src" not in info.value.message
    assert "upgrade onnxruntime" in (info.value.hint or "") and "imgcls export" in (info.value.hint or "")


def test_garbage_model_file_is_a_bundle_error(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", {}, extra={"model.onnx": b"not a protobuf at all" * 10})
    with pytest.raises(BundleError):
        Predictor.from_bundle(root)


# --- inference and top-k -----------------------------------------------------------------------------------


def test_predictions_are_top_k_of_softmax_best_first(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, device="cpu")
    images = [rand_image(i) for i in range(3)]
    preds = p.predict_images(images, top_k=3)
    x = p.to_input(np.stack([p.prepare(im) for im in images]))
    probs = softmax(p.logits(x))
    for pred, row in zip(preds, probs, strict=True):
        assert isinstance(pred, Prediction)
        order = np.argsort(-row)
        assert pred.class_id == int(order[0]) and pred.label == CLASSES[order[0]]
        assert [t.class_id for t in pred.top_k] == [int(i) for i in order[:3]]
        assert pred.confidence == pytest.approx(float(row.max()))
        d = pred.to_dict()
        assert set(d) == {"label", "class_id", "confidence", "top_k"}
        assert set(d["top_k"][0]) == {"label", "class_id", "probability"}
    assert np.allclose(probs.sum(1), 1.0, atol=1e-6)
    assert len(p.predict_images(images[:1], top_k=50)[0].top_k) == len(CLASSES)  # k is capped
    with pytest.raises(UsageError):
        p.predict_images(images, top_k=0)


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = softmax(np.array([[1000.0, 999.0, -1000.0]], np.float32))
    assert np.isfinite(probs).all() and probs[0, 0] > probs[0, 1] > probs[0, 2]


def test_bad_batches_are_usage_errors(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, device="cpu")
    with pytest.raises(UsageError, match="shape"):
        p.logits(np.zeros((1, 3, 7, 7), np.float32))
    with pytest.raises(UsageError, match="uint8"):
        p.infer_prepared(np.zeros((1, 6, 5, 3), np.float32))
    assert p.infer(np.zeros((0, 3, 6, 5), np.float32)).shape == (0, 4)


def test_predict_paths_keeps_order_and_reports_each_bad_file(bundle: Path, tmp_path: Path) -> None:
    p = Predictor.from_bundle(bundle, device="cpu")
    images = [rand_image(i, size=(10 + i, 9)) for i in range(4)]
    paths = []
    for i, img in enumerate(images):
        path = tmp_path / f"good{i}.png"
        path.write_bytes(png(img))
        paths.append(path)
    (tmp_path / "text.png").write_text("not an image")
    order = [paths[0], tmp_path / "missing.jpg", paths[1], tmp_path / "text.png", paths[2], paths[3]]
    results = list(p.predict_paths(order, top_k=2, batch_size=2))
    assert [r[0] for r in results] == order
    assert [type(r[1]).__name__ for r in results] == [
        "Prediction", "ImageError", "Prediction", "ImageError", "Prediction", "Prediction"
    ]  # fmt: skip
    assert isinstance(results[1][1], ImageError) and results[1][1].code == "not_found"
    assert isinstance(results[3][1], ImageError) and results[3][1].code == "unsupported_format"
    expected = p.predict_images(images, top_k=2)
    got = [r[1] for r in results if isinstance(r[1], Prediction)]
    for a, b in zip(got, expected, strict=True):
        assert a.class_id == b.class_id and a.confidence == pytest.approx(b.confidence, abs=1e-6)
    with pytest.raises(UsageError):
        list(p.predict_paths(order, batch_size=0))


def test_decode_limits_come_from_the_predictor(bundle: Path) -> None:
    p = Predictor.from_bundle(bundle, max_pixels=100)
    with pytest.raises(ImageError) as info:
        p.decode(png(rand_image(0, size=(20, 20))))
    assert info.value.code == "too_many_pixels"


# --- runtime input == training evaluation input ------------------------------------------------------------


def _write_mixed_folder(root: Path, n: int = 100) -> None:
    """n images over 2 classes in several sizes, modes and both formats."""
    sizes = [(8, 8), (16, 12), (33, 47), (64, 20), (100, 100), (5, 9)]
    kinds = [
        ("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("PNG", "1"),
        ("PNG", "LA"), ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"),
    ]  # fmt: skip
    for i in range(n):
        fmt, mode = kinds[i % len(kinds)]
        size = sizes[i % len(sizes)]
        img = rand_image(i, size)
        if mode == "I;16":
            img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 250)
        elif mode == "RGBA":
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(np.asarray(rand_image(i + 1000, size).convert("L"))))
        else:
            img = img.convert(mode)
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}", fmt)


@pytest.mark.parametrize("channels", [1, 3])
def test_runtime_input_equals_training_evaluation_input(tmp_path: Path, channels: int) -> None:
    """100 images, several sizes and modes: what the ONNX session receives is what training evaluates on."""
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.data.transform import normalize

    _write_mixed_folder(tmp_path / "data")
    ds = load_dataset(DataConfig(name=f"folder:{tmp_path / 'data'}", img_size=12, channels=channels), seed=0)
    splits = [s for s in (ds.train, ds.val, ds.test) if s is not None and len(s)]
    assert sum(len(s) for s in splits) == 100 and not ds.skipped
    bundle = make_bundle(tmp_path / "b", {"fp32": identity_model(ds.input)}, spec=ds.input,
                         classes=[str(i) for i in range(channels * 12 * 12)])  # fmt: skip
    predictor = Predictor.from_bundle(bundle, device="cpu")
    for split in splits:
        assert split.paths is not None
        training = normalize(split.images, ds.input)  # what evaluation during training feeds the model
        runtime = predictor.to_input(np.stack([predictor.read(p) for p in split.paths]))
        assert np.abs(runtime - training).max() <= 1e-6
        seen = predictor.logits(runtime).reshape(training.shape)  # the identity model echoes its input
        assert np.abs(seen - training).max() <= 1e-6


def test_runtime_never_imports_torch(bundle: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(png(rand_image(0)))
    code = (
        "import sys\n"
        "from imgcls.runtime import Predictor\n"
        f"p = Predictor.from_bundle({str(bundle)!r})\n"
        f"print(list(p.predict_paths([{str(image)!r}]))[0][1].label)\n"
        "heavy = [m for m in ('torch', 'torchvision', 'timm', 'onnx', 'wandb', 'evidently') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in CLASSES


def test_predict_reports_a_missing_file_whose_name_looks_like_a_glob(tmp_path: Path) -> None:
    """'photo[1].png' is a glob to glob ('[1]' a character class): missing, it was dropped without a word and
    predict exited 0 for the other files."""
    root = make_bundle(tmp_path / "b", {"fp32": linear_model(SPEC, 4, classes=CLASSES)})
    (tmp_path / "a.png").write_bytes(png(rand_image(0)))
    run = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", "-m", str(root), str(tmp_path / "a.png"),
         str(tmp_path / "photo[1].png"), "-f", "json"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(tmp_path / "a.png"), str(tmp_path / "photo[1].png")]
    assert lines[1]["error"]["code"] == "not_found"
    assert "1 of 2 file(s) could not be predicted" in run.stderr
