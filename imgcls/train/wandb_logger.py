"""Weights & Biases logging as a training callback. wandb is imported lazily and never prompts.

Logged: the resolved config, per-step training metrics, per-epoch validation metrics, the confusion matrix
(image + interactive chart), a table of sample predictions with their images, and the bundle as a ``model``
artifact. Offline mode writes under ``<run dir>/wandb/`` and needs no network (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from imgcls.bundle import BundleMeta
from imgcls.config import WandbConfig
from imgcls.errors import UsageError
from imgcls.train.callbacks import Callback, EpochEnd, FitEnd, FitStart, StepEnd
from imgcls.wandb_run import has_api_key, start_run

logger = logging.getLogger(__name__)

_SAMPLE_ROWS = 64


def check_wandb(cfg: WandbConfig, environ: Mapping[str, str], home: Path | None) -> None:
    """Fail fast (exit 2), before any training, when W&B is on but cannot run without prompting."""
    if not cfg.enabled:
        return
    from imgcls.deps import require

    require("wandb", feature="--wandb")
    if cfg.mode == "online" and not has_api_key(environ, home):
        raise UsageError(
            "--wandb-mode online needs a W&B API key, and none was found (WANDB_API_KEY or ~/.netrc)",
            hint="run `wandb login` or export WANDB_API_KEY=..., or use --wandb-mode offline "
            "(sync later with `wandb sync <run dir>/wandb/offline-run-*`)",
        )


def artifact_name(name: str) -> str:
    """A W&B artifact name (alphanumerics, dashes, underscores, dots)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


class WandbLogger(Callback):
    """Forward training events to a W&B run in ``run_dir/wandb``.

    Example:
        fit(cfg, callbacks=[WandbLogger(cfg.wandb, log_every=10)])   # fit() adds one itself when cfg.wandb.enabled
    """

    def __init__(self, cfg: WandbConfig, *, log_every: int = 10, resume_id: str | None = None) -> None:
        from imgcls.deps import require

        self.cfg = cfg
        self.log_every = max(1, log_every)
        self.resume_id = resume_id
        self.wandb: Any = require("wandb", feature="--wandb")
        self.run: Any = None

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else str(self.run.id)

    def on_fit_start(self, start: FitStart) -> None:
        wandb = self.wandb
        self.run = start_run(
            wandb,
            directory=start.run_dir,
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group,
            name=start.bundle_name,
            mode=self.cfg.mode,
            config=start.config.to_dict(),
            id=self.resume_id,
            resume="allow" if self.resume_id else None,
            job_type="train",
            reinit="finish_previous",
        )
        self.run.summary["num_parameters"] = start.num_parameters
        self.run.summary["dataset"] = start.dataset.name
        # how the run was laid out, beside the config, so that runs of different world sizes can be compared
        # (the bundle's lineage.training.distributed records the same)
        self.run.config.update(
            {"world_size": start.world_size, "global_batch": start.global_batch, "lr_peak": start.lr},
            allow_val_change=True,
        )

    def on_step_end(self, step: StepEnd) -> None:
        if self.run is None or step.global_step % self.log_every:
            return
        self.run.log(
            {
                "train/loss": step.loss,
                "train/top1": step.top1,
                "train/lr": step.lr,
                "train/images_per_sec": step.images_per_sec,
                "epoch": step.epoch - 1 + step.step / step.steps_per_epoch,
            },
            step=step.global_step,
        )

    def on_epoch_end(self, epoch: EpochEnd) -> None:
        if self.run is None:
            return
        self.run.log(
            {
                "epoch": epoch.epoch,
                "epoch/train_loss": epoch.train_loss,
                "epoch/train_top1": epoch.train_top1,
                "val/loss": epoch.val_loss,
                "val/top1": epoch.val_top1,
                "val/top5": epoch.val_top5,
                "epoch/seconds": epoch.seconds,
                "epoch/images_per_sec": epoch.images_per_sec,
            },
            step=epoch.global_step,
        )

    def on_fit_end(self, end: FitEnd) -> None:
        if self.run is None:
            return
        wandb = self.wandb
        ev = end.evaluation
        payload: dict[str, Any] = {
            f"{end.eval_split}/top1": ev.top1,
            f"{end.eval_split}/top5": ev.top5,
            f"{end.eval_split}/loss": ev.loss,
        }
        if end.confusion_png is not None:
            payload["confusion_matrix_image"] = wandb.Image(str(end.confusion_png))
        labels = ev.labels
        payload["confusion_matrix"] = wandb.plot.confusion_matrix(
            y_true=labels.tolist(), preds=ev.predictions.tolist(), class_names=list(end.classes)
        )
        payload["sample_predictions"] = self._sample_table(end, labels)
        self.run.log(payload)
        for key, value in end.metrics.items():
            if isinstance(value, int | float):
                self.run.summary[key] = value

    def _sample_table(self, end: FitEnd, labels: np.ndarray) -> Any:
        wandb = self.wandb
        ev = end.evaluation
        rng = np.random.default_rng(0)
        wrong = np.flatnonzero(ev.predictions != labels)
        right = np.flatnonzero(ev.predictions == labels)
        n_wrong = min(len(wrong), _SAMPLE_ROWS // 2)
        picks = np.concatenate(
            [
                rng.choice(wrong, n_wrong, replace=False) if n_wrong else np.zeros(0, np.int64),
                rng.choice(right, min(len(right), _SAMPLE_ROWS - n_wrong), replace=False),
            ]
        ).astype(np.int64)
        table = wandb.Table(columns=["image", "label", "prediction", "confidence", "correct"])
        for i in picks:
            img = end.eval_images[i]
            table.add_data(
                wandb.Image(img[..., 0] if img.shape[-1] == 1 else img),
                end.classes[int(labels[i])],
                end.classes[int(ev.predictions[i])],
                round(float(ev.confidences[i]), 4),
                bool(ev.predictions[i] == labels[i]),
            )
        return table

    def on_bundle_staged(self, stage: Path, meta: BundleMeta) -> None:
        if self.run is None:
            return
        wandb = self.wandb
        artifact = wandb.Artifact(
            artifact_name(meta.name),
            type="model",
            description=f"imgcls bundle {meta.name}",
            metadata={
                "metrics": {k: v for k, v in meta.metrics.to_dict().items() if not isinstance(v, dict)},
                "classes": len(meta.classes),
                "format": meta.format,
            },
        )
        artifact.add_dir(str(stage))
        self.run.log_artifact(artifact, aliases=["latest"])

    def close(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = None

    def lineage(self) -> dict[str, Any]:
        if self.run is None:
            return {}
        return {"wandb": {"run_id": self.run.id, "project": self.cfg.project, "mode": self.cfg.mode}}
