"""`imgcls export`: ONNX files in the bundle, the parity and int8 gates, fp16, atomic replacement, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from imgcls.bundle import load_bundle, sha256_file
from imgcls.errors import GateError, UsageError
from imgcls.runtime import Predictor

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )


def copy(src: Path, tmp_path: Path, name: str = "bundle") -> Path:
    dest = tmp_path / name
    shutil.copytree(src, dest)
    return dest


def test_export_writes_verified_files_and_figures(exported_digits_bundle: Path) -> None:
    bundle = load_bundle(exported_digits_bundle)  # verifies every sha256, the ONNX files included
    assert {"model.onnx", "model.int8.onnx", "weights.safetensors"} <= set(bundle.files)
    for rel in ("model.onnx", "model.int8.onnx"):
        assert bundle.files[rel] == sha256_file(exported_digits_bundle / rel)
    assert not list(exported_digits_bundle.glob("*.data"))  # self-contained
    assert bundle.meta.export is not None
    export = bundle.meta.export.to_dict()
    assert export["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert isinstance(export["opset"], int) and export["opset"] >= 17
    assert export["checked_on"]["source"] == "dataset digits (val split)"
    fp32 = export["models"]["fp32"]
    for batch in ("batch_1", "batch_32"):
        assert fp32["parity"][batch]["max_abs_logit_diff"] <= 1e-4
        assert fp32["parity"][batch]["top1_agreement"] == 1.0
    assert fp32["val_top1"] >= 0.9  # a trained model, so the accuracies mean something
    int8 = export["models"]["int8"]
    assert int8["top1_drop_points"] <= 1.0
    assert int8["top1_drop_points"] == pytest.approx((int8["fp32_val_top1"] - int8["val_top1"]) * 100, abs=1e-3)
    assert int8["quantization"]["format"] == "QDQ" and int8["quantization"]["calib_images"] == 256
    assert int8["quantization"]["calib_source"] == "dataset digits (train split)"
    assert (exported_digits_bundle / "model.int8.onnx").stat().st_size < (
        exported_digits_bundle / "model.onnx"
    ).stat().st_size


def test_onnx_file_is_usable_on_its_own(exported_digits_bundle: Path) -> None:
    import onnxruntime as ort

    bundle = load_bundle(exported_digits_bundle)
    model = onnx.load(str(exported_digits_bundle / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == bundle.classes
    assert json.loads(props["mean"]) == list(bundle.input.mean)
    assert json.loads(props["std"]) == list(bundle.input.std)
    assert json.loads(props["size"]) == list(bundle.input.size)
    assert props["bundle_name"] == bundle.name
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits", "embedding"]  # the bundle has a drift reference
    sess = ort.InferenceSession(str(exported_digits_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7, 33):  # dynamic batch
        out = sess.run(None, {"images": np.zeros((n, 1, 16, 16), np.float32)})[0]
        assert out.shape == (n, 10)


def test_int8_keeps_accuracy_on_the_validation_split(exported_digits_bundle: Path) -> None:
    """The int8 file agrees with fp32 on nearly every validation image (the gate's figure, recomputed)."""
    with np.load(exported_digits_bundle / "samples" / "val.npz") as z:
        images, labels = z["images"], z["labels"]
    fp32 = Predictor.from_bundle(exported_digits_bundle, device="cpu")
    int8 = Predictor.from_bundle(exported_digits_bundle, device="cpu", precision="int8")
    top1 = {p.precision: float((p.infer_prepared(images).argmax(1) == labels).mean()) for p in (fp32, int8)}
    section = load_bundle(exported_digits_bundle).meta.export
    assert section is not None
    assert top1["fp32"] == pytest.approx(section.models["fp32"].val_top1)
    assert top1["int8"] == pytest.approx(section.models["int8"].val_top1)
    assert (top1["fp32"] - top1["int8"]) * 100 <= 1.0


def test_reexport_replaces_atomically_while_readers_load_it(exported_digits_bundle: Path, tmp_path: Path) -> None:
    """fp16 re-export through the CLI: readers never see a half-updated bundle; the int8 model is kept."""
    bundle = copy(exported_digits_bundle, tmp_path)
    int8_sha = load_bundle(bundle).files["model.int8.onnx"]
    failures: list[str] = []
    loads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal loads
        while not stop.is_set():
            try:
                Predictor.from_bundle(bundle, device="cpu", intra_threads=1)
                loads += 1
            except Exception as exc:  # any failure is a torn read
                failures.append(repr(exc))
            stop.wait(0.02)  # leave the CPU to the export

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        out = cli("export", str(bundle), "--fp16")
    finally:
        stop.set()
        thread.join()
    assert out.returncode == 0, out.stderr
    assert "fp16" in out.stdout and "model.fp16.onnx" in out.stdout
    assert not failures, failures[:3]
    assert loads > 0
    meta = load_bundle(bundle).meta
    # re-export keeps the precisions it did not touch: int8 (exported from these weights) stays, verified
    assert meta.export is not None and list(meta.export.models) == ["fp32", "int8", "fp16"]
    assert meta.export.models["int8"].file == "model.int8.onnx" and "model.int8.onnx" in meta.files
    assert meta.files["model.int8.onnx"] == int8_sha
    assert Predictor.from_bundle(bundle, device="cpu", precision="int8").precision == "int8"
    fp16 = meta.export.models["fp16"].to_dict()
    assert fp16["parity"]["batch_32"]["max_abs_logit_diff"] <= fp16["tolerance"]["max_abs_logit_diff"]
    assert fp16["parity"]["batch_32"]["top1_agreement"] >= 0.99
    assert Predictor.from_bundle(bundle, device="cpu", precision="fp16").precision == "fp16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left


def _assert_unchanged(bundle: Path, manifest_before: bytes) -> None:
    assert (bundle / "bundle.json").read_bytes() == manifest_before
    assert not list(bundle.glob("*.onnx"))
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]


def test_failed_int8_gate_exits_1_and_leaves_the_bundle_without_an_export(digits_bundle: Path, tmp_path: Path) -> None:
    """Calibrating on blank images (an unrepresentative calibration set) wrecks int8 accuracy: the gate stops it."""
    from imgcls.bundle import DatasetLineage, Lineage, edit_bundle

    bundle = copy(digits_bundle, tmp_path)
    with edit_bundle(bundle) as edit:
        with np.load(edit.stage / "samples" / "train.npz") as z:
            blank = np.zeros_like(z["images"][:64])
        (edit.stage / "samples" / "train.npz").unlink()  # a hard link to the original: replace, never modify
        np.savez(edit.stage / "samples" / "train.npz", images=blank, labels=np.zeros(64, np.int64))
        edit.meta.lineage = Lineage(dataset=DatasetLineage(name="digits"))  # not at hand: samples are used
    before = (bundle / "bundle.json").read_bytes()
    out = cli("export", str(bundle), "--int8")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed its gate" in out.stderr and "int8" in out.stderr and "Traceback" not in out.stderr
    _assert_unchanged(bundle, before)


def test_an_int8_gate_on_a_handful_of_images_is_said_to_say_little(digits_bundle: Path, tmp_path: Path) -> None:
    """Judged on 10 validation images (a small folder dataset), one image is 10 points: the gate passed on 0.00 with
    nothing said, and the table read like the digits' 160-image check."""
    from imgcls.bundle import DatasetLineage, Lineage, edit_bundle

    bundle = copy(digits_bundle, tmp_path)
    with edit_bundle(bundle) as edit:
        with np.load(edit.stage / "samples" / "val.npz") as z:
            images, labels = z["images"][:10], z["labels"][:10]
        (edit.stage / "samples" / "val.npz").unlink()  # a hard link to the original: replace, never modify
        np.savez(edit.stage / "samples" / "val.npz", images=images, labels=labels)
        edit.meta.lineage = Lineage(dataset=DatasetLineage(name="digits"))  # not at hand: samples are used
    out = cli("export", str(bundle), "--int8")
    assert out.returncode == 0, out.stdout + out.stderr
    said = " ".join(out.stderr.split())
    assert "the int8 gate measures top-1 on only 10 validation image(s)" in said
    assert "one image moves it by 10.0 points, more than the 1 it allows" in said
    out = cli("export", str(copy(digits_bundle, tmp_path, "full")), "--int8")  # 160 images: 0.6 points each
    assert out.returncode == 0 and "says little" not in out.stderr, out.stderr


def test_failed_parity_gate_raises_and_changes_nothing(digits_bundle: Path, tmp_path: Path) -> None:
    """A model whose forward differs from its exported graph (noise drawn in eager and in onnxruntime)."""
    import torch

    from imgcls.models import register_model
    from imgcls.models.io import save_bundle

    @register_model
    def noisy_net(num_classes: int, in_chans: int = 1) -> torch.nn.Module:
        class Noisy(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.head = torch.nn.Linear(in_chans * 16 * 16, num_classes)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                logits = self.head(x.flatten(1))
                return logits + torch.randn_like(logits)

        return Noisy()

    src = load_bundle(digits_bundle)
    bundle = tmp_path / "noisy"
    (bundle / "samples").mkdir(parents=True)
    shutil.copy(digits_bundle / "samples" / "val.npz", bundle / "samples" / "val.npz")
    save_bundle(
        bundle,
        model=noisy_net(10),
        name="noisy",
        classes=src.classes,
        input_spec=src.input,
        model_spec={"arch": "noisy_net", "source": "imgcls", "num_classes": 10, "in_chans": 1, "img_size": 16},
        extra_files=["samples/val.npz"],
    )
    before = (bundle / "bundle.json").read_bytes()
    from imgcls.export import export_bundle
    from imgcls.models import registry

    try:
        with pytest.raises(GateError) as info:
            export_bundle(bundle)
    finally:
        registry._REGISTRY.pop("noisy_net", None)  # keep the registry clean for other tests
    assert info.value.exit_code == 1
    assert "fp32 parity" in info.value.message and "bundle was not changed" in info.value.message
    _assert_unchanged(bundle, before)


def test_export_without_real_images_is_a_usage_error(random_bundle: Path, tmp_path: Path) -> None:
    bundle = copy(random_bundle, tmp_path)
    out = cli("export", str(bundle))
    assert out.returncode == 2
    assert "no real images" in out.stderr and "hint:" in out.stderr


def test_export_usage_errors(tmp_path: Path) -> None:
    out = cli("export", str(tmp_path / "nope"))
    assert out.returncode == 2 and "no bundle" in out.stderr
    out = cli("export", str(tmp_path), "--calib-size", "0")
    assert out.returncode == 2
    from imgcls.export import export_bundle

    with pytest.raises(UsageError, match="opset"):
        export_bundle(tmp_path, opset=99)


def test_export_of_a_bundle_it_cannot_change_is_refused_before_the_work(
    read_only_copy: Callable[[Path], Path], digits_bundle: Path
) -> None:
    """It exported and ran every gate, then failed on 'cannot use .../.bundle.staging-lsq1pobf: read-only file
    system', a folder the user never made and that is not there."""
    read_only_bundle = read_only_copy(digits_bundle)
    before = sorted((p.name, sha256_file(p)) for p in read_only_bundle.iterdir() if p.is_file())
    out = cli("export", str(read_only_bundle), "--int8")
    assert out.returncode == 2, out.stderr
    assert f"imgcls export cannot change {read_only_bundle}" in out.stderr
    assert "copy the bundle to a folder you may write to" in out.stderr
    assert "staging" not in out.stderr and "Traceback" not in out.stderr
    assert sorted((p.name, sha256_file(p)) for p in read_only_bundle.iterdir() if p.is_file()) == before
