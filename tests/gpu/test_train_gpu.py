"""The CUDA training path: bf16 autocast, channels-last, torch.compile, batch augmentation on the GPU.

``IMGCLS_TEST_DEVICE=cpu`` runs the same tests on the CPU (gloo for the two-process one): a rehearsal that keeps
them working between the rare sessions lent a GPU (tests/integration/test_gpu_tests_on_the_cpu.py, in
``nox -s slow``, runs them so, with only the GPU machine's packages importable).

Runs on a CUDA machine with torch and the core's dependencies only (no scikit-learn, matplotlib, wandb, FastAPI):
    PYTHONPATH=. python3 -m pytest -m gpu
The data is made in the test (synthetic arrays, or PNG folders for the CLI), so nothing needs the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
]
DEVICE = os.environ.get("IMGCLS_TEST_DEVICE", "cuda")
CUDA = DEVICE == "cuda"
if CUDA and not torch.cuda.is_available():
    pytestmark.append(pytest.mark.skip(reason="needs CUDA (IMGCLS_TEST_DEVICE=cpu rehearses these tests on the CPU)"))
DEVICE_FLAGS = ["--gpu"] if CUDA else ["--set", "train.device=cpu"]

ROOT = Path(__file__).resolve().parents[2]


def _child_env() -> dict[str, str]:
    """This checkout first on the child's PYTHONPATH, the rest kept (the GPU machine's carried wheels are there)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _images(n_per_class: int, classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour images whose class is the colour of a bright square (red, green, blue, white) placed at random."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    side = size // 4
    for c in range(classes):
        for _ in range(n_per_class):
            img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            y0, x0 = (int(v) for v in rng.integers(0, size - side, 2))
            channels = [c] if c < 3 else [0, 1, 2]
            img[y0 : y0 + side, x0 : x0 + side, channels] = 250
            images.append(img)
            labels.append(c)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _dataset(classes: int = 4, size: int = 32):
    from imgcls.bundle import InputSpec
    from imgcls.data.datasets import Dataset, Split, channel_stats, fingerprint

    train = Split(*_images(96, classes, size, seed=0))
    val = Split(*_images(16, classes, size, seed=1))
    test = Split(*_images(24, classes, size, seed=2))
    mean, std = channel_stats(train.images)
    spec = InputSpec(size=(size, size), channels=3, mean=mean, std=std)
    return Dataset(
        name="synthetic-squares",
        classes=[f"square_{i}" for i in range(classes)],
        input=spec,
        train=train,
        val=val,
        test=test,
        fingerprint=fingerprint(train, val, test),
        native_size=(size, size),
    )


def _config(tmp_path: Path, **sections):
    from imgcls.config import RunConfig

    tree = {
        "out": str(tmp_path / "run"),
        "data": {"name": "synthetic-squares"},
        "model": {"arch": "resnet8"},
        "optim": {"lr": 0.05, "warmup_epochs": 0.5},
        "augment": {"hflip": True, "crop_padding": 2},
        "train": {"epochs": 4, "batch_size": 64, "device": DEVICE, "precision": "bf16", "channels_last": True},
    }
    for key, value in sections.items():
        tree.setdefault(key, {}).update(value)
    return RunConfig.model_validate(tree)


def test_cuda_bf16_channels_last_trains_and_reloads_exactly(tmp_path):
    from imgcls.bundle import load_bundle
    from imgcls.models.io import load_model
    from imgcls.train import fit
    from imgcls.train.evaluate import evaluate

    ds = _dataset()
    result = fit(_config(tmp_path), dataset=ds)
    bundle = load_bundle(result.bundle_dir)
    assert bundle.meta.lineage.training.device == DEVICE
    assert bundle.metrics.test_top1 > 0.9, bundle.metrics
    assert (result.bundle_dir / "confusion_matrix.png").stat().st_size > 0  # Pillow fallback without matplotlib
    model = load_model(bundle, device=DEVICE)
    ev = evaluate(model, ds.test.images, ds.test.labels, bundle.input, num_classes=4, device=DEVICE)
    assert ev.top1 == bundle.metrics.test_top1
    cpu = evaluate(load_model(bundle), ds.test.images, ds.test.labels, bundle.input, num_classes=4)
    assert abs(cpu.top1 - ev.top1) <= 1 / len(ds.test)  # CPU and GPU kernels may differ on one borderline image


def test_timm_model_with_gpu_augmentation_mixup_cutmix_and_compile(tmp_path):
    from imgcls.bundle import load_bundle
    from imgcls.models.io import load_model
    from imgcls.train import fit

    cfg = _config(
        tmp_path,
        model={"arch": "resnet18"},
        augment={"trivial_augment": True, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        optim={"name": "adamw", "lr": 1e-3, "grad_clip": 1.0},
        train={"epochs": 2, "compile": True},
    )
    result = fit(cfg, dataset=_dataset())
    bundle = load_bundle(result.bundle_dir)
    assert bundle.model["arch"] == "resnet18" and bundle.model["small_input_stem"] is True
    load_model(bundle, device=DEVICE)  # the compiled wrapper's names (_orig_mod.) never reach the bundle
    assert len(result.history) == 2 and all(np.isfinite(r["train_loss"]) for r in result.history)


def test_resume_on_cuda(tmp_path):
    from imgcls.train import fit
    from imgcls.train.callbacks import Callback

    class Crash(Callback):
        def on_epoch_end(self, epoch):
            if epoch.epoch == 1:
                raise KeyboardInterrupt  # as if the job was stopped after epoch 1

    ds = _dataset()
    with pytest.raises(KeyboardInterrupt):
        fit(_config(tmp_path), dataset=ds, callbacks=[Crash()])
    assert (tmp_path / "run" / "checkpoints" / "last.json").is_file()
    result = fit(resume=tmp_path / "run", dataset=ds)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]


def test_cli_gpu_flag_trains_a_folder_of_pngs(tmp_path):
    from PIL import Image

    images, labels = _images(40, 3, 32, seed=3)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "data" / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", f"folder:{tmp_path / 'data'}", *DEVICE_FLAGS,
         "--epochs", "3", "--batch-size", "32", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=_child_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"on {DEVICE}" in proc.stdout and (tmp_path / "run" / "bundle.json").is_file()


def test_fast_path_whitening_stem_compile_fused_optimizer_and_flip_tta(tmp_path):
    from imgcls.bundle import load_bundle
    from imgcls.train import fit
    from imgcls.train.factory import build_optimizer

    cfg = _config(
        tmp_path,
        model={"width": 16, "whiten_stem": True},
        optim={"label_smoothing": 0.2},
        train={"compile": True, "flip_tta": True, "batch_size": 64, "eval_batch_size": 256, "epochs": 6},
    )
    assert bool(build_optimizer(cfg, torch.nn.Linear(2, 2).to(DEVICE)).defaults["fused"]) is CUDA
    result = fit(cfg, dataset=_dataset())
    m = load_bundle(result.bundle_dir).metrics
    assert m.test_top1 is not None and m.test_top1 > 0.9, m
    assert m.test_top1_flip_tta is not None and m.test_top1_flip_tta > 0.9, m
    assert all(r["images_per_sec"] > 0 for r in result.history)  # CUDA-event timing gave a real duration


def test_gpu_augmentation_draws_on_the_host_generator_and_matches_the_cpu_exactly():
    """Crop offsets and flips come from the CPU generator, copied without a stream sync: the CPU's very batch."""
    from imgcls.bundle import InputSpec
    from imgcls.config import AugmentConfig
    from imgcls.train.augment import BatchAugment

    images, labels = _images(64, 4, 32, seed=5)
    spec = InputSpec(size=(32, 32), channels=3, mean=(0.3, 0.3, 0.3), std=(0.2, 0.2, 0.2))
    cfg = AugmentConfig(crop_padding=4, hflip=True)
    batches = {}
    for device in ("cpu", DEVICE):
        aug = BatchAugment(cfg, spec, num_classes=4, device=device)
        gen = torch.Generator().manual_seed(7)
        x_u8 = torch.from_numpy(images).to(device)
        y = torch.from_numpy(labels).to(device)
        outs = [aug(x_u8, y, gen) for _ in range(3)]  # three steps: the generator's stream must stay in step
        batches[device] = [(x.cpu(), t.cpu()) for x, t in outs]
    for (xc, yc), (xg, yg) in zip(batches["cpu"], batches[DEVICE], strict=True):
        assert torch.equal(yc, yg)
        assert torch.allclose(xc, xg, atol=1e-6, rtol=0)


def _png_folder(root: Path, per_class: int = 40) -> Path:
    from PIL import Image

    images, labels = _images(per_class, 3, 32, seed=3)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


@pytest.mark.skipif(CUDA and torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpu_ddp_over_nccl_writes_one_bundle(tmp_path):
    data = _png_folder(tmp_path / "data")
    proc = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--data", f"folder:{data}", *DEVICE_FLAGS, "--epochs", "3",
         "--batch-size", "32", "--nproc-per-node", "2", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600, env=_child_env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from imgcls.bundle import load_bundle

    training = load_bundle(tmp_path / "run").meta.lineage.training
    assert training is not None and training.distributed is not None
    dist = training.distributed.to_dict()
    assert dist["world_size"] == 2 and dist["backend"] == ("nccl" if CUDA else "gloo") and dist["global_batch"] == 64
