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
