"""One epoch of training (:func:`train_one_epoch`) and one pass of validation (:func:`validate`).

As in timm's ``train.py``, the epoch functions know nothing of checkpoints, the run directory or the bundle:
:func:`imgcls.train.loop.fit` strings them together.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imgcls.config import RunConfig
from imgcls.errors import DivergedError
from imgcls.train.callbacks import Callback, StepEnd
from imgcls.train.checkpoint import TrainState
from imgcls.train.evaluate import Evaluation
from imgcls.train.schedule import epoch_generator, lr_factor


@dataclass(frozen=True)
class StepPlan:
    """How the training images are cut into steps, and the learning-rate schedule over them."""

    batch: int  # images per step and process
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float  # after the scaling rule for the world size
    world_size: int = 1
    rank: int = 0
    base_lr: float = 0.0  # optim.lr, before scaling

    @property
    def global_batch(self) -> int:
        return self.batch * self.world_size

    @classmethod
    def for_run(cls, cfg: RunConfig, train_images: int, *, world_size: int = 1, rank: int = 0) -> StepPlan:
        """The plan for ``train_images`` images over ``world_size`` processes (incomplete batches are dropped).

        ``train.batch_size`` is per process; the global batch is ``world_size`` times that (fewer when the
        data is too small) and the learning rate follows ``distributed.lr_scaling``.
        """
        from imgcls.train.distributed import lr_scale

        t = cfg.train
        batch = max(1, min(t.batch_size, train_images // world_size))
        steps_per_epoch = max(1, train_images // (batch * world_size))
        total_steps = steps_per_epoch * t.epochs
        if t.max_steps is not None:
            total_steps = min(total_steps, t.max_steps)
        warmup = min(round(cfg.optim.warmup_epochs * steps_per_epoch), max(0, total_steps - 1))
        peak = cfg.optim.lr * lr_scale(cfg.distributed.lr_scaling, world_size)
        return cls(batch, steps_per_epoch, total_steps, warmup, peak, world_size, rank, cfg.optim.lr)

    def step_indices(self, order: Any, step: int) -> Any:
        """This process's slice of the ``step``-th (1-based) global batch of the epoch's permutation ``order``."""
        start = (step - 1) * self.global_batch + self.rank * self.batch
        return order[start : start + self.batch]

    def lr(self, global_step: int, schedule: str) -> float:
        return self.peak_lr * lr_factor(global_step, self.total_steps, self.warmup_steps, schedule)


@dataclass
class EpochTrain:
    """What one epoch of training measured."""

    loss: float  # mean training loss over the epoch's images
    top1: float  # training accuracy against the hard labels
    images: int
    seconds: float  # time spent in steps (validation and checkpoints excluded)
    lr: float  # the learning rate of the last step
    local_images: int = 0  # of ``images``, those this process trained on

    @property
    def images_per_sec(self) -> float:
        """Images per second over all processes (each ran its shard for about ``seconds``)."""
        return self.images / max(self.seconds, 1e-9)


def train_one_epoch(
    epoch: int,
    *,
    cfg: RunConfig,
    plan: StepPlan,
    state: TrainState,
    model: Any,
    forward: Any,
    optimizer: Any,
    augment: Any,
    images: Any,
    labels: Any,
    device: str,
    callback: Callback,
    elapsed: Callable[[], float],
    dist: Any = None,
) -> EpochTrain:
    """Train ``epoch`` (1-based) on uint8 ``images`` / ``labels`` tensors already on ``device``.

    ``forward`` is ``model`` or its compiled / DDP wrapper; ``state.global_step`` advances by one per step.
    Every process draws the same permutation (seeded by the epoch) and trains on its slice of each global batch;
    with ``dist`` the epoch's loss and accuracy are summed over the processes.

    Raises:
        DivergedError: the loss is not finite (exit 1).
    """
    import torch
    import torch.nn.functional as F

    t = cfg.train
    cuda = device.startswith("cuda")
    bf16 = cuda and t.precision == "bf16"
    clip = cfg.optim.grad_clip
    # Reading the loss waits for the device: on CUDA only every `sync_every` steps, so the GPU runs ahead.
    sync_every = t.sync_every or (25 if cuda else 1)
    timer = _CudaTimer() if cuda else None
    n = int(labels.shape[0])
    gen = epoch_generator(t.seed, epoch)
    order = torch.randperm(n, generator=gen).to(device)
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct_sum = torch.zeros((), device=device)
    seen = 0
    seconds = 0.0
    lr = plan.lr(state.global_step, cfg.optim.schedule)
    last = min(plan.steps_per_epoch, plan.total_steps - state.global_step)
    if timer is not None:
        timer.start()
    step_start = time.perf_counter()
    for step in range(1, last + 1):
        idx = plan.step_indices(order, step)
        x, targets = augment(images[idx], labels[idx], gen)
        lr = plan.lr(state.global_step, cfg.optim.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg.optim.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        state.global_step += 1
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        batch_correct = (logits.detach().argmax(1) == hard).sum()
        loss_sum += loss.detach() * len(idx)
        correct_sum += batch_correct
        seen += len(idx)
        if step % sync_every and step != last:
            continue
        loss_value = float(loss.detach())  # waits for the device
        seconds = timer.seconds() if timer is not None else seconds + time.perf_counter() - step_start
        if not math.isfinite(loss_value):
            raise DivergedError(
                f"training diverged: the loss is {loss_value} at epoch {epoch}, step {step}",
                hint="lower the learning rate (--lr) or clip gradients (--set optim.grad_clip=1.0)",
            )
        callback.on_step_end(
            StepEnd(
                epoch=epoch,
                epochs=t.epochs,
                step=step,
                steps_per_epoch=plan.steps_per_epoch,
                global_step=state.global_step,
                total_steps=plan.total_steps,
                loss=loss_value,
                top1=float(batch_correct) / len(idx),
                lr=lr,
                # every process takes an equal slice of each global batch: the job's rate is world_size × ours
                images_per_sec=seen * plan.world_size / max(seconds, 1e-9),
                elapsed=elapsed(),
            )
        )
        step_start = time.perf_counter()  # the callback's time is not training time
    local_seen = seen
    if dist is not None and dist.enabled:
        from imgcls.train.distributed import all_reduce_sum

        totals = torch.stack([loss_sum.float(), correct_sum.float(), torch.tensor(float(seen), device=device)])
        loss_sum, correct_sum, seen_t = all_reduce_sum(dist, totals)
        seen = int(seen_t)
    return EpochTrain(
        loss=float(loss_sum) / max(seen, 1),
        top1=float(correct_sum) / max(seen, 1),
        images=seen,
        seconds=seconds,
        lr=lr,
        local_images=local_seen,
    )


class _CudaTimer:
    """Device time since :meth:`start`, measured with CUDA events (host clocks stop long before the GPU does)."""

    def __init__(self) -> None:
        import torch

        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self._start.record()

    def seconds(self) -> float:
        self._end.record()
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end)) / 1000.0


def validate(
    model: Any, split: Any, spec: Any, *, cfg: RunConfig, num_classes: int, device: str, dist: Any = None
) -> Evaluation:
    """Score ``model`` on a dataset split (uint8 images + labels) with THE eval transform (sharded with ``dist``)."""
    from imgcls.train.evaluate import evaluate

    t = cfg.train
    return evaluate(
        model,
        split.images,
        split.labels,
        spec,
        num_classes=num_classes,
        batch_size=t.eval_batch_size,
        device=device,
        channels_last=t.channels_last,
        autocast_bf16=device.startswith("cuda") and t.precision == "bf16",
        dist=dist,
    )
