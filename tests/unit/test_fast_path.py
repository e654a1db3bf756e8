"""The fast path's parts on the CPU: the whitening stem, flip TTA, fewer host syncs, the fused-optimiser choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgcls.bundle import InputSpec
from imgcls.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_whitening_stem_decorrelates_the_training_patches():
    import torch
    import torch.nn.functional as F

    from imgcls.data.transform import normalize
    from imgcls.train.whiten import whiten_first_conv

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 12, 12, 3)).astype(np.float64)
    images = ((base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3).astype(np.uint8)  # correlated
    spec = InputSpec(size=(12, 12), channels=3, mean=(0.5,) * 3, std=(0.2,) * 3)
    conv = torch.nn.Conv2d(3, 64, 3, bias=False)
    assert whiten_first_conv(conv, images, spec, eps=1e-8) == 54  # 27 filters and their negations
    x = torch.from_numpy(normalize(images, spec)).double()
    out = F.conv2d(x, conv.weight.double())[:, :27].permute(0, 2, 3, 1).reshape(-1, 27)
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(27, dtype=torch.float64), atol=0.05)
    assert torch.equal(conv.weight[27:54], -conv.weight[:27])


def test_flip_tta_averages_an_image_and_its_mirror():
    import torch

    from imgcls.train.evaluate import predict_logits

    class LeftMinusRight(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = x[..., :, :2].mean((1, 2, 3)) - x[..., :, -2:].mean((1, 2, 3))
            return torch.stack([d, -d], 1)

    images = np.zeros((4, 8, 8, 1), np.uint8)
    images[:, :, :2] = 200  # bright on the left
    spec = InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))
    plain = predict_logits(LeftMinusRight(), images, spec)
    tta = predict_logits(LeftMinusRight(), images, spec, flip_tta=True)
    assert (plain[:, 0] > 0.5).all() and np.allclose(tta, 0.0, atol=1e-6)  # antisymmetric model: TTA cancels


def test_cpu_run_with_the_fast_path_options_reports_flip_tta_and_syncs_every_n_steps(tmp_path):
    from imgcls.bundle import load_bundle
    from imgcls.train import Callback, fit

    steps: list[int] = []

    class Steps(Callback):
        def on_step_end(self, step):  # type: ignore[no-untyped-def]
            steps.append(step.step)

    sets = ["model.whiten_stem=true", "train.flip_tta=true", "train.sync_every=5", "model.width=8"]
    cfg = load_config(ROOT / "configs" / "digits.yaml", sets, {"out": str(tmp_path / "b"), "train.epochs": 2})
    result = fit(cfg, callbacks=[Steps()])
    m = load_bundle(result.bundle_dir).metrics
    assert m.test_top1_flip_tta is not None and m.val_top1_flip_tta is not None
    assert 0.0 <= m.test_top1_flip_tta <= 1.0 and 0.0 <= m.val_top1_flip_tta <= 1.0
    per_epoch = 1458 // 64  # 22 steps: a report at 5, 10, 15, 20 and the last one
    assert steps == [5, 10, 15, 20, per_epoch] * 2
    assert m.test_top1 is not None and m.test_top1 > 0.5


def test_the_optimiser_is_fused_on_cuda_only():
    import torch

    from imgcls.train.factory import build_optimizer

    cpu = build_optimizer(RunConfig(), torch.nn.Linear(2, 2))
    assert not cpu.defaults.get("fused")
    if torch.cuda.is_available():  # pragma: no cover - the GPU machine
        cfg = RunConfig.model_validate({"train": {"device": "cuda"}})
        assert build_optimizer(cfg, torch.nn.Linear(2, 2).cuda()).defaults["fused"]


@pytest.mark.parametrize("name", ["cifar10-fast.yaml"])
def test_fast_config_asks_for_every_fast_path_option(name):
    cfg = load_config(ROOT / "configs" / name)
    t = cfg.train
    assert (t.device, t.precision, t.channels_last, t.compile, t.flip_tta) == ("cuda", "bf16", True, True, True)
    assert cfg.model.whiten_stem and cfg.optim.label_smoothing == 0.2 and t.epochs <= 10


def test_host_draws_stay_as_they_are_on_the_cpu():
    import torch

    from imgcls.train.augment import to_device

    draws = torch.arange(5)
    assert to_device(draws, torch.device("cpu")) is draws
    assert to_device(draws, "cpu") is draws
