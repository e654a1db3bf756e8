"""Briefly trained bundles for the benchmarks (plain torch, digits embedded in scikit-learn; no network)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


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
    """Train ``arch`` on the 1,797 real digits at ``img_size`` and save a bundle with lineage and samples.

    Returns a summary: train seconds, images/s, test top-1.
    """
    import numpy as np
    import torch

    from imgcls.config import DataConfig, ModelConfig, RunConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.data.transform import normalize
    from imgcls.models import create_model, model_spec
    from imgcls.models.io import save_bundle

    cfg = RunConfig(
        data=DataConfig(name="digits", img_size=img_size, channels=channels),
        model=ModelConfig(arch=arch, width=width),
    )
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    spec = ds.input
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        kwargs = {"width": width} if width else {}
        model = create_model(arch, num_classes=10, in_chans=spec.channels, img_size=img_size, **kwargs)
        x, y = torch.from_numpy(normalize(ds.train.images, spec)), torch.from_numpy(ds.train.labels)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        steps = epochs * ((len(x) + batch_size - 1) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        start = time.perf_counter()
        for _ in range(epochs):
            model.train()
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                idx = perm[i : i + batch_size]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        seconds = time.perf_counter() - start
        model.eval()
        assert ds.test is not None
        with torch.inference_mode():
            logits = model(torch.from_numpy(normalize(ds.test.images, spec)))
        test_top1 = float((logits.argmax(1).numpy() == ds.test.labels).mean())
    finally:
        torch.set_num_threads(before)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples" / "val.npz", images=ds.val.images, labels=ds.val.labels)
    np.savez(out / "samples" / "train.npz", images=ds.train.images, labels=ds.train.labels)
    save_bundle(
        out,
        model=model,
        name=f"digits-{arch}",
        classes=ds.classes,
        input_spec=spec,
        model_spec=model_spec(
            arch, num_classes=10, in_chans=spec.channels, img_size=img_size, small_input_stem=None, **kwargs
        ),
        metrics={"test_top1": test_top1},
        lineage={"config": cfg.to_dict(), "dataset": {"name": ds.name, "fingerprint": ds.fingerprint}},
        extra_files=["samples/val.npz", "samples/train.npz"],
    )
    return {
        "train_seconds": seconds,
        "train_img_per_s": epochs * len(x) / seconds,
        "test_top1": test_top1,
        "train_images": len(x),
    }
