"""Shared fixtures. Heavy ones are session-scoped and built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid resnet8 bundle with random weights: 10 classes, 16×16 grayscale (no training needed)."""
    import torch

    from imgcls.bundle import InputSpec
    from imgcls.models import create_model, model_spec
    from imgcls.models.io import save_bundle

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("random_bundle") / "bundle"
    spec = InputSpec(size=(16, 16), channels=1, mean=(0.3,), std=(0.35,), interpolation="bilinear")
    model = create_model("resnet8", num_classes=10, in_chans=1, img_size=16).eval()
    save_bundle(
        out,
        model=model,
        name="random-resnet8",
        classes=[f"digit_{i}" for i in range(10)],
        input_spec=spec,
        model_spec=model_spec("resnet8", num_classes=10, in_chans=1, img_size=16, small_input_stem=None),
        metrics={},
        lineage={"dataset": {"name": "random"}},
    )
    return out


def train_digits_bundle(out: Path, *, epochs: int = 4, img_size: int = 16, width: int = 8, seed: int = 0) -> Path:
    """Train resnet8 on the real digits with ``imgcls.train.fit`` (the quickstart's configuration, fewer epochs, a
    narrower net, one thread: a few seconds) into the bundle ``out``, exactly as ``imgcls train`` writes it
    (lineage with the resolved config, ``samples/{val,train}.npz``, metrics, plots).
    """
    from imgcls.config import load_config
    from imgcls.train import fit

    flags = {
        "out": str(out), "data.img_size": img_size, "model.width": width, "train.epochs": epochs,
        "train.seed": seed, "train.threads": 1,  # tiny batches: one thread beats two contended ones
    }  # fmt: skip
    return fit(load_config(ROOT / "configs" / "digits.yaml", flags=flags)).bundle_dir


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet8 bundle trained on the real digits (16×16 gray, ~98 % test top-1), not exported. Copy to modify."""
    return train_digits_bundle(tmp_path_factory.mktemp("digits_bundle") / "bundle")


@pytest.fixture(scope="session")
def exported_digits_bundle(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``digits_bundle`` copied and exported with fp32 + int8 (model.onnx, model.int8.onnx). Copy to modify."""
    import shutil

    from imgcls.export import export_bundle

    out = tmp_path_factory.mktemp("exported_digits_bundle") / "bundle"
    shutil.copytree(digits_bundle, out)
    export_bundle(out, int8=True)
    return out
