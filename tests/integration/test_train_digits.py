"""End to end on the real digits data: `imgcls train` in a subprocess writes a bundle whose reported test accuracy
is reproduced exactly by reloading it; plus the user-facing errors of `imgcls train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# A tiny but real run: configs/digits.yaml at the native 8×8, a narrow resnet8, 3 epochs (seconds on two cores).
TINY = [
    "--config",
    str(ROOT / "configs" / "digits.yaml"),
    "--img-size",
    "8",
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--set",
    "model.width=8",
]
BUNDLE_FILES = {
    "bundle.json",
    "weights.safetensors",
    "config.yaml",
    "metrics.json",
    "metrics.jsonl",
    "confusion_matrix.png",
    "samples/train.npz",
    "samples/val.npz",
    "drift/reference.npz",
}


def run_train(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300):
    return subprocess.run(
        [sys.executable, "-m", "imgcls", "train", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    work = tmp_path_factory.mktemp("train_digits")
    proc = run_train(*TINY, "--out", "runs/tiny", "--seed", "3", cwd=work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "runs" / "tiny", proc


def test_cli_reports_progress_and_summary(trained):
    bundle_dir, proc = trained
    out = proc.stdout
    assert "training resnet8" in out and "digits" in out
    assert out.count("epoch ") >= 3 and "epoch 3/3" in out  # plain lines: stdout is not a TTY
    assert f"bundle {bundle_dir.resolve()}" in out
    assert "test top-1" in out and "top-5" in out
    assert "\x1b[" not in out  # no terminal control codes in a log


def test_bundle_holds_exactly_the_listed_files(trained):
    from imgcls.bundle import load_bundle

    bundle_dir, _ = trained
    bundle = load_bundle(bundle_dir)  # verifies every sha256
    assert set(bundle.files) == BUNDLE_FILES - {"bundle.json"}
    on_disk = {str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*") if p.is_file()}
    assert on_disk == BUNDLE_FILES  # no checkpoints, no temporary files
    assert not [p for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_manifest_contract(trained):
    from imgcls.bundle import FORMAT, load_bundle

    load_bundle(trained[0])  # the file as written (checked key by key below) is a valid typed bundle
    meta = json.loads((trained[0] / "bundle.json").read_text())
    assert meta["format"] == FORMAT == "imgcls.bundle/1.1" and meta["name"] == "digits-resnet8"
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["input"]["size"] == [8, 8] and meta["input"]["channels"] == 1
    assert 0 < meta["input"]["std"][0] < 1 and meta["input"]["interpolation"] == "bilinear"
    assert meta["model"]["arch"] == "resnet8" and meta["model"]["kwargs"] == {"width": 8}
    m = meta["metrics"]
    for key in ("val_top1", "test_top1", "test_top5"):
        assert 0.0 <= m[key] <= 1.0
    assert m["test_top1"] > 0.5 and m["eval_split"] == "test"  # 3 tiny epochs already learn digits
    assert set(m["per_class_top1"]) == set(meta["classes"])
    lin = meta["lineage"]
    assert lin["dataset"]["name"] == "digits" and len(lin["dataset"]["fingerprint"]) == 64
    assert lin["config"]["train"]["seed"] == 3 and lin["config"]["train"]["epochs"] == 3
    assert lin["torch_version"] and lin["imgcls_version"] and lin["created_at"]
    assert "git_commit" in lin and lin["training"]["device"] == "cpu"


def test_reloaded_bundle_reproduces_reported_test_accuracy_exactly(trained):
    from imgcls.bundle import load_bundle
    from imgcls.config import load_config
    from imgcls.data.datasets import load_dataset
    from imgcls.models.io import load_model
    from imgcls.train.evaluate import evaluate

    bundle = load_bundle(trained[0])
    cfg = load_config(bundle.file("config.yaml"))
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    assert ds.fingerprint == bundle.meta.lineage.dataset.fingerprint
    model = load_model(bundle)
    ev = evaluate(
        model, ds.test.images, ds.test.labels, bundle.input, num_classes=10, batch_size=cfg.train.eval_batch_size
    )
    assert ev.top1 == bundle.metrics.test_top1
    assert ev.top5 == bundle.metrics.test_top5
    assert ev.per_class_dict(bundle.classes) == bundle.metrics.per_class_top1
    assert ev.count == bundle.metrics.eval_images == len(ds.test)


def test_metrics_files_config_and_plot(trained):
    from PIL import Image

    from imgcls.config import load_config

    bundle_dir, _ = trained
    lines = [json.loads(line) for line in (bundle_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "val_top1", "val_top5", "lr", "images_per_sec"} <= set(lines[0])
    metrics = json.loads((bundle_dir / "metrics.json").read_text())
    assert len(metrics["test"]["confusion_matrix"]) == 10 and metrics["history"] == lines
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == metrics["test"]["images"]
    cfg = load_config(bundle_dir / "config.yaml")  # the resolved config reloads as a valid config
    assert cfg.data.img_size == 8 and cfg.model.width == 8 and Path(cfg.out or "").name == "tiny"
    with Image.open(bundle_dir / "confusion_matrix.png") as img:
        assert img.format == "PNG" and img.width > 200


def test_samples_are_real_prepared_images(trained):
    from imgcls.bundle import load_bundle
    from imgcls.config import load_config
    from imgcls.data.datasets import load_dataset

    bundle = load_bundle(trained[0])
    cfg = load_config(bundle.file("config.yaml"))
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    total = 0
    for rel, split in (("samples/val.npz", ds.val), ("samples/train.npz", ds.train)):
        with np.load(bundle.file(rel), allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        assert images.dtype == np.uint8 and images.shape[1:] == (8, 8, 1)
        assert labels.dtype == np.int64 and len(labels) == len(images) >= min(len(split), 100)
        assert labels.min() >= 0 and labels.max() < 10
        flat = {img.tobytes() for img in split.images}
        assert all(img.tobytes() in flat for img in images)  # taken from the split as prepared
        total += bundle.file(rel).stat().st_size
    assert total < 16 << 20


def test_gpu_without_cuda_exits_2(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_train(*TINY, "--gpu", "--out", "gpu-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "without --gpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "gpu-run").exists()  # never trains on the CPU instead


def test_out_that_holds_a_bundle_is_refused(trained, tmp_path):
    bundle_dir, _ = trained
    proc = run_train(*TINY, "--out", str(bundle_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "already holds a bundle" in proc.stderr
    proc = run_train("--resume", str(bundle_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "finished bundle" in proc.stderr


def test_out_below_a_file_is_refused_before_the_data_loads(tmp_path):
    (tmp_path / "notes").write_text("a file, not a folder")
    proc = run_train(*TINY, "--out", str(tmp_path / "notes" / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--out {tmp_path / 'notes' / 'run'}: {tmp_path / 'notes'} is a file, not a folder" in proc.stderr
    proc = run_train(*TINY, "--out", str(tmp_path / "notes"), cwd=tmp_path)
    assert proc.returncode == 2 and f"--out {tmp_path / 'notes'} is a file, not a folder" in proc.stderr
    proc = run_train(*TINY, "--out", "gs://bucket/run", cwd=tmp_path)  # was a local folder named gs:
    assert proc.returncode == 2 and "--out gs://bucket/run is a URL" in proc.stderr, proc.stderr
    assert "imgcls push DIR --to gs://BUCKET" in proc.stderr and list(tmp_path.iterdir()) == [tmp_path / "notes"]
    assert "training" not in proc.stdout and "unexpected" not in proc.stderr


def test_a_negative_seed_is_a_clear_error_before_training(tmp_path):
    proc = run_train(*TINY, "--seed", "-1", "--out", "z", cwd=tmp_path)  # numpy refused it mid-run: "unexpected"
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "bad value for 'train.seed'" in proc.stderr and "greater than or equal to 0" in proc.stderr
    assert "unexpected" not in proc.stderr and not (tmp_path / "z").exists()


def test_no_validation_split_is_a_clear_error_with_the_fix(tmp_path):
    # 16 px: digits are 8×8, so the splits are resized (the empty one crashed there)
    proc = run_train(*TINY, "--img-size", "16", "--set", "data.val_fraction=0", "--out", "v", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # was "unexpected ValueError: need at least one array"
    assert "dataset 'digits' has no validation images (data.val_fraction=0.0)" in proc.stderr
    assert "set data.val_fraction > 0" in proc.stderr and not (tmp_path / "v").exists()


def test_unknown_dataset_and_model_are_clear_errors(tmp_path):
    proc = run_train("--data", "digitz", "--out", "x", cwd=tmp_path)
    assert proc.returncode == 2 and "digitz" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_train(*TINY, "--model", "resnet9000", "--out", "y", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown model 'resnet9000'" in proc.stderr
    assert not (tmp_path / "y" / "bundle.json").exists()
