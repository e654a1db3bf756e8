"""The training loop: :func:`fit` turns a :class:`~imgcls.config.RunConfig` into a verified model bundle.

Data stays in memory as uint8 tensors on the training device; batches are augmented in torch
(:mod:`imgcls.train.augment`) and validation uses THE eval transform (:mod:`imgcls.train.evaluate`). The run
directory holds per-epoch checkpoints while training; the bundle is assembled in a hidden sibling directory
and swapped in at the end, so a half-written bundle never exists.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import MANIFEST, atomic_write_bytes, atomic_write_json, load_bundle
from imgcls.config import RunConfig, save_config
from imgcls.errors import ConfigError, DeviceError, ImgclsError, UsageError
from imgcls.train.callbacks import Callback, CallbackList, EpochEnd, FitEnd, FitResult, FitStart, StepEnd
from imgcls.train.checkpoint import Checkpoint, TrainState, has_checkpoint, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
CONFIG = "config.yaml"
CONFUSION_PNG = "confusion_matrix.png"
SAMPLES = ("samples/train.npz", "samples/val.npz")
_SAMPLE_COUNT = 320  # images per samples/*.npz file ...
_SAMPLE_BYTES = 7 << 20  # ... but at most this many bytes of pixels per file


def slug(text: str) -> str:
    """Lower-case ``[a-z0-9._-]`` form of a dataset or model name (``folder:/x/Pets`` -> ``folder-pets``)."""
    text = text.strip()
    if text.startswith("folder:"):
        text = "folder-" + Path(text[len("folder:") :].rstrip("/")).name
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return s or "run"


def default_run_dir(cfg: RunConfig, now: _dt.datetime | None = None) -> Path:
    """``runs/<data>-<model>-<timestamp>``."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{slug(cfg.data.name)}-{slug(cfg.model.arch)}-{stamp}"


def bundle_name(cfg: RunConfig) -> str:
    return cfg.name or f"{slug(cfg.data.name)}-{slug(cfg.model.arch)}"[:64]


def check_device(device: str) -> None:
    """DeviceError (exit 2) when CUDA is asked for and not there: never fall back to the CPU silently."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        reason = f"this torch ({torch.__version__}) was built without CUDA" if not built else "no CUDA device found"
        raise DeviceError(
            f"--gpu / train.device=cuda asks for CUDA, but CUDA is not available: {reason}",
            hint="run without --gpu (or --set train.device=cpu) to train on the CPU, "
            "or use a machine with an NVIDIA GPU and a CUDA build of torch",
        )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier for ``step`` (0-based): linear warm-up, then one-cycle / cosine / constant.

    ``onecycle`` decays linearly to 0 after the warm-up (a triangular cycle); ``cosine`` follows half a cosine.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


@dataclass
class _Run:
    """What one fit() call works with (kept together so the finishing steps stay readable)."""

    cfg: RunConfig
    run_dir: Path
    name: str
    device: str
    dataset: Any
    model: Any  # the module whose parameters train (never the compiled wrapper)
    spec: dict[str, Any]
    state: TrainState
    best_state: dict[str, Any] | None


def fit(
    cfg: RunConfig | None = None,
    *,
    callbacks: list[Callback] | None = None,
    resume: str | Path | None = None,
    dataset: Any = None,
) -> FitResult:
    """Train a model as ``cfg`` says and write its bundle; or, with ``resume``, finish an interrupted run.

    Args:
        cfg: the resolved run configuration. With ``resume`` it may be omitted (the run's saved one is used);
            if given it must equal the saved one.
        callbacks: receive progress events (:mod:`imgcls.train.callbacks`). A W&B logger is added when
            ``cfg.wandb.enabled``.
        resume: the run directory of an interrupted run: training continues after its last finished epoch.
        dataset: an already loaded :class:`~imgcls.data.datasets.Dataset` (arrays in memory) to train on
            instead of loading ``cfg.data``; its name and fingerprint go into the lineage as usual.

    Returns:
        The bundle directory and its headline metrics.

    Raises:
        ImgclsError: bad configuration or data (exit 2), no CUDA for ``train.device=cuda`` (exit 2), a
            diverging run (exit 1).

    Example:
        result = fit(load_config("configs/digits.yaml"))
        print(result.bundle_dir, result.metrics["test_top1"])
    """
    checkpoint: Checkpoint | None = None
    if resume is not None:
        run_dir = Path(resume).resolve()
        checkpoint = load_checkpoint(run_dir)
        saved = RunConfig.model_validate(checkpoint.config)
        if cfg is not None and cfg.to_dict() != saved.to_dict():
            diff = _config_diff(saved.to_dict(), cfg.to_dict())
            raise UsageError(
                f"--resume {run_dir}: the configuration differs from the interrupted run's ({diff})",
                hint="resume without other options: the run's saved configuration is used",
            )
        cfg = saved
    elif cfg is None:
        raise UsageError("fit() needs a configuration or a run directory to resume")
    else:
        run_dir = Path(cfg.out or default_run_dir(cfg)).resolve()
        _check_new_run_dir(run_dir)
        cfg = RunConfig.model_validate({**cfg.to_dict(), "out": str(run_dir)})

    import torch

    check_device(cfg.train.device)
    cbs = CallbackList(callbacks)
    if cfg.wandb.enabled:
        from imgcls.train.wandb_logger import WandbLogger

        cbs.callbacks.append(WandbLogger(cfg.wandb, resume_id=checkpoint.state.wandb_run_id if checkpoint else None))

    started = time.perf_counter()
    threads = _configure_torch(cfg)
    _seed_everything(cfg.train.seed)
    dataset = _load_data(cfg, dataset)
    model, spec = _build_model(cfg, dataset)
    device = cfg.train.device
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _build_optimizer(cfg, model)
    state = TrainState()
    best_state = None
    if checkpoint is not None:
        saved_fp = checkpoint.state.dataset_fingerprint
        if saved_fp is not None and saved_fp != dataset.fingerprint:
            raise UsageError(
                f"cannot resume {run_dir}: the dataset {dataset.name!r} changed since the run started "
                f"(fingerprint {dataset.fingerprint[:12]}…, the checkpoint has {saved_fp[:12]}…)",
                hint="restore the original data, or start a new run",
            )
        checkpoint.restore(model, optimizer)
        state = checkpoint.state
        best_state = checkpoint.best_state()
        logger.info("resuming %s after epoch %d", run_dir, state.epoch)
    state.dataset_fingerprint = dataset.fingerprint

    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        save_config(cfg, run_dir / CONFIG)
    else:
        _rewrite_metrics_log(run_dir, checkpoint.state.history)
    run = _Run(cfg, run_dir, bundle_name(cfg), device, dataset, model, spec, state, best_state)
    ok = False
    try:
        stopped_early = _train(run, optimizer, cbs, started, threads)
        result = _finish(run, cbs, started, stopped_early)
        ok = True
        return result
    finally:
        with contextlib.suppress(Exception):
            cbs.close(ok)
        if not ok and created and not has_checkpoint(run_dir) and not (run_dir / MANIFEST).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # failed before the first epoch: leave nothing behind


def _config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> str:
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = _config_diff(va, vb, f"{prefix}{key}.")
            if inner:
                diffs.append(inner)
        elif va != vb:
            diffs.append(f"{prefix}{key}: {va!r} -> {vb!r}")
    return ", ".join(diffs)


def _check_new_run_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} exists and is not a directory", hint="choose another --out")
    if has_checkpoint(run_dir):
        raise UsageError(
            f"--out {run_dir} holds an interrupted run",
            hint=f"continue it with `imgcls train --resume {run_dir}`, or choose another --out",
        )
    if (run_dir / MANIFEST).exists():
        raise UsageError(f"--out {run_dir} already holds a bundle", hint="choose another --out (bundles are immutable)")
    if any(run_dir.iterdir()):
        raise UsageError(f"--out {run_dir} exists and is not empty", hint="choose a new or empty directory")


def _configure_torch(cfg: RunConfig) -> int:
    import torch

    if cfg.train.device == "cpu":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        torch.set_num_threads(cfg.train.threads or cores)
        torch.set_flush_denormal(True)
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _load_data(cfg: RunConfig, dataset: Any = None) -> Any:
    from imgcls.data.datasets import load_dataset

    if dataset is None:
        dataset = load_dataset(cfg.data, seed=cfg.train.seed)
    if len(dataset.train) == 0:
        raise ConfigError(f"dataset {cfg.data.name!r} has no training images")
    if len(dataset.val) == 0:
        raise ConfigError(
            f"dataset {cfg.data.name!r} has no validation images (data.val_fraction={cfg.data.val_fraction})",
            hint="set data.val_fraction > 0 (e.g. --set data.val_fraction=0.1) or add a val/ folder",
        )
    for skipped in dataset.skipped[:20]:
        logger.warning("skipped unreadable image %s", skipped)
    return dataset


def _build_model(cfg: RunConfig, dataset: Any) -> tuple[Any, dict[str, Any]]:
    from imgcls.models import create_model, model_spec

    size = dataset.input.size
    img_size = int(size[0]) if size[0] == size[1] else int(max(size))
    kwargs = {"width": cfg.model.width, "drop_rate": cfg.model.drop_rate or None}
    num_classes = len(dataset.classes)
    model = create_model(
        cfg.model.arch,
        num_classes=num_classes,
        in_chans=dataset.input.channels,
        img_size=img_size,
        pretrained=cfg.model.pretrained,
        small_input_stem=cfg.model.small_input_stem,
        **kwargs,
    )
    if kwargs["width"] is None and isinstance(getattr(model, "width", None), int):
        kwargs["width"] = model.width  # record the effective width: a later default must not change the bundle
    spec = model_spec(
        cfg.model.arch,
        num_classes=num_classes,
        in_chans=dataset.input.channels,
        img_size=img_size,
        small_input_stem=cfg.model.small_input_stem,
        **kwargs,
    )
    return model, spec


def _build_optimizer(cfg: RunConfig, model: Any) -> Any:
    """SGD (Nesterov) or AdamW; no weight decay on norm layers and biases (every parameter with ndim <= 1)."""
    import torch

    o = cfg.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999))
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)


def _epoch_generator(seed: int, epoch: int) -> Any:
    """The data order and augmentation of an epoch depend only on (seed, epoch): resume replays them exactly."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919) % 2**63)


def _train(run: _Run, optimizer: Any, cbs: CallbackList, started: float, threads: int) -> bool:
    """The epochs. Returns True when early stopping ended the run."""
    import torch
    import torch.nn.functional as F

    from imgcls.train.augment import BatchAugment
    from imgcls.train.evaluate import evaluate

    cfg, ds, model, state = run.cfg, run.dataset, run.model, run.state
    t = cfg.train
    cuda = run.device == "cuda"
    bf16 = cuda and t.precision == "bf16"
    num_classes = len(ds.classes)
    train_x = torch.from_numpy(np.ascontiguousarray(ds.train.images)).to(run.device)
    train_y = torch.from_numpy(ds.train.labels.astype(np.int64)).to(run.device)
    n = int(train_y.shape[0])
    batch = min(t.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    warmup = min(round(cfg.optim.warmup_epochs * steps_per_epoch), max(0, total_steps - 1))
    augment = BatchAugment(cfg.augment, ds.input, num_classes=num_classes, device=run.device)
    forward = torch.compile(model) if t.compile else model
    peak_lr = cfg.optim.lr
    clip = cfg.optim.grad_clip

    cbs.on_fit_start(
        FitStart(
            config=cfg,
            dataset=ds,
            model=model,
            device=run.device,
            run_dir=run.run_dir,
            bundle_name=run.name,
            epochs=t.epochs,
            start_epoch=state.epoch,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            global_step=state.global_step,
            num_parameters=sum(p.numel() for p in model.parameters()),
            threads=threads,
        )
    )
    run_id = cbs.lineage().get("wandb", {}).get("run_id")
    if run_id:  # the W&B run id must survive a resume
        state.wandb_run_id = run_id
    resumed_elapsed = state.elapsed
    stopped_early = False
    while state.epoch < t.epochs and state.global_step < total_steps:
        epoch = state.epoch + 1
        epoch_start = time.perf_counter()
        gen = _epoch_generator(t.seed, epoch)
        order = torch.randperm(n, generator=gen).to(run.device)
        model.train()
        loss_sum = torch.zeros((), device=run.device)
        correct_sum = torch.zeros((), device=run.device)
        seen = 0
        train_seconds = 0.0
        for step in range(1, steps_per_epoch + 1):
            if state.global_step >= total_steps:
                break
            step_start = time.perf_counter()
            idx = order[(step - 1) * batch : step * batch]
            labels = train_y[idx]
            x, targets = augment(train_x[idx], labels, gen)
            lr = peak_lr * lr_factor(state.global_step, total_steps, warmup, cfg.optim.schedule)
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
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise ImgclsError(
                    f"training diverged: the loss is {loss_value} at epoch {epoch}, step {step}",
                    hint="lower the learning rate (--lr) or clip gradients (--set optim.grad_clip=1.0)",
                )
            loss_sum += loss.detach() * len(idx)
            correct_sum += batch_correct
            seen += len(idx)
            train_seconds += time.perf_counter() - step_start
            cbs.on_step_end(
                StepEnd(
                    epoch=epoch,
                    epochs=t.epochs,
                    step=step,
                    steps_per_epoch=steps_per_epoch,
                    global_step=state.global_step,
                    total_steps=total_steps,
                    loss=loss_value,
                    top1=float(batch_correct) / len(idx),
                    lr=lr,
                    images_per_sec=seen / max(train_seconds, 1e-9),
                    elapsed=resumed_elapsed + time.perf_counter() - started,
                )
            )
        val = evaluate(
            model,
            ds.val.images,
            ds.val.labels,
            ds.input,
            num_classes=num_classes,
            batch_size=t.eval_batch_size,
            device=run.device,
            channels_last=t.channels_last,
            autocast_bf16=bf16,
        )
        state.epoch = epoch
        # best = highest validation top-1; on a tie (small validation sets), the lower validation loss
        is_best = (val.top1, -val.loss) > (state.best_val_top1, -state.best_val_loss)
        if is_best:
            state.best_val_top1, state.best_val_loss, state.best_epoch = val.top1, val.loss, epoch
            state.epochs_without_improvement = 0
            run.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            state.epochs_without_improvement += 1
        patience = t.early_stopping_patience
        stopping = patience is not None and state.epochs_without_improvement >= patience and epoch < t.epochs
        record = EpochEnd(
            epoch=epoch,
            epochs=t.epochs,
            global_step=state.global_step,
            train_loss=float(loss_sum) / max(seen, 1),
            train_top1=float(correct_sum) / max(seen, 1),
            val_loss=val.loss,
            val_top1=val.top1,
            val_top5=val.top5,
            lr=lr,
            seconds=time.perf_counter() - epoch_start,
            images_per_sec=seen / max(train_seconds, 1e-9),
            elapsed=resumed_elapsed + time.perf_counter() - started,
            is_best=is_best,
            best_val_top1=state.best_val_top1,
            best_epoch=state.best_epoch,
            stopping=stopping,
        )
        state.history.append(record.to_record())
        state.elapsed = record.elapsed
        save_checkpoint(
            run.run_dir, model=model, best_state=run.best_state, optimizer=optimizer, state=state, config=cfg.to_dict()
        )
        _append_metrics_line(run.run_dir, state.history[-1])
        cbs.on_epoch_end(record)
        if stopping:
            logger.info("early stopping after epoch %d (best epoch %d)", epoch, state.best_epoch)
            stopped_early = True
            break
    return stopped_early


def _append_metrics_line(run_dir: Path, record: dict[str, Any]) -> None:
    import json

    with open(run_dir / METRICS_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rewrite_metrics_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    import json

    atomic_write_bytes(run_dir / METRICS_LOG, "".join(json.dumps(r) + "\n" for r in history).encode())


def _final_model(run: _Run) -> Any:
    """The best-on-validation weights in a model rebuilt from the bundle's spec, as ``load_model`` will see it."""
    from imgcls.models import model_from_spec

    model = model_from_spec(run.spec)
    state = run.best_state if run.best_state is not None else run.model.state_dict()
    model.load_state_dict(state)
    return model.to(run.device).eval()


def _finish(run: _Run, cbs: CallbackList, started: float, stopped_early: bool) -> FitResult:
    """Final evaluation, plots, samples, bundle staging and the atomic swap into the run directory."""
    from imgcls.models.io import save_bundle
    from imgcls.train.evaluate import evaluate
    from imgcls.train.plots import save_confusion_matrix

    cfg, ds = run.cfg, run.dataset
    classes = list(ds.classes)
    model = _final_model(run)
    eval_kw: dict[str, Any] = {
        "num_classes": len(classes),
        "batch_size": cfg.train.eval_batch_size,
        "device": run.device,
    }
    val = evaluate(model, ds.val.images, ds.val.labels, ds.input, **eval_kw)
    eval_split_name = "test" if ds.test is not None and len(ds.test) else "val"
    split = ds.eval_split
    ev = val if eval_split_name == "val" else evaluate(model, split.images, split.labels, ds.input, **eval_kw)

    stage = Path(tempfile.mkdtemp(prefix=f".{run.run_dir.name}.staging-", dir=run.run_dir.parent))
    try:
        png = save_confusion_matrix(
            ev.confusion, classes, stage / CONFUSION_PNG, title=f"{run.name}: {eval_split_name} top-1 {ev.top1:.4f}"
        )
        metrics = {
            "val_top1": val.top1,
            "val_top5": val.top5,
            "test_top1": ev.top1,
            "test_top5": ev.top5,
            "test_loss": round(ev.loss, 6),
            "eval_split": eval_split_name,
            "eval_images": ev.count,
            "per_class_top1": ev.per_class_dict(classes),
            "best_epoch": run.state.best_epoch,
            "epochs": run.state.epoch,
        }
        seconds = run.state.elapsed if run.state.history else time.perf_counter() - started
        cbs.on_fit_end(
            FitEnd(
                metrics=metrics,
                evaluation=ev,
                eval_split=eval_split_name,
                eval_images=split.images,
                classes=classes,
                confusion_png=png,
                seconds=seconds,
            )
        )
        atomic_write_json(
            stage / METRICS,
            {
                "classes": classes,
                "summary": metrics,
                "val": val.to_dict(classes),
                eval_split_name: ev.to_dict(classes),
                "history": run.state.history,
            },
        )
        _rewrite_metrics_log(stage, run.state.history)
        save_config(cfg, stage / CONFIG)
        _write_samples(stage, ds, cfg.train.seed)
        lineage = {
            "dataset": {
                "name": ds.name,
                "fingerprint": ds.fingerprint,
                "classes": len(classes),
                "images": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test) if ds.test else 0},
                "native_size": list(ds.native_size),
                "skipped_files": len(ds.skipped),
            },
            "config": cfg.to_dict(),
            "training": {
                "device": run.device,
                "epochs_run": run.state.epoch,
                "best_epoch": run.state.best_epoch,
                "global_steps": run.state.global_step,
                "stopped_early": stopped_early,
                "seconds": round(seconds, 2),
                "seed": cfg.train.seed,
            },
            **cbs.lineage(),
        }
        save_bundle(
            stage,
            model=model,
            name=run.name,
            classes=classes,
            input_spec=ds.input,
            model_spec=run.spec,
            metrics=metrics,
            lineage=lineage,
            extra_files=[CONFIG, METRICS, METRICS_LOG, CONFUSION_PNG, *SAMPLES],
        )
        meta = load_bundle(stage).meta
        cbs.on_bundle_staged(stage, meta)
        cbs.close(True)
        side = run.run_dir / "wandb"
        if side.is_dir():
            shutil.move(str(side), str(stage / "wandb"))
        _swap_in(stage, run.run_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return FitResult(
        bundle_dir=run.run_dir,
        bundle_name=run.name,
        metrics=metrics,
        epochs_run=run.state.epoch,
        best_epoch=run.state.best_epoch,
        seconds=seconds,
        stopped_early=stopped_early,
        history=list(run.state.history),
        wandb_run_id=run.state.wandb_run_id,
    )


def _write_samples(stage: Path, ds: Any, seed: int) -> None:
    """``samples/{train,val}.npz``: real prepared images (+ labels) for export's parity gate and calibration."""
    import io

    rng = np.random.default_rng(seed)
    for rel, split in zip(SAMPLES, (ds.train, ds.val), strict=True):
        per_image = max(1, int(np.prod(split.images.shape[1:])))
        count = min(len(split), _SAMPLE_COUNT, max(16, _SAMPLE_BYTES // per_image))
        pick = np.sort(rng.choice(len(split), count, replace=False))
        buf = io.BytesIO()
        np.savez(buf, images=np.ascontiguousarray(split.images[pick]), labels=split.labels[pick].astype(np.int64))
        atomic_write_bytes(stage / rel, buf.getvalue())


def _swap_in(stage: Path, run_dir: Path) -> None:
    """Make ``stage`` the run directory in one step; the old run directory (checkpoints) is removed."""
    from imgcls.bundle import _exchange

    os.chmod(stage, 0o755)
    if run_dir.exists():
        if _exchange(stage, run_dir):
            shutil.rmtree(stage, ignore_errors=True)  # stage now holds the old run directory
            return
        old = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
        os.rename(run_dir, old)
        os.rename(stage, run_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, run_dir)
