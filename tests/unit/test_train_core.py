"""Unit tests of the training core's parts: schedule, augmentation, scoring, checkpoints, naming, W&B checks."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from imgcls.bundle import InputSpec
from imgcls.config import AugmentConfig, RunConfig, WandbConfig
from imgcls.errors import UsageError
from imgcls.train.evaluate import score
from imgcls.train.rundir import bundle_name, default_run_dir, slug
from imgcls.train.schedule import lr_factor


def test_lr_schedule_warms_up_then_decays_to_zero():
    total, warm = 100, 10
    one = [lr_factor(s, total, warm, "onecycle") for s in range(total)]
    cos = [lr_factor(s, total, warm, "cosine") for s in range(total)]
    const = [lr_factor(s, total, warm, "constant") for s in range(total)]
    assert one[0] == pytest.approx(0.1) and one[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in itertools.pairwise(one[:10]))  # warm-up rises
    assert all(a >= b for a, b in itertools.pairwise(one[10:]))  # then falls
    assert one[-1] < 0.02 and cos[-1] < 0.01
    assert cos[10] == pytest.approx(1.0) and cos[55] == pytest.approx(0.5, abs=0.02)
    assert const[50] == 1.0 and const[-1] == 1.0


def test_random_crop_translates_each_image_within_padding():
    import torch

    from imgcls.train.augment import random_crop

    x = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 3, 3] = 255  # one bright pixel per image
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in out if img.any()}
    assert len(positions) > 5  # images moved differently
    assert all(1 <= r <= 5 and 1 <= c <= 5 for r, c in positions)  # never more than 2 px
    assert torch.equal(random_crop(x, 0, g), x)


def test_random_crop_is_pad_then_crop_for_any_padding_and_costs_the_batchs_memory():
    import torch
    import torch.nn.functional as F

    from imgcls.train.augment import random_crop

    def pad_then_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:  # the textbook way
        n, _, h, w = x.shape
        padded = F.pad(x, (padding,) * 4)
        dy, dx = (
            torch.randint(0, 2 * padding + 1, (n,), generator=g),
            torch.randint(0, 2 * padding + 1, (n,), generator=g),
        )
        return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])

    x = torch.randint(0, 256, (32, 3, 6, 9), dtype=torch.uint8)
    for padding in (1, 4, 6, 9, 20):  # within, at and past the image's sides
        got = random_crop(x, padding, torch.Generator().manual_seed(padding))
        assert torch.equal(got, pad_then_crop(x, padding, torch.Generator().manual_seed(padding))), padding
    # padded by 1024 a side, a batch of 16 px images was a 3.3 GB tensor; under a 1 GB address-space margin it
    # must still run (in a child: the limit stays there)
    child = """
import resource, torch
from imgcls.train.augment import random_crop
torch.set_num_threads(1)
vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize')).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
x = torch.randint(0, 256, (256, 3, 16, 16), dtype=torch.uint8)
out = random_crop(x, 1024, torch.Generator().manual_seed(0))
print(tuple(out.shape), int((out.flatten(1).amax(1) == 0).sum()))
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    shape, empty = done.stdout.split(")")
    assert shape == "(256, 3, 16, 16" and int(empty) > 200  # most shifts of up to 1024 px leave nothing in view


def test_batch_augment_normalises_with_dataset_stats_and_is_seeded():
    import torch

    from imgcls.train.augment import BatchAugment

    spec = InputSpec(size=(8, 8), channels=3, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))
    plain = BatchAugment(AugmentConfig(crop_padding=0, hflip=False), spec, num_classes=3)
    images = torch.full((4, 8, 8, 3), 255, dtype=torch.uint8)
    x, y = plain(images, torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = [(1 - m) / s for m, s in zip(spec.mean, spec.std, strict=True)]
    assert torch.allclose(x[0, :, 0, 0], torch.tensor(expected))
    assert y.tolist() == [0, 1, 2, 0]

    aug = BatchAugment(AugmentConfig(crop_padding=2, hflip=True, trivial_augment=True), spec, num_classes=3)
    rnd = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(16, dtype=torch.long)
    a, _ = aug(rnd, labels, torch.Generator().manual_seed(5))
    b, _ = aug(rnd, labels, torch.Generator().manual_seed(5))
    c, _ = aug(rnd, labels, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mixup_cutmix_give_soft_targets():
    import torch

    from imgcls.train.augment import BatchAugment

    spec = InputSpec(size=(8, 8), channels=1, mean=(0.5,), std=(0.5,))
    aug = BatchAugment(AugmentConfig(mixup_alpha=0.2, cutmix_alpha=1.0), spec, num_classes=4)
    images = torch.randint(0, 256, (8, 8, 8, 1), dtype=torch.uint8)
    _, y = aug(images, torch.arange(8) % 4, torch.Generator().manual_seed(0))
    assert aug.soft_targets and y.shape == (8, 4)
    assert torch.allclose(y.sum(1), torch.ones(8))


def test_score_top1_top5_per_class_and_confusion():
    logits = np.array(
        [
            [9, 1, 0, 0, 0, 0, 0],  # true 0, predicted 0
            [0, 9, 1, 0, 0, 0, 0],  # true 1, predicted 1
            [9, 0, 1, 0, 0, 0, 0],  # true 2, predicted 0; 2 is in the top-5
            [9, 8, 7, 6, 5, 0, 0],  # true 6, predicted 0; 6 is not in the top-5
        ],
        dtype=np.float32,
    )
    ev = score(logits, np.array([0, 1, 2, 6]), num_classes=7)
    assert ev.top1 == 0.5 and ev.top5 == 0.75 and ev.count == 4
    assert ev.confusion[2, 0] == 1 and ev.confusion[0, 0] == 1 and ev.confusion.sum() == 4
    assert ev.per_class[0] == 1.0 and ev.per_class[2] == 0.0 and np.isnan(ev.per_class[3])
    per_class = ev.per_class_dict([str(i) for i in range(7)])
    assert per_class["1"] == 1.0 and per_class["3"] is None
    json.dumps(ev.to_dict([str(i) for i in range(7)]))  # JSON-able (no NaN objects)
    assert 0 < ev.confidences[0] <= 1 and ev.loss > 0


def test_names_and_default_run_dir():
    import datetime as dt

    cfg = RunConfig.model_validate({"data": {"name": "folder:/data/My Pets/"}, "model": {"arch": "resnet18"}})
    assert slug(cfg.data.name) == "folder-my-pets"
    assert bundle_name(cfg) == "folder-my-pets-resnet18"
    assert default_run_dir(cfg, dt.datetime(2026, 1, 2, 3, 4, 5)) == Path(
        "runs/folder-my-pets-resnet18-20260102-030405"
    )
    assert bundle_name(RunConfig.model_validate({"name": "pets-v2"})) == "pets-v2"


def test_checkpoint_roundtrip_restores_model_optimizer_and_rng(tmp_path):
    import torch

    from imgcls.train.checkpoint import TrainState, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    state = TrainState(epoch=1, global_step=5, best_val_top1=0.5, best_epoch=1, history=[{"epoch": 1}])
    save_checkpoint(tmp_path, model=model, best_state=model.state_dict(), optimizer=opt, state=state, config={"a": 1})
    expected_draw = torch.rand(3)

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.01)
    ckpt = load_checkpoint(tmp_path)
    ckpt.restore(fresh, fresh_opt)
    assert torch.equal(torch.rand(3), expected_draw)  # the global RNG continues where it was
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    s0, s1 = opt.state_dict()["state"][0], fresh_opt.state_dict()["state"][0]
    assert torch.equal(s0["exp_avg"], s1["exp_avg"]) and float(s0["step"]) == float(s1["step"])
    assert ckpt.state.global_step == 5 and ckpt.state.history == [{"epoch": 1}] and ckpt.config == {"a": 1}
    assert ckpt.best_state() is not None


def test_damaged_or_missing_checkpoint_is_a_clear_error(tmp_path):
    import torch

    from imgcls.train.checkpoint import TrainState, load_checkpoint, save_checkpoint

    with pytest.raises(UsageError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path, model=model, best_state=None, optimizer=opt, state=TrainState(epoch=1), config={})
    tensors = next((tmp_path / "checkpoints").glob("epoch-*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-3] + b"xyz")
    with pytest.raises(UsageError, match="does not match"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # a name that leaves checkpoints/ is refused before anything outside is opened
        (lambda r: r.update(tensors="../../../etc/passwd"), "damaged: tensors: String should match pattern"),
        (lambda r: r["state"].update(world_size=0), "damaged: state.world_size: Input should be greater than or"),
        (lambda r: r["state"].update(epoch=-5), "damaged: state.epoch"),
        (lambda r: r["state"].update(global_step="many"), "damaged: state.global_step: Input should be a valid int"),
        (lambda r: r.pop("state"), "damaged: state: Field required"),
        (lambda r: r.pop("config"), "damaged: config: Field required"),
        (lambda r: r["optimizer"].pop("param_groups"), "damaged: optimizer.param_groups: Field required"),
        (lambda r: r.update(sha256="abc"), "damaged: sha256"),
        (lambda r: r.update(format="imgcls.checkpoint/9"), "unknown format 'imgcls.checkpoint/9'"),
    ],
)
def test_a_damaged_or_edited_last_json_is_refused_with_the_field_at_fault(tmp_path, edit, message):
    import torch

    from imgcls.train.checkpoint import TrainState, load_checkpoint, save_checkpoint, saved_config, saved_world_size

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(tmp_path, model=model, best_state=None, optimizer=opt, state=TrainState(epoch=1, world_size=2),
                    config={"a": 1})  # fmt: skip
    assert saved_world_size(tmp_path) == 2 and saved_config(tmp_path) == {"a": 1}
    last = tmp_path / "checkpoints" / "last.json"
    record = json.loads(last.read_text())
    edit(record)
    last.write_text(json.dumps(record))
    # the worker's load, and the launcher's and the CLI's reads before any worker starts, say the same
    for read in (load_checkpoint, saved_world_size, saved_config):
        with pytest.raises(UsageError, match=re.escape(message)) as info:
            read(tmp_path)
        assert info.value.exit_code == 2 and "start the run again" in (info.value.hint or "")
    last.write_text("[1, 2]")
    with pytest.raises(UsageError, match="unknown format 'list'"):
        load_checkpoint(tmp_path)
    last.write_text("[" * 100_000 + "]" * 100_000)  # json's parser gives up at the interpreter's recursion limit
    with pytest.raises(UsageError, match="is unreadable"):
        load_checkpoint(tmp_path)


def test_wandb_online_without_key_fails_fast(tmp_path):
    from imgcls.train.wandb_logger import check_wandb
    from imgcls.wandb_run import has_api_key

    online = WandbConfig(enabled=True, mode="online")
    with pytest.raises(UsageError, match="API key") as info:
        check_wandb(online, {}, tmp_path)
    assert info.value.exit_code == 2 and "offline" in (info.value.hint or "")
    check_wandb(WandbConfig(enabled=True, mode="offline"), {}, tmp_path)  # offline needs no key
    check_wandb(WandbConfig(enabled=False, mode="online"), {}, tmp_path)  # off: nothing to check
    assert has_api_key({"WANDB_API_KEY": "x" * 40}, tmp_path)
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    assert has_api_key({}, tmp_path)
    check_wandb(online, {}, tmp_path)


def test_fit_trains_on_a_dataset_in_memory_whatever_its_name(tmp_path):
    """fit(cfg, dataset=...) takes arrays a caller built (the GPU tests' synthetic squares): the check of dataset
    names before a run must not refuse them (it did, 'unknown dataset', for four of the GPU tests)."""
    import dataclasses

    from imgcls.bundle import load_bundle
    from imgcls.config import DataConfig, RunConfig
    from imgcls.data.datasets import load_dataset
    from imgcls.train import fit

    data = dataclasses.replace(load_dataset(DataConfig(name="digits", img_size=8)), name="handmade-digits")
    cfg = RunConfig.model_validate(
        {"out": str(tmp_path / "run"), "data": {"name": "handmade-digits", "img_size": 8},
         "model": {"arch": "resnet8", "width": 8}, "train": {"epochs": 1, "device": "cpu"}}
    )  # fmt: skip
    result = fit(cfg, dataset=data)
    lineage = load_bundle(result.bundle_dir).meta.lineage
    assert lineage.dataset is not None and lineage.dataset.name == "handmade-digits"


def test_no_validation_images_from_classes_too_small_to_split_says_so(tmp_path):
    # the hint said "set data.val_fraction > 0 (e.g. 0.1)" when it was 0.1: the classes had 1 or 2 images each
    from PIL import Image

    from imgcls.errors import ConfigError
    from imgcls.train.factory import load_data

    for k, name in enumerate(("cat", "dog", "owl")):
        (tmp_path / "tiny" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (12, 12), (80 * k, 40 * i, 0)).save(tmp_path / "tiny" / name / f"{i}.png")
    cfg = RunConfig.model_validate({"data": {"name": f"folder:{tmp_path / 'tiny'}"}})
    with pytest.raises(ConfigError, match=r"no validation images: .*at most 1 training image per class") as info:
        load_data(cfg)
    assert "val_fraction > 0" not in (info.value.hint or "") and "2 or more" in info.value.hint
    cfg = RunConfig.model_validate({"data": {"name": "digits", "val_fraction": 0.0}})
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.0") as info:
        load_data(cfg)
    assert "val_fraction > 0" in info.value.hint
