"""Rendering of training progress for `imgcls train`: rich progress on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from imgcls.cli._render import console, styled
from imgcls.train.callbacks import Callback, EpochEnd, FitEnd, FitStart, StepEnd


def clock(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress(Callback):
    """Renders training events: a rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self) -> None:
        self.tty = console.is_terminal
        self.run_dir: Path | None = None
        self._bar: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self._steps_done_at_start = 0
        self._started = time.perf_counter()

    def on_fit_start(self, start: FitStart) -> None:
        self.run_dir = start.run_dir
        ds = start.dataset
        h, w = ds.input.size
        test = len(ds.test) if ds.test is not None else 0
        where = start.device
        if start.device == "cpu":
            where += f", {start.threads} thread{'' if start.threads == 1 else 's'}"
        console.print(
            styled(
                "training [bold]{}[/] {} on [bold]{}[/]: {}",
                start.config.model.arch,
                f"({start.num_parameters:,} parameters)",
                ds.name,
                f"{len(ds.classes)} classes, {len(ds.train):,} train / {len(ds.val):,} val / "
                f"{test:,} test images at {h}×{w}×{ds.input.channels}, on {where}",
            ),
            highlight=False,
            soft_wrap=True,
        )
        if start.world_size > 1:
            cfg = start.config
            console.print(
                f"{start.world_size} processes × batch {start.global_batch // start.world_size} = global batch "
                f"{start.global_batch}; lr {cfg.optim.lr:g} scaled {start.lr_scaling} -> {start.lr:g}",
                highlight=False,
                soft_wrap=True,
            )
        if start.start_epoch:
            console.print(f"resuming after epoch {start.start_epoch}/{start.epochs}", highlight=False, soft_wrap=True)
        console.print(f"run directory {start.run_dir}", highlight=False, soft_wrap=True)
        self._steps_done_at_start = start.global_step
        self._started = self._last_line = time.perf_counter()
        if self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  acc {task.fields[acc]:.3f}  {task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "train",
                total=start.total_steps,
                completed=start.global_step,
                epoch=start.start_epoch + 1,
                epochs=start.epochs,
                loss=float("nan"),
                acc=0.0,
                ips=0.0,
            )

    def on_step_end(self, step: StepEnd) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=step.global_step,
                epoch=step.epoch,
                loss=step.loss,
                acc=step.top1,
                ips=step.images_per_sec,
            )
            return
        now = time.perf_counter()
        if now - self._last_line >= 30.0:  # a sign of life during long epochs
            self._last_line = now
            console.print(
                f"epoch {step.epoch}/{step.epochs} step {step.step}/{step.steps_per_epoch} loss {step.loss:.4f} "
                f"{step.images_per_sec:,.0f} img/s ETA {clock(self._eta(step.global_step, step.total_steps))}",
                highlight=False,
                soft_wrap=True,
            )

    def _eta(self, done: int, total: int) -> float:
        run = done - self._steps_done_at_start
        if run <= 0:
            return 0.0
        return (time.perf_counter() - self._started) / run * (total - done)

    def on_epoch_end(self, epoch: EpochEnd) -> None:
        line = (
            f"epoch {epoch.epoch}/{epoch.epochs}  train loss {epoch.train_loss:.4f} acc {epoch.train_top1:.4f}  "
            f"val loss {epoch.val_loss:.4f} top-1 {epoch.val_top1:.4f} top-5 {epoch.val_top5:.4f}"
            f"{' *' if epoch.is_best else '  '}  {epoch.images_per_sec:,.0f} img/s  {epoch.seconds:.1f} s"
        )
        if epoch.stopping:
            line += f"  (early stop: best epoch {epoch.best_epoch})"
        if self._bar is not None:
            self._bar.console.print(line, highlight=False, soft_wrap=True)
        else:
            self._last_line = time.perf_counter()
            console.print(line, highlight=False, soft_wrap=True)

    def on_fit_end(self, end: FitEnd) -> None:
        self.stop()
        console.print(
            f"final evaluation on the {end.eval_split} split ({end.evaluation.count:,} images)", highlight=False
        )

    def close(self, ok: bool) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
