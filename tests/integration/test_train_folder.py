"""A `folder:` dataset of real PNG files trains with no code change, and its bundle's reported test accuracy is
reproduced exactly by reloading the bundle (and by `imgcls predict` over the test files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# names that rich would read as an emoji and as markup: the terminal shows them as they are
CLASSES = ("zero", ":one:", "[bold]seven")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three digit classes from scikit-learn's real digits, written as 8×8 PNGs in train/ and test/ folders; the
    run directory's name has what rich reads as a closing tag (it crashed the CLI)."""
    from sklearn.datasets import load_digits

    work = tmp_path_factory.mktemp("train_folder")
    data = work / "pngs"
    digits = load_digits()
    for label, name in zip((0, 1, 7), CLASSES, strict=True):
        imgs = digits.images[digits.target == label][:60]
        for i, arr in enumerate(imgs):
            split = "test" if i % 5 == 0 else "train"
            out = data / split / name
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.rint(arr * 255 / 16), 0, 255).astype(np.uint8), "L").save(out / f"{i:03d}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", f"folder:{data}", "--model", "resnet8", "--epochs", "3",
         "--batch-size", "32", "--set", "model.width=8", "--set", "augment.hflip=false", "--out", str(work / "b[/x]")],
        capture_output=True, text=True, cwd=work, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"bundle {work / 'b[/x]'}\n" in proc.stdout, proc.stdout
    return work / "b[/x]", data


def test_folder_bundle_names_the_folder_classes_and_reproduces_its_test_accuracy(folder_run):
    from imgcls.bundle import load_bundle
    from imgcls.config import load_config
    from imgcls.data.datasets import load_dataset
    from imgcls.models.io import load_model
    from imgcls.train.evaluate import evaluate

    bundle = load_bundle(folder_run[0])
    assert bundle.classes == sorted(CLASSES)
    assert bundle.input.channels == 1 and bundle.input.size == (8, 8)
    cfg = load_config(bundle.file("config.yaml"))
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    assert ds.fingerprint == bundle.meta.lineage.dataset.fingerprint
    assert len(ds.test) == 36
    ev = evaluate(load_model(bundle), ds.test.images, ds.test.labels, bundle.input, num_classes=3, batch_size=64)
    assert ev.top1 == bundle.metrics.test_top1


def test_predict_over_the_test_pngs_gives_the_reported_top1(folder_run):
    bundle_dir, data = folder_run
    export = subprocess.run(
        [sys.executable, "-m", "imgcls", "export", str(bundle_dir)], capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert export.returncode == 0, export.stdout + export.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", str(data / "test"), "--model", str(bundle_dir), "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == 36
    right = sum(Path(r["path"]).parent.name == r["label"] for r in rows)
    reported = json.loads((bundle_dir / "bundle.json").read_text())["metrics"]["test_top1"]
    assert right / len(rows) == pytest.approx(reported, abs=1e-12)

    seven = sorted((data / "test" / "[bold]seven").glob("*.png"))[:3]
    table = subprocess.run(
        [sys.executable, "-m", "imgcls", "predict", *map(str, seven), "--model", str(bundle_dir), "--top-k", "3"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    for path in seven:
        assert str(path) in table.stdout, table.stdout
    assert "[bold]seven" in table.stdout and ":one:" in table.stdout, table.stdout  # labels and top-k, as named


def test_two_processes_on_a_folder_warn_once_for_the_job(folder_run, tmp_path):
    # every rank loads the same folder: its unreadable file was reported by each of them, and twice by each
    # (the folder's one warning, then the training loop's line per file)
    import shutil

    data = tmp_path / "pngs"
    shutil.copytree(folder_run[1], data)
    (data / "train" / "[bold]seven" / "broken.png").write_bytes(b"not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", f"folder:{data}", "--model", "resnet8", "--epochs", "1",
         "--batch-size", "16", "--set", "model.width=8", "--set", "augment.hflip=false", "--nproc-per-node", "2",
         "--out", str(tmp_path / "b")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr.count("broken.png") == 1, proc.stderr
    assert "skipped 1 unreadable file(s)" in proc.stderr


def test_a_class_missing_from_the_test_split_still_makes_a_bundle(tmp_path):
    # test/ may lack a class (or a class of one image has none to hold out): the run trained, then died writing
    # bundle.json ("unexpected ValidationError": per_class_top1 had no figure for that class), exit 1, no bundle
    from imgcls.bundle import load_bundle

    rng = np.random.default_rng(0)
    for split, classes in (("train", ("a", "b", "c")), ("test", ("a", "b"))):
        for k, name in enumerate(classes):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(6 if split == "train" else 2):
                arr = np.clip(rng.normal(60 + 60 * k, 20, (8, 8)), 0, 255).astype(np.uint8)
                Image.fromarray(arr, "L").save(tmp_path / "data" / split / name / f"{i}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", f"folder:{tmp_path / 'data'}", "--model", "resnet8",
         "--epochs", "1", "--set", "model.width=8", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    metrics = load_bundle(tmp_path / "run").metrics
    assert set(metrics.per_class_top1) == {"a", "b", "c"} and metrics.per_class_top1["c"] is None
    assert metrics.per_class_top1["a"] is not None


def test_train_run_from_inside_the_dataset_is_refused_before_training(tmp_path):
    for k, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.new("L", (8, 8), 60 * k + i).save(tmp_path / name / f"{i}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", "folder:.", "--model", "resnet8", "--epochs", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is inside the dataset folder" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()
