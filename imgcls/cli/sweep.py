"""Search hyper-parameters with Optuna: every trial trains a normal bundle; the best one is reported."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from imgcls.cli._render import console, styled

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def sweep(
    config: Annotated[Path, typer.Argument(help="Base YAML run configuration (see configs/).", show_default=False)],
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="KEY=uniform:LO:HI | loguniform:LO:HI | int:LO:HI | choice:A,B,... (repeatable).",
            show_default=False,
        ),
    ],
    trials: Annotated[int, typer.Option(help="Trials this command runs.", min=1)] = 10,
    out: Annotated[
        Path | None, typer.Option(help="Where trial bundles go (default runs/sweep-<study>).", show_default=False)
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL shared by every machine of the study, e.g. postgresql://host/db "
            "(default: sqlite:///OUT/study.db).",
            show_default=False,
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the config's file name).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    pruner: Annotated[
        str,
        typer.Option(
            help="Stop a trial that falls behind the others at the same epoch: median (once 5 trials have "
            "finished), hyperband or none. A stopped trial keeps its checkpoints (imgcls train --resume DIR)."
        ),
    ] = "median",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key in every trial (repeatable).")
    ] = None,
) -> None:
    """Search hyper-parameters with Optuna: every trial trains a normal bundle; the best one is reported."""
    from imgcls.errors import ImgclsError, UsageError
    from imgcls.sweep import Param, run_sweep, shown_storage

    params = [Param.parse(p) for p in param]
    if study is not None and not study.strip():
        raise UsageError("--study is empty", hint="name the study, e.g. --study digits-lr, or drop --study")
    name = study or config.stem
    if out is None and not _SAFE_NAME.fullmatch(name):
        # the name becomes a folder: '../x' or 'a/b' would put the trials outside runs/
        raise UsageError(
            f"--study {name!r} cannot name the folder runs/sweep-<study>: use letters, digits, '.', '_' and '-'",
            hint="or choose the folder yourself with --out DIR",
        )
    out_dir = out or Path("runs") / f"sweep-{name}"
    from imgcls.deps import require
    from imgcls.fsio import check_output

    check_output(out_dir, "--out", folder=True)
    # a sweep's folder holds studies and trial bundles (shared by the machines of one study), never a run itself
    from imgcls.bundle import MANIFEST
    from imgcls.train.checkpoint import has_checkpoint

    if (out_dir / MANIFEST).exists() or has_checkpoint(out_dir):
        what = "a bundle" if (out_dir / MANIFEST).exists() else "an interrupted training run"
        raise UsageError(
            f"--out {out_dir} is {what}: the sweep's trials would be written inside it",
            hint="choose a folder of its own for the sweep, e.g. --out runs/sweep-NAME",
        )

    optuna = require("optuna", feature="imgcls sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # Optuna's own default handler
        handler.addFilter(_without_traceback)  # a failed trial's error is printed once, below, with its fix
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WarnOnce())

    def started() -> None:  # after the checks: a refused value is not preceded by a banner
        console.print(
            styled("study [bold]{}[/]: {} trial(s), trial bundles in {}", name, trials, out_dir), highlight=False
        )

    try:
        result = run_sweep(
            config,
            params,
            trials=trials,
            out=out_dir,
            storage=storage,
            study=name,
            overrides=set_ or [],
            seed=seed,
            pruner=pruner,
            on_start=started,
        )
    except KeyboardInterrupt:
        raise ImgclsError(
            "interrupted: the running trial is recorded as failed; the finished ones stay in the study",
            hint="run the same command again to continue the study (its storage keeps every finished trial)",
            exit_code=130,
        ) from None
    for t in sorted(result.trials, key=lambda t: t.number):
        values = t.describe_params()
        if t.val_top1 is None:
            what = "diverged" if t.diverged else "pruned"
            at = f"  run directory {t.where()}" if t.pruned and t.run_dir else ""
            console.print(
                styled("trial {:4d}  [yellow]{}[/] ({})  {}{}", t.number, what, t.diverged or t.pruned, values, at),
                highlight=False,
                soft_wrap=True,
            )
            continue
        test = f"{t.test_top1:.4f}" if isinstance(t.test_top1, float) else "-"
        mark = " [bold green]best[/]" if t.number == result.best.number else ""
        console.print(
            styled("trial {:4d}  val top-1 {:.4f}  test {}  {}" + mark, t.number, t.val_top1, test, values),
            highlight=False,
            soft_wrap=True,
        )
    if any(t.pruned for t in result.trials):
        console.print("  a pruned trial keeps its checkpoints: imgcls train --resume RUN_DIRECTORY finishes it",
                      highlight=False, soft_wrap=True)  # fmt: skip
    best = result.best
    console.print(
        styled(
            "[bold green]best[/] trial {}: val top-1 {:.4f}, bundle {}", best.number, best.val_top1 or 0, best.where()
        ),
        highlight=False,
        soft_wrap=True,
    )
    on = f" (on {host})" if (host := best.elsewhere()) else ""
    console.print(f"  publish it{on}: imgcls push {best.bundle_dir} --alias candidate", highlight=False,
                  soft_wrap=True)  # fmt: skip
    console.print(f"  storage: {shown_storage(result.storage)} (study {result.study})", highlight=False,
                  soft_wrap=True)  # fmt: skip


class _WarnOnce(logging.Filter):
    """Each warning once in a sweep: every trial loads the same data and model, so their warnings (a small split,
    an unreadable file) would repeat once per trial."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _without_traceback(record: logging.LogRecord) -> bool:
    """Optuna logs a failed trial's traceback as a warning; keep its one-line message only."""
    record.exc_info = record.exc_text = None
    return True
