"""train -> export -> predict through the real CLI: `imgcls predict` over the test split written as PNG files
reproduces the test top-1 that `imgcls train` reported in the bundle, exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def imgcls(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgcls", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "NO_COLOR": "1"},
    )


@pytest.mark.slow  # ~1.5 min on the shared 2 cores (train ~55 s, export ~20 s); the default suite checks the same
# reproduction on the session's trained fixture bundle (test_predict.py)
def test_predict_on_the_test_split_reproduces_the_trained_bundles_test_top1(tmp_path: Path) -> None:
    from imgcls.config import DataConfig
    from imgcls.data.datasets import load_dataset

    # a tiny but real run (seconds): digits at the native 8×8, a narrow resnet8, 3 epochs
    train = imgcls(
        "train", "--config", str(ROOT / "configs" / "digits.yaml"), "--img-size", "8", "--epochs", "3",
        "--set", "model.width=8", "--out", "runs/tiny", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stdout + train.stderr
    bundle = tmp_path / "runs" / "tiny"
    export = imgcls("export", str(bundle), cwd=tmp_path)
    assert export.returncode == 0, export.stdout + export.stderr

    meta = json.loads((bundle / "bundle.json").read_text())
    config = meta["lineage"]["config"]
    ds = load_dataset(DataConfig(**config["data"]), seed=config["train"]["seed"])
    assert ds.fingerprint == meta["lineage"]["dataset"]["fingerprint"]
    assert ds.test is not None and meta["metrics"]["eval_split"] == "test"
    pngs = tmp_path / "test_pngs"
    pngs.mkdir()
    for i, (image, label) in enumerate(zip(ds.test.images, ds.test.labels, strict=True)):
        Image.fromarray(image[..., 0], "L").save(pngs / f"{i:04d}_label{label}.png")

    out = imgcls("predict", str(pngs), "--model", str(bundle), "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == len(ds.test)
    correct = sum(int(Path(r["path"]).stem.split("label")[1]) == r["class_id"] for r in rows)
    assert correct / len(rows) == meta["metrics"]["test_top1"]
