"""The training loop: :func:`fit` turns a :class:`~imgcls.config.RunConfig` into a verified model bundle.

The rooms it strings together, as timm's ``train.py`` does:

- :mod:`imgcls.train.factory`: device check, torch settings, seeds, data, model, optimiser;
- :mod:`imgcls.train.epoch`: :func:`~imgcls.train.epoch.train_one_epoch` and :func:`~imgcls.train.epoch.validate`;
- :mod:`imgcls.train.checkpoint`: the :class:`~imgcls.train.checkpoint.CheckpointSaver` (per-epoch, for resume);
- :mod:`imgcls.train.rundir`: the run directory (names, checks, metrics log, the final swap);
- :mod:`imgcls.train.finish`: final evaluation and the bundle.

Data stays in memory as uint8 tensors on the training device; batches are augmented in torch
(:mod:`imgcls.train.augment`) and validation uses THE eval transform (:mod:`imgcls.train.evaluate`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import MANIFEST
from imgcls.config import RunConfig, save_config
from imgcls.errors import UsageError
from imgcls.train import distributed
from imgcls.train.callbacks import Callback, CallbackList, EpochEnd, FitResult, FitStart
from imgcls.train.checkpoint import (
    Checkpoint,
    CheckpointSaver,
    TrainState,
    check_world_size,
    has_checkpoint,
    load_checkpoint,
)
from imgcls.train.distributed import DistEnv, device_for
from imgcls.train.epoch import StepPlan, train_one_epoch, validate
from imgcls.train.factory import (
    build_model,
    build_optimizer,
    check_run,
    configure_torch,
    load_data,
    seed_everything,
    too_many_threads,
)
from imgcls.train.finish import Run, write_bundle
from imgcls.train.rundir import (
    CONFIG,
    append_metrics_line,
    bundle_name,
    check_new_run_dir,
    config_diff,
    default_run_dir,
    rewrite_metrics_log,
)

logger = logging.getLogger(__name__)


def fit(
    cfg: RunConfig | None = None,
    *,
    callbacks: list[Callback] | None = None,
    resume: str | Path | None = None,
    dataset: Any = None,
    dist: DistEnv | None = None,
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
        dist: this process's place in a data-parallel job (:mod:`imgcls.train.distributed`; the CLI reads it
            from torchrun's environment). Callbacks and every write run on rank 0 only. After an elastic
            restart (``dist.restart_count > 0``) a run with a checkpoint resumes from it.

    Returns:
        The bundle directory and its headline metrics.

    Raises:
        ImgclsError: bad configuration or data (exit 2), no CUDA for ``train.device=cuda`` (exit 2), a
            diverging run (exit 1).

    Example:
        result = fit(load_config("configs/digits.yaml"))
        print(result.bundle_dir, result.metrics["test_top1"])  # "val_top1" for a dataset without a test split
    """
    dist = dist or DistEnv()
    store = None
    try:
        if cfg is not None and cfg.out is None and resume is None and dist.enabled:
            # An external launcher (torchrun, a PyTorchJob, Vertex AI) started the job without --out: rank 0 names
            # the run directory for every rank and, through the launcher's store, for every restart of the group.
            # before waiting for the others
            check_run(cfg, gpus=dist.local_rank + 1, world_size=dist.world_size, data_given=dataset is not None)
            timeouts = cfg.distributed.timeout_s, cfg.distributed.join_timeout_s
            store = distributed.init(dist, device_for(cfg.train.device, dist), *timeouts)
            new = cfg  # not None, for the closure (mypy does not carry the narrowing of `cfg` into a lambda)
            out = distributed.agree(dist, store, "run directory", lambda: str(Path(default_run_dir(new)).resolve()))
            cfg = RunConfig.model_validate({**cfg.to_dict(), "out": out})
        return _start(cfg, resume, callbacks, dataset, dist, joined=store is not None)
    finally:
        distributed.shutdown(dist)


def _start(
    cfg: RunConfig | None,
    resume: str | Path | None,
    callbacks: list[Callback] | None,
    dataset: Any,
    dist: DistEnv,
    *,
    joined: bool,
) -> FitResult:
    """Choose the run directory (new, resumed, or restarted by torchelastic), check the run, join the group."""
    restarted = cfg is not None and cfg.out is not None and resume is None and dist.restart_count > 0
    if restarted and cfg is not None and has_checkpoint(Path(str(cfg.out)).resolve()):
        resume, cfg = Path(str(cfg.out)), None  # torchelastic restarted the job: continue from the checkpoint
    checkpoint: Checkpoint | None = None
    if resume is not None:
        run_dir = Path(resume).resolve()
        checkpoint = load_checkpoint(run_dir)
        saved = RunConfig.model_validate(checkpoint.config)
        if cfg is not None and cfg.to_dict() != saved.to_dict():
            diff = config_diff(saved.to_dict(), cfg.to_dict())
            raise UsageError(
                f"--resume {run_dir}: the configuration differs from the interrupted run's ({diff})",
                hint="resume without other options: the run's saved configuration is used",
            )
        cfg = saved
        check_world_size(run_dir, checkpoint.state.world_size, dist.world_size)
    elif cfg is None:
        raise UsageError("fit() needs a configuration or a run directory to resume")
    else:
        run_dir = Path(cfg.out or default_run_dir(cfg)).resolve()
        if dist.restart_count == 0:
            from imgcls.data.folder import check_output_outside

            check_new_run_dir(run_dir)
            check_output_outside(run_dir, cfg.data.name, "the run directory")
        cfg = RunConfig.model_validate({**cfg.to_dict(), "out": str(run_dir)})

    # before the data loads, not after; this process uses cuda:LOCAL_RANK
    check_run(cfg, gpus=dist.local_rank + 1, world_size=dist.world_size, data_given=dataset is not None)
    device = device_for(cfg.train.device, dist)
    if not joined:
        distributed.init(dist, device, cfg.distributed.timeout_s, cfg.distributed.join_timeout_s)
    try:
        return _fit(cfg, run_dir, checkpoint, callbacks, dataset, dist, device)
    except RuntimeError as exc:  # a hung or dead peer: the backend's error, not an "unexpected" one
        failure = distributed.peer_failure(dist, exc, cfg.distributed.timeout_s)
        if failure is None:
            raise
        raise failure from None


def _fit(
    cfg: RunConfig,
    run_dir: Path,
    checkpoint: Checkpoint | None,
    callbacks: list[Callback] | None,
    dataset: Any,
    dist: DistEnv,
    device: str,
) -> FitResult:
    import torch

    primary = dist.is_primary
    cbs = CallbackList(callbacks if primary else None)
    if cfg.wandb.enabled and primary:
        from imgcls.train.wandb_logger import WandbLogger

        # first: it logs each epoch before a later callback (the sweep's pruner) may end the run at it
        cbs.callbacks.insert(0, WandbLogger(cfg.wandb, resume_id=checkpoint.state.wandb_run_id if checkpoint else None))

    started = time.perf_counter()
    procs = dist.local_world_size if dist.enabled else 1
    threads = configure_torch(cfg, processes_per_machine=procs)
    if primary and (crowded := too_many_threads(cfg, procs)):
        logger.warning(crowded)
    seed_everything(cfg.train.seed)
    dataset = load_data(cfg, dataset)
    model, spec = build_model(cfg, dataset)
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.model.whiten_stem and checkpoint is None:
        from imgcls.train.whiten import whiten_first_conv

        whitened = whiten_first_conv(model, dataset.train.images, dataset.input, seed=cfg.train.seed)
        logger.info("whitening stem: %d filters from the training patches", whitened)
    optimizer = build_optimizer(cfg, model)
    state = TrainState(world_size=dist.world_size)
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

    distributed.barrier(dist)  # every rank has checked the run directory before rank 0 writes into it
    created = not run_dir.exists()
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:
            save_config(cfg, run_dir / CONFIG)
        else:
            rewrite_metrics_log(run_dir, checkpoint.state.history)
    run = Run(cfg, run_dir, bundle_name(cfg), device, dataset, model, spec, state, best_state)
    ok = False
    try:
        stopped_early = _train(run, optimizer, cbs, started, threads, dist)
        result = write_bundle(run, cbs, started, stopped_early, dist)
        # Steps that need the finished bundle (e.g. the drift reference) go here, on rank 0 (`primary`):
        # result.bundle_dir is in place and verified.
        distributed.barrier(dist)  # no rank reports success before the bundle exists
        ok = True
        return result
    finally:
        with contextlib.suppress(Exception):
            cbs.close(ok)
        if not ok and primary and created and not has_checkpoint(run_dir) and not (run_dir / MANIFEST).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # failed before the first epoch: leave nothing behind


def _train(run: Run, optimizer: Any, cbs: CallbackList, started: float, threads: int, dist: DistEnv) -> bool:
    """The epochs: train, validate, keep the best weights, checkpoint. Returns True when early stopping ended it."""
    import torch

    from imgcls.train.augment import BatchAugment

    cfg, ds, model, state = run.cfg, run.dataset, run.model, run.state
    t = cfg.train
    num_classes = len(ds.classes)
    train_x = torch.from_numpy(np.ascontiguousarray(ds.train.images)).to(run.device)
    train_y = torch.from_numpy(ds.train.labels.astype(np.int64)).to(run.device)
    plan = StepPlan.for_run(cfg, int(train_y.shape[0]), world_size=dist.world_size, rank=dist.rank)
    augment = BatchAugment(cfg.augment, ds.input, num_classes=num_classes, device=run.device)
    model, forward = distributed.wrap_model(dist, model, sync_bn=cfg.distributed.sync_bn, device=run.device)
    run.model = model
    forward = torch.compile(forward) if t.compile else forward
    saver = CheckpointSaver(run.run_dir, cfg.to_dict()) if dist.is_primary else None
    run.lineage = {
        "distributed": {
            "world_size": dist.world_size,
            "backend": ("nccl" if run.device.startswith("cuda") else "gloo") if dist.enabled else None,
            "batch_per_process": plan.batch,
            "global_batch": plan.global_batch,
            "lr_scaling": cfg.distributed.lr_scaling,
            "base_lr": plan.base_lr,
            "lr": plan.peak_lr,
            "sync_bn": cfg.distributed.sync_bn and dist.enabled,
        }
    }

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
            steps_per_epoch=plan.steps_per_epoch,
            total_steps=plan.total_steps,
            global_step=state.global_step,
            num_parameters=sum(p.numel() for p in model.parameters()),
            threads=threads,
            world_size=dist.world_size,
            global_batch=plan.global_batch,
            lr=plan.peak_lr,
            lr_scaling=cfg.distributed.lr_scaling,
        )
    )
    run_id = cbs.lineage().get("wandb", {}).get("run_id")
    if run_id:  # the W&B run id must survive a resume
        state.wandb_run_id = run_id
    resumed_elapsed = state.elapsed

    def elapsed() -> float:
        return resumed_elapsed + time.perf_counter() - started

    while state.epoch < t.epochs and state.global_step < plan.total_steps:
        epoch = state.epoch + 1
        epoch_start = time.perf_counter()
        trained = train_one_epoch(
            epoch,
            cfg=cfg,
            plan=plan,
            state=state,
            model=model,
            forward=forward,
            optimizer=optimizer,
            augment=augment,
            images=train_x,
            labels=train_y,
            device=run.device,
            callback=cbs,
            elapsed=elapsed,
            dist=dist,
        )
        distributed.average_buffers(dist, model)  # the same BatchNorm statistics (and model) on every rank
        val = validate(model, ds.val, ds.input, cfg=cfg, num_classes=num_classes, device=run.device, dist=dist)
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
            train_loss=trained.loss,
            train_top1=trained.top1,
            val_loss=val.loss,
            val_top1=val.top1,
            val_top5=val.top5,
            lr=trained.lr,
            seconds=time.perf_counter() - epoch_start,
            images_per_sec=trained.images_per_sec,
            elapsed=elapsed(),
            is_best=is_best,
            best_val_top1=state.best_val_top1,
            best_epoch=state.best_epoch,
            stopping=stopping,
        )
        state.history.append(record.to_record())
        state.elapsed = record.elapsed
        if saver is not None:
            saver.save(model=model, best_state=run.best_state, optimizer=optimizer, state=state)
            append_metrics_line(run.run_dir, state.history[-1])
        cbs.on_epoch_end(record)
        if stopping:
            logger.info("early stopping after epoch %d (best epoch %d)", epoch, state.best_epoch)
            return True
    return False
