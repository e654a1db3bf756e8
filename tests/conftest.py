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
    """Train resnet8 on the real digits (a few seconds on one thread) and save a bundle with lineage + samples.

    The bundle holds ``samples/val.npz`` and ``samples/train.npz`` (prepared uint8 images + labels) and the
    resolved run config in ``lineage.config``, the way ``imgcls train`` writes them.
    """
    import numpy as np
    import torch

    from imgcls.config import DataConfig, ModelConfig, RunConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.data.transform import normalize
    from imgcls.models import create_model, model_spec
    from imgcls.models.io import save_bundle

    cfg = RunConfig(data=DataConfig(name="digits", img_size=img_size), model=ModelConfig(arch="resnet8", width=width))
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    spec = ds.input
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is several times faster than two contended ones
    try:
        torch.manual_seed(seed)
        model = create_model("resnet8", num_classes=10, in_chans=spec.channels, img_size=img_size, width=width)
        x, y = torch.from_numpy(normalize(ds.train.images, spec)), torch.from_numpy(ds.train.labels)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 64):
                idx = perm[i : i + 64]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(torch.from_numpy(normalize(ds.test.images, spec)))
        test_top1 = float((logits.argmax(1).numpy() == ds.test.labels).mean())
    finally:
        torch.set_num_threads(threads)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples" / "val.npz", images=ds.val.images, labels=ds.val.labels)
    np.savez(out / "samples" / "train.npz", images=ds.train.images, labels=ds.train.labels)
    save_bundle(
        out,
        model=model,
        name="digits-resnet8",
        classes=ds.classes,
        input_spec=spec,
        model_spec=model_spec(
            "resnet8", num_classes=10, in_chans=1, img_size=img_size, small_input_stem=None, width=width
        ),
        metrics={"test_top1": test_top1},
        lineage={"config": cfg.to_dict(), "dataset": {"name": ds.name, "fingerprint": ds.fingerprint}},
        extra_files=["samples/val.npz", "samples/train.npz"],
    )
    return out


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
