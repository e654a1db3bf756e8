"""Briefly trained bundles for the benchmarks: ``imgcls.train.fit`` on the digits embedded in scikit-learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def train_digits_bundle(
    out: Path,
    *,
    arch: str = "resnet8",
    img_size: int = 16,
    channels: int | None = None,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    threads: int | None = None,
    width: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``arch`` on the 1,797 real digits at ``img_size`` (the quickstart's configuration with AdamW at
    ``lr``) into the bundle ``out``, the way ``imgcls train`` does (lineage, samples).

    Returns a summary: train seconds, images/s, test top-1.
    """
    from imgcls.config import load_config
    from imgcls.train import fit

    flags = {
        "out": str(out), "data.img_size": img_size, "data.channels": channels, "model.arch": arch,
        "model.width": width, "optim.name": "adamw", "optim.lr": lr, "train.epochs": epochs,
        "train.batch_size": batch_size, "train.threads": threads, "train.seed": seed,
    }  # fmt: skip
    result = fit(load_config(ROOT / "configs" / "digits.yaml", flags=flags))
    rates = sorted(epoch["images_per_sec"] for epoch in result.history)
    return {
        "train_seconds": result.seconds,
        "train_img_per_s": rates[len(rates) // 2],  # median over the epochs
        "test_top1": result.metrics["test_top1"],
    }
