"""Train a classifier and write a verified model bundle (weights, metrics, plots, config, samples)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from imgcls.cli import _render
from imgcls.cli._render import console, styled

_DIST = "Distributed (torchrun)"


def train(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML run configuration (see configs/).", show_default=False)
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="digits, mnist, fashion-mnist, cifar10, cifar100 or folder:PATH.", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where datasets live (default ~/.cache/imgcls/data).", show_default=False)
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="resnet8, resnet8_wide or any timm name (resnet18, ...).", show_default=False)
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.", show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.", show_default=False)] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Model input size in pixels (default: the dataset's).", show_default=False)
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="Train on CUDA (bf16 autocast, channels-last); exit 2 if there is none.")
    ] = False,
    pretrained: Annotated[
        bool | None, typer.Option("--pretrained", help="Start from timm's pretrained weights (needs network).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Bundle directory (default runs/<data>-<model>-<timestamp>).", show_default=False),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (runs are deterministic on CPU).")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Finish an interrupted run (its --out DIR) from its last epoch checkpoint.", show_default=False
        ),
    ] = None,
    wandb: Annotated[
        bool | None, typer.Option("--wandb/--no-wandb", help="Log to Weights & Biases.", show_default=False)
    ] = None,
    wandb_mode: Annotated[
        str | None, typer.Option(help="online (needs an API key) or offline (no network).", show_default=False)
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config key: --set optim.label_smoothing=0.05 (repeatable)."),
    ] = None,
    compile_: Annotated[
        bool | None,
        typer.Option(
            "--compile/--no-compile",
            help="torch.compile the model (default: the config's).",
            show_default=False,
        ),
    ] = None,
    sync_bn: Annotated[
        bool | None, typer.Option("--sync-bn", help="SyncBatchNorm across processes (CUDA).", show_default=False)
    ] = None,
    nproc_per_node: Annotated[
        int | None,
        typer.Option(
            help="Relaunch as this many worker processes under torch.distributed.run (DDP; 1 per GPU).",
            show_default=False,
            rich_help_panel=_DIST,
        ),
    ] = None,
    nnodes: Annotated[
        int | None, typer.Option(help="Machines in the job (default 1).", show_default=False, rich_help_panel=_DIST)
    ] = None,
    node_rank: Annotated[
        int | None,
        typer.Option(
            help="This machine's index (0, the default, is the one at --rdzv-endpoint).",
            show_default=False,
            rich_help_panel=_DIST,
        ),
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of machine 0, the same on every machine.", show_default=False, rich_help_panel=_DIST
        ),
    ] = None,
    max_restarts: Annotated[
        int | None,
        typer.Option(
            help="Restart the worker group this often after a failure (it resumes from the last checkpoint; "
            "default 0).",
            show_default=False,
            rich_help_panel=_DIST,
        ),
    ] = None,
    print_launch: Annotated[
        str | None,
        typer.Option(
            help="Print a launch spec for this run and exit: vertex (Vertex AI custom job) or k8s (PyTorchJob).",
            show_default=False,
            rich_help_panel=_DIST,
        ),
    ] = None,
) -> None:
    """Train a classifier and write a verified model bundle (weights, metrics, plots, config, samples)."""
    # OpenMP threads that wait passively instead of spinning: as fast on an idle machine, and several times faster
    # when other processes compete for the cores (see docs/benchmarks.md). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from imgcls.cli._train_progress import Progress
    from imgcls.config import RunConfig, load_config
    from imgcls.errors import UsageError
    from imgcls.train import fit
    from imgcls.train.launch import Launch
    from imgcls.train.wandb_logger import check_wandb

    # option as typed -> (config key, value); None: not given
    options: dict[str, tuple[str, Any]] = {
        "--data": ("data.name", data),
        "--data-dir": ("data.dir", str(data_dir) if data_dir else None),
        "--model": ("model.arch", model),
        "--pretrained": ("model.pretrained", pretrained),
        "--epochs": ("train.epochs", epochs),
        "--batch-size": ("train.batch_size", batch_size),
        "--lr": ("optim.lr", lr),
        "--img-size": ("data.img_size", img_size),
        "--gpu": ("train.device", "cuda" if gpu else None),
        "--out": ("out", str(out) if out else None),
        "--seed": ("train.seed", seed),
        "--no-wandb" if wandb is False else "--wandb": ("wandb.enabled", wandb),
        "--wandb-mode": ("wandb.mode", wandb_mode),
        "--no-compile" if compile_ is False else "--compile": ("train.compile", compile_),
        "--sync-bn": ("distributed.sync_bn", sync_bn),
    }
    flags = dict(options.values())
    if wandb_mode is not None and wandb_mode not in ("online", "offline"):
        raise UsageError(f"--wandb-mode must be online or offline, not {wandb_mode!r}")
    if resume is not None and print_launch is not None:
        raise UsageError(
            "--print-launch writes the spec of a new run; a run on the cluster resumes by itself",
            hint="drop --resume: the spec's --max-restarts restarts failed workers from the run's last checkpoint",
        )
    if resume is not None:
        from imgcls.train.checkpoint import saved_config

        given = [option for option, (_, value) in options.items() if value is not None]
        if config is not None:
            given.append("--config")
        if set_:
            given.append("--set")
        if given:
            raise UsageError(
                f"--resume continues a run with its saved configuration; drop {', '.join(sorted(given))}",
                hint=f"run `imgcls train --resume {resume}` alone",
            )
        cfg = RunConfig.model_validate(saved_config(resume))
    else:
        cfg = load_config(config, set_ or [], flags)
    check_wandb(cfg.wandb, os.environ, Path.home())
    if print_launch is not None:
        from imgcls.train.launch_spec import launch_spec

        launch_nodes = Launch(_or(nproc_per_node, 1), _or(nnodes, 1), rdzv_endpoint=rdzv_endpoint or "<HOST>:29500")
        typer.echo(launch_spec(print_launch, cfg, config, launch_nodes), nl=False)
        return
    if resume is None and cfg.out:
        from imgcls.fsio import check_output

        check_output(Path(str(cfg.out)), "--out", folder=True)  # as given: gs://b/x is not a folder named gs:
    started = time.perf_counter()
    from imgcls.train.distributed import DistEnv

    dist = DistEnv.from_environ(os.environ)  # set by torchrun / our own launcher / a PyTorchJob
    if dist.enabled and not dist.is_primary and not _render.STATE.verbose:
        # rank 0 warns for the job (every rank loads the same data, so it would say the same N times); errors,
        # which may be a rank's own, still come from every rank
        logging.getLogger().setLevel(logging.ERROR)
    # Any launch flag launches (torchrun's defaults for the others: one worker on one node, no restart); before,
    # `--nnodes 2 --rdzv-endpoint H:P` without --nproc-per-node trained alone and never met the other node.
    if any(flag is not None for flag in (nproc_per_node, nnodes, node_rank, rdzv_endpoint, max_restarts)):
        if dist.enabled:  # each of the launcher's workers would start a job of its own, all in one run directory
            raise UsageError(
                f"this process is already worker {dist.rank} of {dist.world_size} (RANK / WORLD_SIZE are set by a "
                "launcher): it cannot launch workers of its own",
                hint="drop --nproc-per-node, --nnodes, --node-rank, --rdzv-endpoint and --max-restarts here: the "
                "launcher that started this process decides them",
            )
        launch = Launch(
            _or(nproc_per_node, 1), _or(nnodes, 1), _or(node_rank, 0), rdzv_endpoint, _or(max_restarts, 0),
            join_timeout_s=cfg.distributed.join_timeout_s,
        )  # fmt: skip
        _launch(launch, cfg, resume, started=started)
        return

    progress = Progress()
    if not dist.enabled:  # a worker's SIGTERM comes from its launcher, which reports the job's end itself
        signal.signal(signal.SIGTERM, _terminated)
    try:
        result = fit(None if resume else cfg, callbacks=[progress], resume=resume, dist=dist)
    except KeyboardInterrupt as exc:
        from imgcls.errors import ImgclsError
        from imgcls.train.checkpoint import has_checkpoint

        what, code = ("stopped by SIGTERM", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        run_dir = progress.run_dir
        if run_dir is not None and has_checkpoint(run_dir):
            raise ImgclsError(what, hint=f"continue with `imgcls train --resume {run_dir}`", exit_code=code) from None
        raise ImgclsError(f"{what} before the first checkpoint", exit_code=code) from None
    finally:
        progress.stop()
    if dist.is_primary:
        _summary(result, time.perf_counter() - started)
    if dist.enabled:
        # The run is done, its bundle written and verified, the process group destroyed: end at once. The
        # interpreter's teardown destroys the backend's native threads in no set order, and one can abort the
        # process ("terminate called without an active exception", SIGABRT: seen once, in a worker of a finished
        # elastic-restart test run), which the launcher reports as a failed job.
        _render.exit_now(0)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a pod evicted, a job cancelled): handled as Ctrl-C is, between two steps; exit 143."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated


def _or(given: int | None, default: int) -> int:
    """``given`` unless the flag was not given (0 is a value, checked by :class:`Launch`, not a default)."""
    return default if given is None else given


def _launch(launch: Any, cfg: Any, resume: Path | None, *, started: float) -> None:
    """The launcher process: resolve the run directory once, run the workers, summarise the bundle."""
    import sys

    from imgcls.data.folder import check_output_outside
    from imgcls.train.launch import count, preflight, run_workers, worker_args
    from imgcls.train.rundir import check_new_run_dir, default_run_dir

    preflight(launch, cfg, resume)

    if resume is not None:
        run_dir = resume.resolve()
    else:
        run_dir = Path(cfg.out or default_run_dir(cfg)).resolve()
        if launch.node_rank == 0:
            check_new_run_dir(run_dir)
            check_output_outside(run_dir, cfg.data.name, "the run directory")
    args = worker_args(sys.argv[1:], None if resume is not None else run_dir)
    # Rank 0 prints the run directory after its header, on node 0; another node's launcher is all its user sees.
    where = "" if launch.node_rank == 0 else f"; rank 0, on node 0, reports progress; run directory {run_dir}"
    console.print(
        f"launching {count(launch.world_size, 'worker')} ({launch.nproc_per_node} per node × "
        f"{count(launch.nnodes, 'node')}) under torch.distributed.run{where}",
        highlight=False,
        soft_wrap=True,
    )
    run_workers(launch, args, run_dir=run_dir)  # rank 0 printed the summary


def _summary(result: Any, wall: float) -> None:
    m = result.metrics
    split = m.get("eval_split", "test")
    from imgcls.cli._train_progress import clock

    console.print(styled("[bold green]bundle[/] {}", result.bundle_dir), highlight=False)
    console.print(
        styled(
            "{} top-1 [bold]{:.4f}[/]  top-5 {:.4f}  (val top-1 {:.4f}, best epoch {}/{}{})  time {}",
            split,
            m[f"{split}_top1"],
            m[f"{split}_top5"],
            m["val_top1"],
            result.best_epoch,
            result.epochs_run,
            ", stopped early" if result.stopped_early else "",
            clock(wall),
        ),
        highlight=False,
    )
    if result.wandb_run_id:
        console.print(f"W&B run {result.wandb_run_id} (files under {result.bundle_dir / 'wandb'})", highlight=False)
