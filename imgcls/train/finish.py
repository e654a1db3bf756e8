"""The end of a run: final evaluation of the best weights, plots, samples, and the bundle swapped into place."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import DriftSection, load_bundle
from imgcls.config import RunConfig, save_config
from imgcls.drift.reference import REFERENCE_FILE
from imgcls.fsio import atomic_write_bytes, atomic_write_json, staging_dir
from imgcls.train.callbacks import CallbackList, FitEnd, FitResult
from imgcls.train.checkpoint import TrainState
from imgcls.train.rundir import (
    CONFIG,
    CONFUSION_PNG,
    METRICS,
    METRICS_LOG,
    rewrite_metrics_log,
    swap_in,
)

logger = logging.getLogger(__name__)

SAMPLES = ("samples/train.npz", "samples/val.npz")
_SAMPLE_COUNT = 320  # images per samples/*.npz file ...
_SAMPLE_BYTES = 7 << 20  # ... but at most this many bytes of pixels per file


@dataclass
class Run:
    """What one fit() call works with (kept together so the finishing steps stay readable)."""

    cfg: RunConfig
    run_dir: Path
    name: str
    device: str
    dataset: Any
    model: Any  # the module whose parameters train (never the compiled or DDP wrapper)
    spec: dict[str, Any]
    state: TrainState
    best_state: dict[str, Any] | None
    lineage: dict[str, Any] | None = None  # extra ``lineage.training`` keys (e.g. distributed: world size)


def final_model(run: Run) -> Any:
    """The best-on-validation weights in a model rebuilt from the bundle's spec, as ``load_model`` will see it."""
    from imgcls.models import model_from_spec

    model = model_from_spec(run.spec)
    state = run.best_state if run.best_state is not None else run.model.state_dict()
    model.load_state_dict(state)
    return model.to(run.device).eval()


def write_bundle(run: Run, cbs: CallbackList, started: float, stopped_early: bool, dist: Any = None) -> FitResult:
    """Final evaluation, plots, samples, bundle staging and the atomic swap into the run directory.

    In a job of several processes every rank takes part in the (sharded, exact) final evaluation and only the
    primary one writes; the others return the same result without touching the disk.
    """
    from imgcls.models.io import save_bundle
    from imgcls.train.evaluate import evaluate
    from imgcls.train.plots import save_confusion_matrix

    cfg, ds = run.cfg, run.dataset
    classes = list(ds.classes)
    model = final_model(run)
    eval_kw: dict[str, Any] = {
        "num_classes": len(classes),
        "batch_size": cfg.train.eval_batch_size,
        "device": run.device,
        "dist": dist,
    }
    val = evaluate(model, ds.val.images, ds.val.labels, ds.input, **eval_kw)
    eval_split_name = "test" if ds.test is not None and len(ds.test) else "val"
    split = ds.eval_split
    ev = val if eval_split_name == "val" else evaluate(model, split.images, split.labels, ds.input, **eval_kw)

    seconds = run.state.elapsed if run.state.history else time.perf_counter() - started
    tta: dict[str, Any] = {}
    if cfg.train.flip_tta:  # reported beside the deployed model's figures, never instead of them
        tta["val_top1_flip_tta"] = evaluate(
            model, ds.val.images, ds.val.labels, ds.input, flip_tta=True, **eval_kw
        ).top1
        if eval_split_name != "val":
            tta[f"{eval_split_name}_top1_flip_tta"] = evaluate(
                model, split.images, split.labels, ds.input, flip_tta=True, **eval_kw
            ).top1
    # ``test_*`` means the test split only; without one, the final evaluation is the validation split's
    metrics: dict[str, Any] = {
        "val_top1": val.top1,
        "val_top5": val.top5,
        f"{eval_split_name}_top1": ev.top1,
        f"{eval_split_name}_top5": ev.top5,
        f"{eval_split_name}_loss": round(ev.loss, 6),
        "eval_split": eval_split_name,
        "eval_images": ev.count,
        "per_class_top1": ev.per_class_dict(classes),
        "best_epoch": run.state.best_epoch,
        "epochs": run.state.epoch,
        **tta,
    }
    result = FitResult(
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
    if dist is not None and not dist.is_primary:
        return result
    with staging_dir(run.run_dir) as stage:
        png = save_confusion_matrix(
            ev.confusion, classes, stage / CONFUSION_PNG, title=f"{run.name}: {eval_split_name} top-1 {ev.top1:.4f}"
        )
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
        rewrite_metrics_log(stage, run.state.history)
        save_config(cfg, stage / CONFIG)
        write_samples(stage, ds, cfg.train.seed)
        drift = write_drift_reference(stage, model, ds, cfg.train.seed, run.device)
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
                **(run.lineage or {}),
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
            extra_files=[CONFIG, METRICS, METRICS_LOG, CONFUSION_PNG, *SAMPLES, *([REFERENCE_FILE] if drift else [])],
            drift=drift,
        )
        meta = load_bundle(stage).meta
        cbs.on_bundle_staged(stage, meta)
        cbs.close(True)
        side = run.run_dir / "wandb"
        if side.is_dir():
            shutil.move(str(side), str(stage / "wandb"))
        swap_in(stage, run.run_dir)
    return result


def write_drift_reference(stage: Path, model: Any, ds: Any, seed: int, device: str) -> DriftSection | None:
    """``drift/reference.npz`` + the ``drift`` section from the validation split (PCA fitted on train images).

    Returns the section for the manifest (None when the validation split is too small).
    """
    from imgcls.drift.reference import DEFAULT_IMAGES, build_reference
    from imgcls.errors import UsageError

    try:
        section, blob = build_reference(
            model, ds.input, ds.val.images, ds.val.labels, pca_images=ds.train.images, size=DEFAULT_IMAGES,
            seed=seed, source=f"dataset {ds.name} (val split)", device=device,
        )  # fmt: skip
    except UsageError as exc:
        logger.warning("no drift reference: %s", exc.message)
        return None
    atomic_write_bytes(stage / REFERENCE_FILE, blob)
    return section


def write_samples(stage: Path, ds: Any, seed: int) -> None:
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
