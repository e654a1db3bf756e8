"""How the training loop reports progress: plain dataclasses handed to :class:`Callback` hooks.

The loop never prints. The CLI renders these events (rich progress on a TTY, log lines otherwise), the W&B
logger forwards them, and benchmarks use them to time accuracy milestones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgcls.bundle import BundleMeta


@dataclass
class FitStart:
    """Everything known once data, model and optimiser are ready (sent once, before the first step)."""

    config: Any  # the resolved RunConfig
    dataset: Any  # imgcls.data.datasets.Dataset
    model: Any  # the torch module being trained (train mode, on ``device``)
    device: str
    run_dir: Path
    bundle_name: str
    epochs: int
    start_epoch: int  # 0, or the number of finished epochs when resuming
    steps_per_epoch: int
    total_steps: int
    global_step: int  # steps already taken (non-zero when resuming)
    num_parameters: int
    threads: int  # CPU threads torch uses (per process)
    world_size: int = 1  # processes training together
    global_batch: int = 0  # images per optimiser step over all processes
    lr: float = 0.0  # peak learning rate after the world-size scaling rule
    lr_scaling: str = "none"  # distributed.lr_scaling


@dataclass
class StepEnd:
    """After every optimiser step. ``images_per_sec`` is a running average over the current epoch."""

    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based step inside the epoch
    steps_per_epoch: int
    global_step: int  # 1-based over the whole run
    total_steps: int
    loss: float  # this batch's training loss (this process's shard of it: no collective per step)
    top1: float  # this batch's training accuracy (against the hard labels; this process's shard)
    lr: float
    images_per_sec: float  # over all processes, as the epoch's figure is
    elapsed: float  # seconds since fit() started


@dataclass
class EpochEnd:
    """After every epoch, once validation ran and the checkpoint was written."""

    epoch: int  # 1-based
    epochs: int
    global_step: int
    train_loss: float  # mean over the epoch
    train_top1: float
    val_loss: float
    val_top1: float
    val_top5: float
    lr: float
    seconds: float  # wall time of this epoch, validation included
    images_per_sec: float  # training throughput of this epoch
    elapsed: float  # seconds since fit() started
    is_best: bool
    best_val_top1: float
    best_epoch: int
    stopping: bool = False  # early stopping will end the run after this epoch

    def to_record(self) -> dict[str, Any]:
        """The epoch's line in ``metrics.jsonl``."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "train_loss": round(self.train_loss, 6),
            "train_top1": round(self.train_top1, 6),
            "val_loss": round(self.val_loss, 6),
            "val_top1": round(self.val_top1, 6),
            "val_top5": round(self.val_top5, 6),
            "lr": self.lr,
            "seconds": round(self.seconds, 3),
            "images_per_sec": round(self.images_per_sec, 1),
            "best": self.is_best,
        }


@dataclass
class FitEnd:
    """After the final evaluation, just before the bundle is written."""

    metrics: dict[str, Any]  # what goes into bundle.json's ``metrics``
    evaluation: Any  # imgcls.train.evaluate.Evaluation on the eval split (final weights)
    eval_split: str  # "test" or "val"
    eval_images: Any  # uint8 (N, H, W, C) images that ``evaluation`` scored
    classes: list[str]
    confusion_png: Path | None
    seconds: float


@dataclass
class FitResult:
    """What :func:`imgcls.train.fit` returns: the written bundle and its headline numbers."""

    bundle_dir: Path
    bundle_name: str
    metrics: dict[str, Any]
    epochs_run: int
    best_epoch: int
    seconds: float
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    wandb_run_id: str | None = None


class Callback:
    """Override the hooks you need. Hooks must not raise for ordinary conditions. One that raises ends the run
    with its exception (the sweep's pruner does, from ``on_epoch_end``): the run directory keeps the epoch's
    checkpoint, so ``fit(resume=run_dir)`` can finish it."""

    def on_fit_start(self, start: FitStart) -> None:
        pass

    def on_step_end(self, step: StepEnd) -> None:
        pass

    def on_epoch_end(self, epoch: EpochEnd) -> None:
        pass

    def on_fit_end(self, end: FitEnd) -> None:
        pass

    def on_bundle_staged(self, stage: Path, meta: BundleMeta) -> None:
        """The complete bundle is in ``stage`` (not yet renamed into place): e.g. upload it as an artifact."""

    def close(self, ok: bool) -> None:
        """Always called last, also when training failed (``ok`` False)."""

    def lineage(self) -> dict[str, Any]:
        """Extra keys for the bundle's ``lineage`` (e.g. the W&B run id)."""
        return {}


class CallbackList(Callback):
    """Fan one event out to many callbacks."""

    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.callbacks = list(callbacks or [])
        self._closed = False

    def on_fit_start(self, start: FitStart) -> None:
        for cb in self.callbacks:
            cb.on_fit_start(start)

    def on_step_end(self, step: StepEnd) -> None:
        for cb in self.callbacks:
            cb.on_step_end(step)

    def on_epoch_end(self, epoch: EpochEnd) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch)

    def on_fit_end(self, end: FitEnd) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(end)

    def on_bundle_staged(self, stage: Path, meta: BundleMeta) -> None:
        for cb in self.callbacks:
            cb.on_bundle_staged(stage, meta)

    def close(self, ok: bool) -> None:
        if self._closed:
            return
        self._closed = True
        for cb in self.callbacks:
            cb.close(ok)

    def lineage(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cb in self.callbacks:
            out.update(cb.lineage())
        return out
